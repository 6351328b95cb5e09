import NIOCore
import NIOHTTP1
import NIOWebSocket

/// Answers every request that does not become a WebSocket session: refused upgrades with the status the admission
/// policy chose, plain HTTP requests, and malformed requests (400, or 431 for an oversized head). Always closes the
/// connection after the response.
final class HTTPFallbackHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let connection: ConnectionState
    private let endpoints: HTTPEndpoints
    private let metrics: BridgeMetrics
    private let decide: (HTTPRequestHead) -> UpgradePolicy.Decision
    private var responded = false

    init(
        connection: ConnectionState,
        endpoints: HTTPEndpoints,
        metrics: BridgeMetrics,
        decide: @escaping (HTTPRequestHead) -> UpgradePolicy.Decision
    ) {
        self.connection = connection
        self.endpoints = endpoints
        self.metrics = metrics
        self.decide = decide
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard case .head(let head) = self.unwrapInboundIn(data), !self.responded else { return }
        self.connection.guardHandler.requestHeadReceived()
        if head.headers["upgrade"].isEmpty, let answer = self.endpoints.answer(head, on: context.eventLoop) {
            self.responded = true
            answer.whenSuccess { answer in
                answer.write(to: context, method: head.method, wrap: self.wrapOutboundOut)
            }
            return
        }
        let rejection: HTTPRejection
        if let known = self.connection.rejection {
            rejection = known
        } else {
            switch self.decide(head) {
            case .reject(let decided):
                rejection = decided
            case .accept:
                // The policy accepts, yet NIO's upgrader refused (it checks a few headers itself first).
                rejection = HTTPRejection(.malformed, .badRequest, "invalid WebSocket upgrade request")
            }
        }
        self.connection.logger.debug(
            "request refused",
            metadata: ["status": "\(rejection.status.code)", "reason": "\(rejection.reason)", "uri": "\(TokenRedaction.uri(head.uri, sources: self.endpoints.tokenSources))"]
        )
        self.respond(context: context, rejection: rejection, includeBody: head.method != .HEAD)
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        if error is NIOWebSocketUpgradeError { return }  // answered when the request head arrives here
        if let parserError = error as? HTTPParserError {
            self.connection.guardHandler.requestHeadReceived()
            let rejection: HTTPRejection
            switch parserError {
            case .headerOverflow:
                rejection = HTTPRejection(.malformed, .init(statusCode: 431), "request header fields too large")
            default:
                rejection = HTTPRejection(.malformed, .badRequest, "malformed HTTP request")
            }
            self.respond(context: context, rejection: rejection, includeBody: true)
            return
        }
        context.close(promise: nil)
    }

    private func respond(context: ChannelHandlerContext, rejection: HTTPRejection, includeBody: Bool) {
        guard !self.responded else { return }
        self.responded = true
        self.metrics.rejected(rejection.kind)
        HTTPAnswer(rejection).write(to: context, method: includeBody ? .GET : .HEAD, wrap: self.wrapOutboundOut)
    }

    /// The request path without its query, which may hold a token.
    static func redactedPath(_ uri: String) -> String {
        guard let question = uri.firstIndex(of: "?") else { return uri }
        return String(uri[..<question]) + "?…"
    }
}
