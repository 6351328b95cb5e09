import NIOCore
import NIOWebSocket

/// Compresses the data frames the session writes to the client (permessage-deflate, RFC 7692 §6 and §7.2.1), in
/// front of NIO's frame encoder: RSV1 on the first frame of each message, every frame's payload deflated as it goes
/// (`MessageDeflater`). Control frames (Ping, Pong, Close) pass as they are: the RFC never compresses them.
///
/// The session's accounting is unchanged by it: bytes down are the backend's bytes, before compression.
final class DeflateFrameEncoder: ChannelOutboundHandler, RemovableChannelHandler {
    typealias OutboundIn = WebSocketFrame
    typealias OutboundOut = WebSocketFrame

    private let deflater: MessageDeflater
    /// A message's first frame was written and its final one not yet.
    private var inMessage = false

    init(parameters: DeflateParameters) {
        self.deflater = MessageDeflater(
            windowBits: parameters.serverWindowBits,
            freesAfterMessage: parameters.serverNoContextTakeover
        )
    }

    /// Whether the deflater holds zlib's state now (tests).
    var holdsDeflaterState: Bool { self.deflater.holdsState }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        var frame = self.unwrapOutboundIn(data)
        switch frame.opcode {
        case .text, .binary, .continuation:
            do {
                frame.data = try self.deflater.compress(
                    frame.data,
                    endsMessage: frame.fin,
                    allocator: context.channel.allocator
                )
            } catch {
                // zlib fails only without memory: the session cannot go on compressed.
                promise?.fail(error)
                context.fireErrorCaught(error)
                return
            }
            frame.rsv1 = !self.inMessage
            self.inMessage = !frame.fin
            context.write(self.wrapOutboundOut(frame), promise: promise)
        default:
            context.write(data, promise: promise)
        }
    }
}
