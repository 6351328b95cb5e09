import NIOHTTP1

/// The admission decision for one upgrade request: a pure function of the request head and a targets snapshot.
///
/// No I/O happens here, so it runs inside `shouldUpgrade` on the event loop and is tested without sockets.
public struct UpgradePolicy: Sendable {
    /// Refuse requests that carry no `Origin` header.
    public var requireOrigin: Bool
    /// Where tokens are looked for.
    public var tokenSources: TokenSources
    /// Client certificate names allowed for targets without their own `client_cert_names` (websockify's
    /// `ClientCertCNAuth`); nil allows every client.
    public var clientCertNames: [String]?

    public init(requireOrigin: Bool = false, tokenSources: TokenSources = .init(), clientCertNames: [String]? = nil) {
        self.requireOrigin = requireOrigin
        self.tokenSources = tokenSources
        self.clientCertNames = clientCertNames
    }

    /// Where a request may carry its token, and in which order they are tried.
    ///
    /// Without `hostToken`: the `token` query parameter, the `pathTemplate` segment, `Authorization: Bearer`, a
    /// `Sec-WebSocket-Protocol` entry `token.VALUE`, then a `token` cookie; the first present wins. With
    /// `hostToken` (websockify's `--host-token`): only the `Host` header, without its port.
    public struct TokenSources: Sendable, Equatable {
        /// A path with one `{token}` segment, such as `/t/{token}`; nil disables path tokens.
        public var pathTemplate: String?
        public var hostToken: Bool

        /// The prefix of a subprotocol entry that carries a token.
        public static let subprotocolPrefix = "token."

        public init(pathTemplate: String? = nil, hostToken: Bool = false) {
            self.pathTemplate = pathTemplate
            self.hostToken = hostToken
        }
    }

    /// An accepted request: where it goes and what the 101 says.
    public struct Admission: Sendable, Equatable {
        public var target: Target
        /// The subprotocol to select in the 101 (`binary` when offered), or nil.
        public var subprotocol: String?
        /// The token that picked the target (nil in single-target mode).
        public var token: String?
        /// A token service named the target (`HandshakeAdmission`): reloads of the targets files do not revoke it.
        public var resolvedByService = false
    }

    public enum Decision: Sendable, Equatable {
        case accept(Admission)
        case reject(HTTPRejection)
    }

    /// What the connection proved about the client before the request was decided.
    public struct ClientIdentity: Sendable, Equatable {
        /// The outcome of Basic authentication; nil when no authentication is configured.
        public var authentication: BasicAuthenticator.Result?
        /// The names (common name, subject alternative names) of a verified client certificate; nil without one.
        public var certificateNames: [String]?

        public init(authentication: BasicAuthenticator.Result? = nil, certificateNames: [String]? = nil) {
            self.authentication = authentication
            self.certificateNames = certificateNames
        }
    }

    /// The 401 for missing or wrong credentials.
    /// Too many password hashes wait already (`BasicAuthenticator.maxPendingHashes`): 503, try again in a second.
    public static let authenticationBusy = HTTPRejection(
        .authBusy,
        .serviceUnavailable,
        "too many logins at once, try again",
        headers: [("Retry-After", "1")]
    )

    public static func unauthorized(_ reason: String) -> HTTPRejection {
        HTTPRejection(
            .auth,
            .unauthorized,
            reason,
            headers: [("WWW-Authenticate", "Basic realm=\"\(BasicAuthenticator.realm)\", charset=\"UTF-8\"")]
        )
    }

    /// Whether the certificate names include one the target allows (names compare case-insensitively).
    public static func allows(_ allowed: [String], names: [String]?) -> Bool {
        guard let names else { return false }
        let lowered = Set(names.map { $0.lowercased() })
        return allowed.contains { lowered.contains($0.lowercased()) }
    }

    /// - Parameters:
    ///   - client: the client's IP address, for targets with `allow_clients`.
    ///   - identity: what TLS and authentication proved about the client.
    public func decide(
        _ head: HTTPRequestHead,
        targets: TargetTable,
        client: String? = nil,
        identity: ClientIdentity = .init()
    ) -> Decision {
        if let refusal = Self.strictHeadCheck(head) ?? Self.validate(head) { return .reject(refusal) }
        return self.decide(checked: head, targets: targets, client: client, identity: identity)
    }

    /// `decide` for a head that passed `strictHeadCheck` and `validate` already: the handshake owner checks the form
    /// before the per-client rate and admission, and admission may decide one head up to three times (the table, the
    /// re-read files, the token service's target), so the checks (about a twentieth of a handshake's CPU) run once.
    func decide(
        checked head: HTTPRequestHead,
        targets: TargetTable,
        client: String?,
        identity: ClientIdentity
    ) -> Decision {
        let headers = head.headers

        let origin = headers.first(name: "origin")
        if origin == nil && self.requireOrigin {
            return .reject(.init(.origin, .forbidden, "Origin header required"))
        }

        switch identity.authentication {
        case .missing?: return .reject(Self.unauthorized("authentication required"))
        case .invalid?: return .reject(Self.unauthorized("invalid credentials"))
        case .busy?: return .reject(Self.authenticationBusy)
        case .authenticated?, nil: break
        }

        let target: Target
        var usedToken: String?
        switch targets.mode {
        case .single(let only):
            target = only
        case .tokens(let map):
            let token = self.token(in: head)
            usedToken = token
            guard let token, let found = map[token] else {
                // The global list still applies, so that unknown origins learn nothing about tokens.
                if let origin, let global = targets.origins, !global.allows(origin) {
                    return .reject(.init(.origin, .forbidden, "origin not allowed"))
                }
                if token == nil {
                    return .reject(.init(.missingToken, .badRequest, self.tokenSources.missingTokenHint))
                }
                return .reject(.init(.unknownToken, .notFound, "unknown token"))
            }
            target = found
        }
        if let origin, let allowed = target.origins ?? targets.origins, !allowed.allows(origin) {
            return .reject(.init(.origin, .forbidden, "origin not allowed"))
        }
        if let allowed = target.clientCertNames ?? self.clientCertNames,
            !Self.allows(allowed, names: identity.certificateNames)
        {
            let reason =
                identity.certificateNames == nil
                ? "client certificate required" : "client certificate not allowed for this target"
            return .reject(.init(.clientCertificate, .forbidden, reason))
        }

        if let networks = target.allowClients, !networks.contains(where: { $0.contains(client ?? "") }) {
            return .reject(.init(.clientAddress, .forbidden, "client address not allowed for this target"))
        }

        let offered = headers[canonicalForm: "sec-websocket-protocol"].map { $0.trimmingWhitespace() }
        var subprotocol: String?
        if offered.contains("binary") {
            subprotocol = "binary"
        } else if let tokenEntry = offered.first(where: { $0.hasPrefix(TokenSources.subprotocolPrefix) }) {
            // A browser that offered only its token entry fails the connection unless one offer is selected;
            // echoing the entry tells it nothing it did not send.
            subprotocol = tokenEntry
        }
        return .accept(Admission(target: target, subprotocol: subprotocol, token: usedToken))
    }

    /// Whether `head` is a well-formed WebSocket upgrade request (RFC 6455 §4.2.1), before anything about the
    /// client or the target is asked: nil when it is, else the refusal (400, 404, 405, 426).
    /// The answer to a request without `Upgrade` that no HTTP endpoint serves: 404 for GET and HEAD, else 405.
    public static func refusal(ofPlain head: HTTPRequestHead) -> HTTPRejection {
        if head.method == .GET || head.method == .HEAD {
            return HTTPRejection(.notWebSocket, .notFound, "not found: this is a WebSocket endpoint")
        }
        return HTTPRejection(.method, .methodNotAllowed, "method not allowed", headers: [("Allow", "GET")])
    }

    public static func validate(_ head: HTTPRequestHead) -> HTTPRejection? {
        let headers = head.headers
        let upgrade = headers["upgrade"]
        guard !upgrade.isEmpty else { return Self.refusal(ofPlain: head) }
        guard head.method == .GET else {
            return HTTPRejection(
                .method,
                .methodNotAllowed,
                "WebSocket upgrade requires GET",
                headers: [("Allow", "GET")]
            )
        }
        guard head.version.major == 1, head.version.minor >= 1 else {
            return HTTPRejection(.malformed, .badRequest, "WebSocket upgrade requires HTTP/1.1")
        }
        guard upgrade.count == 1, upgrade[0].trimmingWhitespace().lowercased() == "websocket" else {
            return HTTPRejection(.malformed, .badRequest, "Upgrade header must be 'websocket'")
        }
        let connectionTokens = headers[canonicalForm: "connection"].map { $0.lowercased() }
        guard connectionTokens.contains("upgrade") else {
            return HTTPRejection(.malformed, .badRequest, "Connection header must contain 'upgrade'")
        }
        guard let host = headers.first(name: "host"), !host.trimmingWhitespace().isEmpty else {
            return HTTPRejection(.malformed, .badRequest, "missing Host header")
        }
        let keys = headers["sec-websocket-key"]
        guard keys.count == 1, Self.isValidKey(keys[0].trimmingWhitespace()) else {
            return HTTPRejection(.malformed, .badRequest, "Sec-WebSocket-Key must be base64 of 16 bytes")
        }
        let versions = headers["sec-websocket-version"]
        guard versions.count == 1, versions[0].trimmingWhitespace() == "13" else {
            return HTTPRejection(
                .version,
                .upgradeRequired,
                "unsupported WebSocket version: use 13",
                headers: [("Sec-WebSocket-Version", "13")]
            )
        }

        return nil
    }

    /// The request-head rules that hold before any other (RFC 9112 §3.2, RFC 6455 §4.1): two `Host` headers are
    /// refused for every request; an upgrade request must carry no body (`Content-Length` above 0 or any
    /// `Transfer-Encoding`) and at most one `Origin`, `Sec-WebSocket-Key` and `Sec-WebSocket-Version`. Nil when the
    /// head passes.
    public static func strictHeadCheck(_ head: HTTPRequestHead) -> HTTPRejection? {
        let headers = head.headers
        if headers["host"].count > 1 {
            return HTTPRejection(.duplicateHeader, .badRequest, "duplicate Host header")
        }
        guard !headers["upgrade"].isEmpty else { return nil }
        if !headers["transfer-encoding"].isEmpty {
            return HTTPRejection(.requestBody, .badRequest, "an upgrade request has no body (Transfer-Encoding)")
        }
        let lengths = headers["content-length"]
        if lengths.count > 1 || lengths.contains(where: { $0.trimmingWhitespace() != "0" }) {
            return HTTPRejection(.requestBody, .badRequest, "an upgrade request has no body (Content-Length)")
        }
        for name in ["Origin", "Sec-WebSocket-Key", "Sec-WebSocket-Version"] where headers[name].count > 1 {
            return HTTPRejection(.duplicateHeader, .badRequest, "duplicate \(name) header")
        }
        return nil
    }

    /// The origin rule alone (for static files under `--web-auth`): refuses a disallowed `Origin`, or a missing one
    /// when origins are required.
    public func checkOrigin(_ head: HTTPRequestHead, allowed: OriginAllowList?) -> HTTPRejection? {
        guard let origin = head.headers.first(name: "origin") else {
            return self.requireOrigin ? HTTPRejection(.origin, .forbidden, "Origin header required") : nil
        }
        if let allowed, !allowed.allows(origin) { return HTTPRejection(.origin, .forbidden, "origin not allowed") }
        return nil
    }

    /// The token of a request, from the first source that has one (see `TokenSources`).
    public func token(in head: HTTPRequestHead) -> String? {
        if self.tokenSources.hostToken {
            guard let host = head.headers.first(name: "host")?.trimmingWhitespace(), !host.isEmpty else { return nil }
            if host.hasPrefix("["), let close = host.firstIndex(of: "]") {
                return String(host[host.index(after: host.startIndex)..<close])
            }
            return String(host.split(separator: ":", maxSplits: 1).first ?? "")
        }
        if let token = Self.queryToken(head) { return token }
        if let template = self.tokenSources.pathTemplate, let token = Self.pathToken(head.uri, template: template) {
            return token
        }
        for authorization in head.headers["authorization"] {
            let parts = authorization.trimmingWhitespace().split(separator: " ", maxSplits: 1)
            if parts.count == 2, parts[0].lowercased() == "bearer" {
                let token = parts[1].trimmingWhitespace()
                if !token.isEmpty { return token }
            }
        }
        for entry in head.headers[canonicalForm: "sec-websocket-protocol"] {
            let entry = entry.trimmingWhitespace()
            if entry.hasPrefix(TokenSources.subprotocolPrefix), entry.count > TokenSources.subprotocolPrefix.count {
                return String(entry.dropFirst(TokenSources.subprotocolPrefix.count))
            }
        }
        return Self.cookieToken(head)
    }

    /// The `{token}` segment of `uri`'s path when it matches `template` segment by segment.
    static func pathToken(_ uri: String, template: String) -> String? {
        let path = uri.prefix { $0 != "?" && $0 != "#" }
        let parts = path.split(separator: "/", omittingEmptySubsequences: false)
        let pattern = template.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == pattern.count else { return nil }
        var token: String?
        for (part, expected) in zip(parts, pattern) {
            if expected == "{token}" {
                guard let decoded = Self.percentDecode(String(part), plusIsSpace: false), !decoded.isEmpty else {
                    return nil
                }
                token = decoded
            } else if part != expected {
                return nil
            }
        }
        return token
    }

    static func queryToken(_ head: HTTPRequestHead) -> String? {
        if let query = head.uri.split(separator: "?", maxSplits: 1).dropFirst().first {
            for pair in query.split(separator: "&") {
                let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
                if Self.formDecode(parts[0]) == "token", parts.count == 2 {
                    let value = Self.formDecode(parts[1])
                    if let value, !value.isEmpty { return value }
                }
            }
        }
        return nil
    }

    static func cookieToken(_ head: HTTPRequestHead) -> String? {
        for cookieHeader in head.headers["cookie"] {
            for cookie in cookieHeader.split(separator: ";") {
                let parts = cookie.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
                if parts.count == 2, parts[0].trimmingWhitespace() == "token" {
                    var value = parts[1].trimmingWhitespace()
                    if value.count >= 2, value.hasPrefix("\""), value.hasSuffix("\"") {
                        value = String(value.dropFirst().dropLast())
                    }
                    if let decoded = Self.percentDecode(value, plusIsSpace: false), !decoded.isEmpty { return decoded }
                }
            }
        }
        return nil
    }

    /// `application/x-www-form-urlencoded` decoding, as websockify's `parse_qs` does (`+` is a space).
    static func formDecode<S: StringProtocol>(_ text: S) -> String? {
        Self.percentDecode(String(text), plusIsSpace: true)
    }

    static func percentDecode(_ text: String, plusIsSpace: Bool) -> String? {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(text.utf8.count)
        var iterator = text.utf8.makeIterator()
        while let byte = iterator.next() {
            switch byte {
            case UInt8(ascii: "%"):
                guard let high = iterator.next().flatMap(Self.hexValue),
                    let low = iterator.next().flatMap(Self.hexValue)
                else { return nil }
                bytes.append(high << 4 | low)
            case UInt8(ascii: "+") where plusIsSpace:
                bytes.append(UInt8(ascii: " "))
            default:
                bytes.append(byte)
            }
        }
        return String(validating: bytes, as: UTF8.self)
    }

    private static func hexValue(_ byte: UInt8) -> UInt8? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return byte - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return byte - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): return byte - UInt8(ascii: "A") + 10
        default: return nil
        }
    }

    /// A `Sec-WebSocket-Key` is the base64 encoding of 16 bytes: 22 base64 characters and `==`, with the last
    /// character carrying no stray bits.
    static func isValidKey(_ key: String) -> Bool {
        let bytes = Array(key.utf8)
        guard bytes.count == 24, bytes[22] == UInt8(ascii: "="), bytes[23] == UInt8(ascii: "=") else { return false }
        for byte in bytes[0..<22] {
            switch byte {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"),
                UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "+"), UInt8(ascii: "/"):
                continue
            default:
                return false
            }
        }
        // The 22nd character holds 2 payload bits and 4 padding bits, which must be zero: one of A, Q, g, w.
        return "AQgw".utf8.contains(bytes[21])
    }
}

extension UpgradePolicy.TokenSources {
    /// The body of the 400 for a request without a token: where this server looks for one.
    var missingTokenHint: String {
        if self.hostToken { return "missing token: the Host header names the target" }
        var places = ["?token=NAME"]
        if let template = self.pathTemplate { places.append("the path \(template)") }
        places += ["Authorization: Bearer", "a 'token.NAME' subprotocol", "a 'token' cookie"]
        return "missing token: pass " + places.joined(separator: ", ")
    }
}
