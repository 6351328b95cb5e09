import NIOCore

/// Turns the client's bytes into `FrameParser.Event`s as they arrive, without buffering data frames.
///
/// This handler is the only place that knows the wire format of client frames; the session behind it sees payload
/// bytes and control events. A protocol violation is fired once as a `FrameParser.Failure` error, and later input
/// is dropped.
///
/// With permessage-deflate it also inflates compressed messages (`MessageInflater`), and it is then what bounds a
/// decompression bomb: each read cycle (one `read()` of the pipeline) yields at most `inflateBudget` inflated bytes.
/// Once they are out, the rest of the cycle's input waits here (the backlog, at most one cycle of socket reads) and
/// the next `read()` (which the session holds back while its partner cannot take more) yields the next
/// `inflateBudget`, without reading the socket, until the backlog is used up.
final class FrameDecoderHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = FrameParser.Event
    typealias OutboundIn = NIOAny
    typealias OutboundOut = NIOAny

    private var parser: FrameParser
    /// Bytes of a frame header or control frame that arrived incomplete (at most 139 bytes).
    private var pending: ByteBuffer?
    private var failed = false
    private let reportsDataFrames: Bool
    private var inflation: Inflation?

    /// Bytes moved from a new read into `pending` at a time: enough for any frame header (14 bytes) or control
    /// frame (131 bytes).
    private static let headerChunk = 160

    /// The state of a session whose client compresses.
    private struct Inflation {
        var inflater: MessageInflater
        /// Inflated bytes this read cycle may still yield.
        var budget: Int
        let cycleBudget: Int
        /// Client bytes not parsed yet because the cycle's budget is used up.
        var backlog: ByteBuffer?
        /// The message being inflated: its opcode, its UTF-8 so far (text), whether a piece was handed on.
        var inMessage = false
        var opcode = FrameParser.DataOpcode.binary
        var utf8 = UTF8Validator()
        var started = false
    }

    /// Client bytes are being decoded: a `read()` that comes meanwhile waits for the end.
    private var decoding = false
    private var readDeferred = false

    /// - Parameters:
    ///   - reportsDataFrames: also pass on data frame headers (`.dataFrame` events), for the echo target; inflated
    ///     messages are then passed on as frames of their own (one per inflated piece, and an empty final one).
    ///   - compression: the negotiated permessage-deflate, nil when the session is not compressed.
    ///   - inflateBudget: inflated bytes per read cycle.
    init(
        maxFrameSize: UInt64,
        maxMessageSize: UInt64 = 64 << 20,
        reportsDataFrames: Bool = false,
        compression: DeflateParameters? = nil,
        inflateBudget: Int = 256 << 10
    ) {
        // The read buffer is ours once NIO hands it on: unmask in place (see `FrameParser.init`).
        self.parser = FrameParser(
            maxFrameSize: maxFrameSize,
            maxMessageSize: maxMessageSize,
            reportsDataFrames: reportsDataFrames,
            unmaskInPlace: true,
            allowsCompression: compression != nil
        )
        self.reportsDataFrames = reportsDataFrames
        if let compression {
            self.inflation = Inflation(
                inflater: MessageInflater(
                    windowBits: compression.clientWindowBits,
                    freesAfterMessage: compression.clientNoContextTakeover,
                    maxMessageSize: max(maxMessageSize, maxFrameSize)
                ),
                budget: max(1, inflateBudget),
                cycleBudget: max(1, inflateBudget)
            )
        }
    }

    /// Whether the inflater holds zlib's state now (tests).
    var holdsInflaterState: Bool { self.inflation?.inflater.holdsState ?? false }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !self.failed else { return }
        var buffer = self.unwrapInboundIn(data)
        if var backlog = self.inflation?.backlog {
            // The cycle's inflated bytes are out: later reads of the cycle wait behind the backlog.
            self.inflation?.backlog = nil
            backlog.writeBuffer(&buffer)
            self.inflation?.backlog = backlog
            return
        }
        self.decode(&buffer, context: context)
    }

    func read(context: ChannelHandlerContext) {
        guard let inflation = self.inflation, !self.failed else { return context.read() }
        guard !self.decoding else {
            self.readDeferred = true
            return
        }
        // Each read cycle, from the socket or from the backlog, may yield `cycleBudget` inflated bytes.
        self.inflation?.budget = inflation.cycleBudget
        guard inflation.backlog != nil || inflation.inflater.hasWork else { return context.read() }
        // A read cycle of its own, from the backlog: the socket is not read until the backlog is used up. The
        // channel asks for the next cycle after each of its own (autoRead); this one asks for its next itself, when
        // decoding ends.
        var backlog = inflation.backlog ?? ByteBuffer()
        self.inflation?.backlog = nil
        self.readDeferred = true
        self.decode(&backlog, context: context)
        context.fireChannelReadComplete()
    }

    /// A `read()` that waited for decoding to end, asked for again from the pipeline's tail (where the session may
    /// hold it) on the next event-loop turn, so that a long backlog does not deepen the stack.
    private func readAgain(context: ChannelHandlerContext) {
        guard self.readDeferred else { return }
        self.readDeferred = false
        let channel = context.channel
        context.eventLoop.execute { channel.read() }
    }

    private func decode(_ buffer: inout ByteBuffer, context: ChannelHandlerContext) {
        self.decoding = true
        defer {
            self.decoding = false
            if self.inflation != nil { self.readAgain(context: context) }
        }
        do {
            // An incomplete header from the last read: complete it with a few bytes of this one, rather than copying
            // the whole read behind it (issue 5).
            while var pending = self.pending, buffer.readableBytes > 0 {
                self.pending = nil
                var head = buffer.readSlice(length: min(buffer.readableBytes, Self.headerChunk))!
                pending.writeBuffer(&head)
                let paused = try self.parse(&pending, context: context)
                if paused {
                    // Parsing stopped for the budget, not for want of bytes: all of it waits.
                    pending.writeBuffer(&buffer)
                    self.inflation?.backlog = pending
                    return
                }
                if pending.readableBytes > 0 { self.pending = pending }
            }
            guard self.pending == nil else { return }
            if try self.parse(&buffer, context: context) {
                self.inflation?.backlog = buffer
            } else if buffer.readableBytes > 0 {
                // Keep only the few incomplete bytes, not the storage of the whole read.
                var rest = context.channel.allocator.buffer(capacity: buffer.readableBytes)
                rest.writeBuffer(&buffer)
                self.pending = rest
            }
        } catch {
            self.failed = true
            self.inflation?.backlog = nil
            self.readDeferred = false
            context.fireErrorCaught(error)
        }
    }

    /// Parses and passes on events; true when it stopped because the cycle's inflated bytes are out (the rest of
    /// `buffer` waits), false when `buffer` needs more bytes.
    private func parse(_ buffer: inout ByteBuffer, context: ChannelHandlerContext) throws -> Bool {
        guard self.inflation != nil else {
            while let event = try self.parser.next(&buffer) {
                context.fireChannelRead(self.wrapInboundOut(event))
            }
            return false
        }
        if try self.inflate(context: context) { return true }
        while let event = try self.parser.next(&buffer) {
            guard case .compressed(let payload) = event else {
                context.fireChannelRead(self.wrapInboundOut(event))
                continue
            }
            if self.inflation?.inMessage == false {
                self.inflation?.inMessage = true
                self.inflation?.opcode = payload.opcode
            }
            self.inflation?.inflater.feed(payload.bytes, endsMessage: payload.endsMessage)
            if try self.inflate(context: context) { return true }
        }
        return false
    }

    /// Inflates what the inflater holds and passes it on, within the cycle's budget; true when the budget ran out
    /// with work left.
    private func inflate(context: ChannelHandlerContext) throws -> Bool {
        guard var inflation = self.inflation else { return false }
        defer { self.inflation = inflation }
        while inflation.inflater.hasWork {
            guard inflation.budget > 0 else { return true }
            // A power of two: ByteBuffer's storage is rounded up to one, and zlib fills all of it.
            let remaining = min(inflation.budget, 64 << 10)
            let limit = 1 << (Int.bitWidth - 1 - remaining.leadingZeroBitCount)
            switch try inflation.inflater.next(limit: limit, allocator: context.channel.allocator) {
            case .piece(let piece):
                inflation.budget -= piece.readableBytes
                if inflation.opcode == .text {
                    let valid = piece.withUnsafeReadableBytes { inflation.utf8.feed($0) }
                    guard valid else { throw FrameParser.Failure(.invalidPayload, "invalid UTF-8 in text message") }
                }
                self.passOn(piece, inflation: &inflation, context: context)
            case .needsInput:
                return false
            case .endOfMessage:
                if inflation.opcode == .text && !inflation.utf8.isComplete {
                    throw FrameParser.Failure(.invalidPayload, "invalid UTF-8 in text message")
                }
                if self.reportsDataFrames {
                    // The echo's frames of an inflated message end with an empty final one.
                    let opcode = inflation.started ? FrameParser.DataOpcode.continuation : inflation.opcode
                    let header = FrameParser.DataFrameHeader(opcode: opcode, fin: true, length: 0)
                    context.fireChannelRead(self.wrapInboundOut(.dataFrame(header)))
                }
                inflation.inMessage = false
                inflation.started = false
                inflation.utf8 = UTF8Validator()
            }
        }
        return false
    }

    private func passOn(_ piece: ByteBuffer, inflation: inout Inflation, context: ChannelHandlerContext) {
        if self.reportsDataFrames {
            let opcode = inflation.started ? FrameParser.DataOpcode.continuation : inflation.opcode
            let header = FrameParser.DataFrameHeader(opcode: opcode, fin: false, length: UInt64(piece.readableBytes))
            context.fireChannelRead(self.wrapInboundOut(.dataFrame(header)))
        }
        inflation.started = true
        context.fireChannelRead(self.wrapInboundOut(.data(piece)))
    }
}
