import NIOCore

/// Turns the client's bytes into `FrameParser.Event`s as they arrive, without buffering data frames.
///
/// This handler is the only place that knows the wire format of client frames; the session behind it sees payload
/// bytes and control events. A protocol violation is fired once as a `FrameParser.Failure` error, and later input
/// is dropped.
final class FrameDecoderHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = FrameParser.Event

    private var parser: FrameParser
    /// Bytes of a frame header or control frame that arrived incomplete (at most 139 bytes).
    private var pending: ByteBuffer?
    private var failed = false

    /// - Parameter reportsDataFrames: also pass on data frame headers (`.dataFrame` events), for the echo target.
    init(maxFrameSize: UInt64, reportsDataFrames: Bool = false) {
        self.parser = FrameParser(maxFrameSize: maxFrameSize, reportsDataFrames: reportsDataFrames)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !self.failed else { return }
        var buffer = self.unwrapInboundIn(data)
        if var pending = self.pending {
            self.pending = nil
            pending.writeBuffer(&buffer)
            buffer = pending
        }
        do {
            while let event = try self.parser.next(&buffer) {
                context.fireChannelRead(self.wrapInboundOut(event))
            }
            if buffer.readableBytes > 0 {
                // Keep only the few incomplete bytes, not the storage of the whole read.
                var rest = context.channel.allocator.buffer(capacity: buffer.readableBytes)
                rest.writeBuffer(&buffer)
                self.pending = rest
            }
        } catch let failure as FrameParser.Failure {
            self.failed = true
            context.fireErrorCaught(failure)
        } catch {
            self.failed = true
            context.fireErrorCaught(error)
        }
    }
}
