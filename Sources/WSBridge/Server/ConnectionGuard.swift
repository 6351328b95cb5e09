import NIOCore

/// The first handler of every accepted connection until it becomes a session: closes connections whose request
/// head does not arrive within the handshake timeout (answering `408`), and closes not-yet-upgraded connections
/// on shutdown.
final class ConnectionGuard: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let timeout: TimeAmount
    private let onTimeout: () -> Void
    private var timer: Scheduled<Void>?
    private var headReceived = false

    init(timeout: TimeAmount, onTimeout: @escaping () -> Void = {}) {
        self.timeout = timeout
        self.onTimeout = onTimeout
    }

    func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive { self.start(context: context) }
    }

    func channelActive(context: ChannelHandlerContext) {
        self.start(context: context)
        context.fireChannelActive()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.timer?.cancel()
        self.timer = nil
    }

    /// The request head is complete: the handshake timeout no longer applies.
    func requestHeadReceived() {
        self.headReceived = true
        self.timer?.cancel()
        self.timer = nil
    }

    private func start(context: ChannelHandlerContext) {
        guard self.timer == nil, !self.headReceived else { return }
        self.timer = context.eventLoop.scheduleTask(in: self.timeout) { [weak self] in
            guard let self, !self.headReceived else { return }
            self.onTimeout()
            let body = "handshake timeout\n"
            let response =
                "HTTP/1.1 408 Request Timeout\r\nContent-Type: text/plain; charset=utf-8\r\n"
                + "Content-Length: \(body.utf8.count)\r\nConnection: close\r\n\r\n\(body)"
            context.writeAndFlush(self.wrapOutboundOut(context.channel.allocator.buffer(string: response)))
                .whenComplete { _ in context.close(promise: nil) }
        }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is BridgeShutdownEvent {
            context.close(promise: nil)
        } else {
            context.fireUserInboundEventTriggered(event)
        }
    }
}
