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

    /// Bytes moved from a new read into `pending` at a time: enough for any frame header (14 bytes) or control
    /// frame (131 bytes).
    private static let headerChunk = 160

    /// - Parameter reportsDataFrames: also pass on data frame headers (`.dataFrame` events), for the echo target.
    init(maxFrameSize: UInt64, maxMessageSize: UInt64 = 64 << 20, reportsDataFrames: Bool = false) {
        // The read buffer is ours once NIO hands it on: unmask in place (see `FrameParser.init`).
        self.parser = FrameParser(
            maxFrameSize: maxFrameSize,
            maxMessageSize: maxMessageSize,
            reportsDataFrames: reportsDataFrames,
            unmaskInPlace: true
        )
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !self.failed else { return }
        var buffer = self.unwrapInboundIn(data)
        do {
            // An incomplete header from the last read: complete it with a few bytes of this one, rather than copying
            // the whole read behind it (issue 5).
            while var pending = self.pending, buffer.readableBytes > 0 {
                self.pending = nil
                var head = buffer.readSlice(length: min(buffer.readableBytes, Self.headerChunk))!
                pending.writeBuffer(&head)
                try self.parse(&pending, context: context)
                if pending.readableBytes > 0 { self.pending = pending }
            }
            guard self.pending == nil else { return }
            try self.parse(&buffer, context: context)
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

    private func parse(_ buffer: inout ByteBuffer, context: ChannelHandlerContext) throws {
        while let event = try self.parser.next(&buffer) {
            context.fireChannelRead(self.wrapInboundOut(event))
        }
    }
}
