import NIOCore
import NIOSSL

/// Tells TLS and plain connections apart on one port by their first byte, as websockify does: `0x16` (a TLS
/// handshake record) gets a TLS server handler with the current certificates; anything else stays plain, or is
/// refused with a plain-text `400` when the listener only speaks TLS. The decision goes down the pipeline as a
/// `TLSDetectedEvent` before the first byte.
final class TLSDetector: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let store: ServerTLSStore
    private let onRefused: () -> Void
    private let allowPlain: (ByteBuffer) -> Bool
    private var decided = false

    /// - Parameters:
    ///   - onRefused: called when a plain connection is refused (`--ssl-only`).
    ///   - allowPlain: a plain connection a TLS-only listener still lets through (the readiness self-check).
    init(
        store: ServerTLSStore,
        onRefused: @escaping () -> Void,
        allowPlain: @escaping (ByteBuffer) -> Bool = { _ in false }
    ) {
        self.store = store
        self.onRefused = onRefused
        self.allowPlain = allowPlain
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let buffer = self.unwrapInboundIn(data)
        guard !self.decided else { return }  // refused: the rest is dropped until the close
        guard let first = buffer.getInteger(at: buffer.readerIndex, as: UInt8.self) else { return }
        self.decided = true
        if first == 0x16 {
            do {
                let sync = context.pipeline.syncOperations
                try sync.addHandler(NIOSSLServerHandler(context: self.store.context), position: .after(self))
                context.fireUserInboundEventTriggered(TLSDetectedEvent(isTLS: true))
                context.fireChannelRead(data)
                sync.removeHandler(context: context, promise: nil)
            } catch {
                context.close(promise: nil)
            }
            return
        }
        if self.store.settings.refusesPlain, !self.allowPlain(buffer) {
            self.onRefused()
            let body = "this port requires TLS: use wss:// or https://\n"
            let response =
                "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\n"
                + "Content-Length: \(body.utf8.count)\r\nConnection: close\r\n\r\n\(body)"
            context.writeAndFlush(self.wrapOutboundOut(context.channel.allocator.buffer(string: response)))
                .whenComplete { _ in context.close(promise: nil) }
            return
        }
        context.fireUserInboundEventTriggered(TLSDetectedEvent(isTLS: false))
        context.fireChannelRead(data)
        context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
    }
}

/// The first byte told TLS from plain: sent down the pipeline before that byte.
struct TLSDetectedEvent: Sendable {
    var isTLS: Bool
}
