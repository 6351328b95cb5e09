import NIOHTTP1

/// Why a request does not become a session, as the HTTP response that says so.
public struct HTTPRejection: Error, Equatable, Sendable, CustomStringConvertible {
    /// What kind of refusal this is (for logs and, later, metrics).
    public enum Kind: String, Sendable, CaseIterable {
        case notWebSocket = "not_websocket"
        case method
        case malformed
        case version
        case origin
        /// The client's address is not in the target's `allow_clients`.
        case clientAddress = "client_address"
        case missingToken = "missing_token"
        case unknownToken = "unknown_token"
        /// A signed token that failed verification (signature, expiry, audience, issuer, claims).
        case invalidToken = "invalid_token"
        case timeout
        /// Over `--max-connections`, per-client or per-target session limits.
        case limit
        /// Over the per-client handshake rate.
        case rate
        /// No or wrong credentials (401).
        case auth
        /// A client certificate the target does not allow, or none (403).
        case clientCertificate = "client_certificate"
        /// A plain connection on a TLS-only listener.
        case tlsRequired = "tls_required"
        /// A connection without a valid PROXY protocol header under `--proxy-protocol`.
        case proxyProtocol = "proxy_protocol"
        /// The token service (Redis, …) could not answer.
        case tokenService = "token_service"
        /// A request head larger than `--max-request-head` (431).
        case headTooLarge = "head_too_large"
        /// An upgrade request with a body (`Content-Length` above 0, `Transfer-Encoding`).
        case requestBody = "request_body"
        /// Two `Host` headers, or two `Origin`, `Sec-WebSocket-Key` or `Sec-WebSocket-Version` in an upgrade.
        case duplicateHeader = "duplicate_header"
        /// Over `--max-handshakes` or `--max-handshakes-per-ip` (the connection is closed at once).
        case handshakeLimit = "handshake_limit"
        /// Too many password hashes wait already.
        case authBusy = "auth_busy"
    }

    public var kind: Kind
    public var status: HTTPResponseStatus
    /// One line for the body and the log.
    public var reason: String
    public var headers: [(String, String)]

    public init(_ kind: Kind, _ status: HTTPResponseStatus, _ reason: String, headers: [(String, String)] = []) {
        self.kind = kind
        self.status = status
        self.reason = reason
        self.headers = headers
    }

    public var description: String { "\(self.status.code) \(self.reason)" }

    public static func == (lhs: HTTPRejection, rhs: HTTPRejection) -> Bool {
        lhs.kind == rhs.kind && lhs.status == rhs.status && lhs.reason == rhs.reason
            && lhs.headers.map { "\($0.0): \($0.1)" } == rhs.headers.map { "\($0.0): \($0.1)" }
    }
}
