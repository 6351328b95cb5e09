import NIOHTTP1

/// Why a request does not become a session, as the HTTP response that says so.
public struct HTTPRejection: Error, Equatable, Sendable, CustomStringConvertible {
    /// What kind of refusal this is (for logs and, later, metrics).
    public enum Kind: String, Sendable {
        case notWebSocket = "not_websocket"
        case method
        case malformed
        case version
        case origin
        case missingToken = "missing_token"
        case unknownToken = "unknown_token"
        case timeout
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

    /// The full response head, body included, with `Connection: close`.
    public func responseHead(version: HTTPVersion = .http1_1) -> (HTTPResponseHead, String) {
        let body = self.reason + "\n"
        var headers = HTTPHeaders(self.headers)
        headers.add(name: "Content-Type", value: "text/plain; charset=utf-8")
        headers.add(name: "Content-Length", value: String(body.utf8.count))
        headers.add(name: "Connection", value: "close")
        return (HTTPResponseHead(version: version, status: self.status, headers: headers), body)
    }
}
