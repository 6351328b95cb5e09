import Foundation

/// The one place tokens are made fit for log lines, metric labels and `wsbridge check`'s output, whichever part
/// of the request (query, `--token-path` segment, cookie, subprotocol, Bearer, Host) or of the configuration (a
/// token that is a file or socket name) they came from.
///
/// Only a short prefix of a token ever leaves the process (`Target.redact`: at most a quarter of it, at most four
/// characters, then `…`).
public enum TokenRedaction {
    /// A token as it may be logged.
    public static func token(_ token: String) -> String {
        Target.redact(token)
    }

    /// A request target as it may be logged: the query (which may hold `token=`) replaced by `?…`, and the path
    /// segment that `--token-path` takes the token from redacted.
    public static func uri(_ uri: String, sources: UpgradePolicy.TokenSources = .init()) -> String {
        let end = uri.firstIndex { $0 == "?" || $0 == "#" } ?? uri.endIndex
        var path = String(uri[..<end])
        let rest = uri[end...]
        if let template = sources.pathTemplate, !sources.hostToken {
            var parts = path.split(separator: "/", omittingEmptySubsequences: false).map(String.init)
            let pattern = template.split(separator: "/", omittingEmptySubsequences: false)
            if parts.count == pattern.count {
                for (index, expected) in pattern.enumerated() where expected == "{token}" && !parts[index].isEmpty {
                    parts[index] = Self.token(parts[index])
                }
                path = parts.joined(separator: "/")
            }
        }
        if rest.isEmpty { return path }
        return path + (rest.first == "?" ? "?…" : "#…")
    }

    /// `text` (an error message, say) with every occurrence of `token` redacted.
    public static func scrub(_ text: String, token: String) -> String {
        guard !token.isEmpty else { return text }
        return text.replacingOccurrences(of: token, with: Self.token(token))
    }

    /// How a target's backend may be logged: a Unix socket whose file name is the token (websockify's
    /// `UnixDomainSocketDirectory`) with that name redacted.
    public static func backend(_ target: Target) -> String {
        guard case .unix(let path) = target.backend, let slash = path.lastIndex(of: "/") else {
            return "\(target.backend)"
        }
        let name = String(path[path.index(after: slash)...])
        guard !name.isEmpty, Self.token(name) == target.name else { return "\(target.backend)" }
        return "unix:" + path[...slash] + Self.token(name)
    }

    /// Where a target was defined, as it may be printed: a file named by its token (`TokenFileName`, a socket of
    /// `UnixDomainSocketDirectory`) with that name redacted.
    public static func location(_ target: Target) -> String? {
        guard let definedAt = target.definedAt, let slash = definedAt.lastIndex(of: "/") else {
            return target.definedAt
        }
        var name = String(definedAt[definedAt.index(after: slash)...])
        var suffix = ""
        if let colon = name.lastIndex(of: ":"), name[name.index(after: colon)...].allSatisfy(\.isNumber),
            name.index(after: colon) != name.endIndex
        {
            suffix = String(name[colon...])
            name = String(name[..<colon])
        }
        guard !name.isEmpty, Self.token(name) == target.name else { return definedAt }
        return definedAt[...slash] + Self.token(name) + suffix
    }
}
