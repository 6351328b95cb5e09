import AsyncHTTPClient
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import ServiceLifecycle

/// websockify's `BaseTokenAPI` and `JSONTokenApi`: GET a URL with the token in place of `%s`; a 2xx body is
/// `host:port` (BaseTokenAPI) or JSON `{"host": ..., "port": ...}` (JSONTokenApi; `{"host": "h:p"}` works too).
/// Unlike websockify, the token is percent-encoded (everything but RFC 3986's unreserved characters), each request
/// has a timeout (answers are cached only by a `CachingTokenResolver` in front, and by default every lookup asks, as
/// websockify does).
/// A 4xx answer (or a 2xx body that names no backend) is an unknown token; no answer, a timeout or a 5xx is
/// "unavailable" (503). Bodies above 64 KiB are refused as they arrive (`CappedBody`), never read whole first.
///
/// A `Service`: `run` waits for graceful shutdown, then shuts the HTTP client down.
public final class HTTPTokenResolver: TokenResolver, Service {
    public enum Format: Sendable { case text, json }

    public let urlTemplate: String
    public let format: Format
    private let timeout: TimeAmount
    private let client: HTTPClient
    private let logger: Logger

    public var name: String { "http" }

    /// - Parameter urlTemplate: a URL containing `%s` where the token goes.
    public init(
        urlTemplate: String,
        format: Format,
        timeout: TimeAmount = .seconds(2),
        group: EventLoopGroup,
        logger: Logger
    ) {
        self.urlTemplate = urlTemplate
        self.format = format
        self.timeout = timeout
        self.logger = logger
        var configuration = HTTPClient.Configuration(
            timeout: .init(connect: timeout, read: timeout),
            decompression: .disabled
        )
        configuration.redirectConfiguration = .disallow
        self.client = HTTPClient(eventLoopGroupProvider: .shared(group), configuration: configuration)
    }

    /// The URL for `token`: the template with `%s` replaced by the percent-encoded token.
    public static func url(template: String, token: String) -> String {
        template.replacingOccurrences(of: "%s", with: Self.percentEncode(token))
    }

    static func percentEncode(_ text: String) -> String {
        var out = ""
        for byte in text.utf8 {
            switch byte {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"),
                UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "_"),
                UInt8(ascii: "~"):
                out.unicodeScalars.append(Unicode.Scalar(byte))
            default:
                out += "%" + String(byte, radix: 16, uppercase: true).leftPadded(to: 2)
            }
        }
        return out
    }

    /// The backend a 2xx body names, or nil.
    static func backend(fromBody bytes: [UInt8], format: Format) -> BackendAddress? {
        let text = String(decoding: bytes, as: UTF8.self).trimmingWhitespace()
        switch format {
        case .json: return text.hasPrefix("{") ? RedisTokenSource.backend(fromValue: bytes) : nil
        case .text: return text.hasPrefix("{") ? nil : RedisTokenSource.backend(fromValue: bytes)
        }
    }

    public func resolve(_ token: String, on eventLoop: EventLoop) -> EventLoopFuture<TokenResolution> {
        let request: HTTPClient.Request
        do {
            request = try HTTPClient.Request(url: Self.url(template: self.urlTemplate, token: token), method: .GET)
        } catch {
            return eventLoop.makeSucceededFuture(.invalid("invalid token: cannot be put in the API's URL"))
        }
        let logger = self.logger
        let format = self.format
        return self.client.execute(
            request: request,
            delegate: CappedBody(limit: Self.bodyLimit),
            eventLoop: .delegate(on: eventLoop),
            deadline: .now() + self.timeout,
            logger: nil
        )
        .futureResult
        .hop(to: eventLoop)
        .flatMapThrowing { response -> TokenResolution in
            let status = response.status.code
            if status >= 500 { throw HTTPAPIError(message: "token API answered \(status)") }
            guard (200..<300).contains(status) else { return .notFound }
            let bytes = response.body
            guard let backend = Self.backend(fromBody: bytes, format: format) else {
                logger.warning("token API answer for \(Target.redact(token)) names no backend")
                return .notFound
            }
            return .found(RedisTokenResolver.target(token, backend, source: "token-api"))
        }
        .recover { error in
            logger.debug("token API lookup failed: \(TokenRedaction.scrub("\(error)", token: token))")
            return .unavailable("token service unavailable: token API unreachable")
        }
    }

    struct HTTPAPIError: Error { var message: String }

    /// The largest answer body read; a larger one fails the lookup (503) as soon as it is announced or exceeded.
    static let bodyLimit = 64 << 10

    /// Reads the answer's body up to `limit` bytes and fails the request beyond (a `Content-Length` above it, or
    /// more bytes than that arriving): AsyncHTTPClient's own accumulator would take up to 4 GiB before the check.
    final class CappedBody: HTTPClientResponseDelegate {
        struct Response: Sendable {
            var status: HTTPResponseStatus
            var body: [UInt8]
        }

        let limit: Int
        private let state = NIOLockedValueBox(Response(status: .ok, body: []))

        init(limit: Int) { self.limit = limit }

        func didReceiveHead(task: HTTPClient.Task<Response>, _ head: HTTPResponseHead) -> EventLoopFuture<Void> {
            self.state.withLockedValue { $0.status = head.status }
            if let length = head.headers.first(name: "content-length").flatMap(Int.init), length > self.limit {
                return task.eventLoop.makeFailedFuture(
                    HTTPAPIError(message: "token API answer of \(length) bytes is too large")
                )
            }
            return task.eventLoop.makeSucceededVoidFuture()
        }

        func didReceiveBodyPart(task: HTTPClient.Task<Response>, _ buffer: ByteBuffer) -> EventLoopFuture<Void> {
            let fits = self.state.withLockedValue { state -> Bool in
                guard buffer.readableBytes <= self.limit - state.body.count else { return false }
                state.body += buffer.readableBytesView
                return true
            }
            guard fits else {
                return task.eventLoop.makeFailedFuture(
                    HTTPAPIError(message: "token API answer larger than \(self.limit) bytes")
                )
            }
            return task.eventLoop.makeSucceededVoidFuture()
        }

        func didFinishRequest(task: HTTPClient.Task<Response>) throws -> Response {
            self.state.withLockedValue { $0 }
        }
    }

    public func run() async throws {
        try? await gracefulShutdown()
        try await self.client.shutdown()
    }
}

extension String {
    fileprivate func leftPadded(to width: Int) -> String {
        String(repeating: "0", count: max(0, width - self.count)) + self
    }
}
