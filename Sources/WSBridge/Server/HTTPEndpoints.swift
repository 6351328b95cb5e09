import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL

/// A complete plain-HTTP answer.
struct HTTPAnswer: Sendable {
    var status: HTTPResponseStatus
    var headers: [(String, String)] = []
    var contentType = "text/plain; charset=utf-8"
    var body: ByteBuffer
    /// A file to send instead of `body`.
    var file: FileBody?
    /// The length announced when it is not the body's (HEAD of a file, or a file body).
    var contentLength: Int?

    init(_ status: HTTPResponseStatus, _ text: String, headers: [(String, String)] = []) {
        self.status = status
        self.headers = headers
        self.body = ByteBuffer(string: text + "\n")
    }

    init(_ rejection: HTTPRejection) {
        self.init(rejection.status, rejection.reason, headers: rejection.headers)
    }

    /// Writes the answer (no body for HEAD) and closes the connection; with `stallTimeout`, a client that stops
    /// reading it is closed after that long without progress (`StallWatch`). Without one the caller bounds the
    /// write itself (a refusal's total write deadline).
    func write(
        to context: ChannelHandlerContext,
        method: HTTPMethod,
        stallTimeout: TimeAmount?,
        wrap: @escaping (HTTPServerResponsePart) -> NIOAny
    ) {
        if let stallTimeout { StallWatch.start(on: context.channel, timeout: stallTimeout) }
        var headers = HTTPHeaders(self.headers)
        headers.add(name: "Content-Type", value: self.contentType)
        if self.status != .notModified {
            headers.add(name: "Content-Length", value: String(self.contentLength ?? self.body.readableBytes))
        }
        headers.add(name: "Connection", value: "close")
        context.write(
            wrap(.head(HTTPResponseHead(version: .http1_1, status: self.status, headers: headers))),
            promise: nil
        )
        if let file = self.file, method != .HEAD,
            (try? context.pipeline.syncOperations.handler(type: NIOSSLServerHandler.self)) != nil
        {
            // TLS cannot encrypt a FileRegion (sendfile): read the file in chunks and write each as a buffer, the
            // next read waiting for the previous write.
            file.fileIO.readChunked(
                fileRegion: file.region,
                chunkSize: 64 << 10,
                allocator: context.channel.allocator,
                eventLoop: context.eventLoop
            ) { chunk in
                context.writeAndFlush(wrap(.body(.byteBuffer(chunk))))
            }.whenComplete { result in
                try? file.handle.close()
                if case .failure = result {
                    context.close(promise: nil)
                    return
                }
                context.writeAndFlush(wrap(.end(nil))).whenComplete { _ in context.close(promise: nil) }
            }
            return
        }
        if let file = self.file {
            if method != .HEAD { context.write(wrap(.body(.fileRegion(file.region))), promise: nil) }
        } else if method != .HEAD && self.body.readableBytes > 0 {
            context.write(wrap(.body(.byteBuffer(self.body))), promise: nil)
        }
        let file = self.file
        context.writeAndFlush(wrap(.end(nil))).whenComplete { _ in
            try? file?.handle.close()
            context.close(promise: nil)
        }
    }
}

/// Plain HTTP served beside the WebSocket endpoint: `/healthz`, `/readyz`, and `/metrics` where enabled.
struct HTTPEndpoints: Sendable {
    var readiness: Readiness?
    /// Serve `/metrics` here.
    var metrics: BridgeMetrics?
    /// Serve files for every other GET/HEAD path.
    var staticFiles: StaticFiles?
    /// Access rules for static files (`--web-auth`): a refusal, or nil to serve.
    var staticFilesAccess: (@Sendable (HTTPRequestHead, EventLoop) -> EventLoopFuture<HTTPRejection?>)?
    /// Where tokens are taken from, so that logged request targets can be redacted (`TokenRedaction.uri`).
    var tokenSources = UpgradePolicy.TokenSources()

    /// The answer for `head`, or nil when no endpoint has this path.
    func answer(_ head: HTTPRequestHead, on eventLoop: EventLoop) -> EventLoopFuture<HTTPAnswer>? {
        guard head.method == .GET || head.method == .HEAD else { return nil }
        let path = head.uri.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false).first ?? ""
        switch path {
        case "/healthz":
            return eventLoop.makeSucceededFuture(HTTPAnswer(.ok, "ok"))
        case "/readyz":
            guard let readiness = self.readiness else { return nil }
            return readiness.check(on: eventLoop).map { result in
                switch result {
                case .success(let text): return HTTPAnswer(.ok, text)
                case .failure(let error): return HTTPAnswer(.serviceUnavailable, "not ready: \(error.reason)")
                }
            }
        case "/metrics":
            guard let metrics = self.metrics else { return nil }
            var answer = HTTPAnswer(.ok, "")
            answer.contentType = "text/plain; version=0.0.4; charset=utf-8"
            answer.body = ByteBuffer(bytes: metrics.render())
            return eventLoop.makeSucceededFuture(answer)
        default:
            guard let staticFiles = self.staticFiles else { return nil }
            guard let access = self.staticFilesAccess else { return staticFiles.answer(head, on: eventLoop) }
            return access(head, eventLoop).flatMap { refusal in
                if let refusal { return eventLoop.makeSucceededFuture(HTTPAnswer(refusal)) }
                return staticFiles.answer(head, on: eventLoop)
            }
        }
    }
}

/// Serves `HTTPEndpoints` on a listener of its own (the metrics port); everything else is 404.
///
/// Bounded like the main port: the request head must arrive within `headTimeout` of accept (else the socket is
/// closed), and the answer is written under a stall deadline.
final class EndpointsHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let endpoints: HTTPEndpoints
    private let headTimeout: TimeAmount
    private let stallTimeout: TimeAmount
    private var state = State.waitingForHead
    private var headDeadline: Scheduled<Void>?

    private enum State {
        case waitingForHead
        case answering
    }

    init(endpoints: HTTPEndpoints, headTimeout: TimeAmount, stallTimeout: TimeAmount) {
        self.endpoints = endpoints
        self.headTimeout = headTimeout
        self.stallTimeout = stallTimeout
    }

    func handlerAdded(context: ChannelHandlerContext) {
        let channel = context.channel
        self.headDeadline = context.eventLoop.scheduleTask(in: self.headTimeout) { channel.close(promise: nil) }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.headDeadline?.cancel()
        self.headDeadline = nil
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard case .head(let head) = self.unwrapInboundIn(data), self.state == .waitingForHead else { return }
        self.state = .answering
        self.headDeadline?.cancel()
        self.headDeadline = nil
        let answer =
            self.endpoints.answer(head, on: context.eventLoop)
            ?? context.eventLoop.makeSucceededFuture(HTTPAnswer(.notFound, "not found: /metrics, /healthz, /readyz"))
        let stallTimeout = self.stallTimeout
        answer.whenSuccess { answer in
            answer.write(to: context, method: head.method, stallTimeout: stallTimeout, wrap: self.wrapOutboundOut)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        context.close(promise: nil)
    }
}
