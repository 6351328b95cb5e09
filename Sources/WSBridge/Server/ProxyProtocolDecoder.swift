import NIOCore

/// Reads the PROXY protocol header (v1 or v2) that a load balancer sends before anything else (`--proxy-protocol`),
/// reports the address it carries (a `ProxyHeaderEvent` down the pipeline), then removes itself and passes the rest on. A connection that does not start
/// with a valid header is closed.
final class ProxyProtocolDecoder: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    private var buffer: ByteBuffer?
    private let onHeader: (ProxyHeader) -> Bool
    private let onInvalid: (String) -> Void
    private var done = false

    /// - Parameter onHeader: takes the header; false refuses the connection (closed without a byte).
    init(onHeader: @escaping (ProxyHeader) -> Bool, onInvalid: @escaping (String) -> Void) {
        self.onHeader = onHeader
        self.onInvalid = onInvalid
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !self.done else { return }
        var incoming = self.unwrapInboundIn(data)
        if self.buffer == nil {
            self.buffer = incoming
        } else {
            self.buffer!.writeBuffer(&incoming)
        }
        let view = self.buffer!.readableBytesView
        switch ProxyHeader.parse(Array(view)) {
        case .incomplete:
            return
        case .invalid(let reason):
            self.done = true
            self.buffer = nil
            self.onInvalid(reason)
            context.close(promise: nil)
        case .header(let header, let length):
            self.done = true
            var rest = self.buffer!
            self.buffer = nil
            rest.moveReaderIndex(forwardBy: length)
            guard self.onHeader(header) else {
                context.close(promise: nil)
                return
            }
            context.fireUserInboundEventTriggered(ProxyHeaderEvent(addresses: header.addresses))
            if rest.readableBytes > 0 {
                context.fireChannelRead(self.wrapInboundOut(rest))
            }
            context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        if self.done { context.fireChannelReadComplete() }
    }
}

/// Writes a PROXY protocol header to a backend as soon as the connection is made, before anything else (a TLS
/// handshake included).
final class ProxyHeaderWriter: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let header: [UInt8]

    init(header: [UInt8]) {
        self.header = header
    }

    func channelActive(context: ChannelHandlerContext) {
        context.writeAndFlush(self.wrapOutboundOut(context.channel.allocator.buffer(bytes: self.header)), promise: nil)
        context.fireChannelActive()
        context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
    }
}

/// A PROXY protocol header was read (and believed): sent down the pipeline before the bytes that follow it.
struct ProxyHeaderEvent: Sendable {
    var addresses: ProxyHeader.Addresses
}
