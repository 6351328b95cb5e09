/// Browser origins allowed to open sessions: exact origins and wildcard subdomains (`https://*.example.com`).
///
/// Matching is case-insensitive and ignores a default port (`:443` for https, `:80` for http). A wildcard matches
/// one or more subdomain labels but not the bare domain.
public struct OriginAllowList: Hashable, Sendable {
    private struct Pattern: Hashable, Sendable {
        var scheme: String
        var host: String  // without the "*." for wildcards
        var port: Int?
        var wildcard: Bool
    }

    private var patterns: [Pattern]
    public private(set) var entries: [String]

    public init(_ entries: [String]) throws {
        self.entries = entries
        self.patterns = try entries.map { entry in
            guard let parsed = Self.parse(entry) else { throw OriginError(entry: entry) }
            var host = parsed.host
            var wildcard = false
            if host.hasPrefix("*.") {
                wildcard = true
                host.removeFirst(2)
            }
            if host.contains("*" as Character) || host.isEmpty { throw OriginError(entry: entry) }
            return Pattern(scheme: parsed.scheme, host: host, port: parsed.port, wildcard: wildcard)
        }
    }

    public struct OriginError: Error, Equatable, Sendable, CustomStringConvertible {
        public var entry: String
        public var description: String {
            "invalid origin '\(entry)': expected scheme://host[:port], with an optional '*.' before the host"
        }
    }

    public var isEmpty: Bool { self.patterns.isEmpty }

    /// Whether a request's `Origin` header value is allowed.
    public func allows(_ origin: String) -> Bool {
        guard let candidate = Self.parse(origin) else { return false }
        for pattern in self.patterns where pattern.scheme == candidate.scheme && pattern.port == candidate.port {
            if pattern.wildcard {
                if candidate.host.hasSuffix("." + pattern.host) { return true }
            } else if candidate.host == pattern.host {
                return true
            }
        }
        return false
    }

    /// Splits `scheme://host[:port]` into lowercase parts with a default port dropped; nil when malformed.
    private static func parse(_ text: String) -> (scheme: String, host: String, port: Int?)? {
        let lower = text.trimmingWhitespace().lowercased()
        guard let range = lower.range(of: "://") else { return nil }
        let scheme = String(lower[..<range.lowerBound])
        var rest = String(lower[range.upperBound...])
        if rest.hasSuffix("/") { rest.removeLast() }
        guard !scheme.isEmpty, !rest.isEmpty, !rest.contains("/" as Character) else { return nil }
        var host = rest
        var port: Int?
        if rest.hasPrefix("[") {
            guard let close = rest.firstIndex(of: "]") else { return nil }
            host = String(rest[...close])
            let after = rest[rest.index(after: close)...]
            if !after.isEmpty {
                guard after.hasPrefix(":"), let p = Int(after.dropFirst()) else { return nil }
                port = p
            }
        } else if let colon = rest.lastIndex(of: ":") {
            host = String(rest[..<colon])
            guard let p = Int(rest[rest.index(after: colon)...]) else { return nil }
            port = p
        }
        if (scheme == "https" && port == 443) || (scheme == "http" && port == 80) { port = nil }
        return (scheme, host, port)
    }
}
