import CompressNIO
import NIOCore

/// Inflates the client's compressed messages (RFC 7692 §7.2.2) as their payload arrives, a bounded piece at a time,
/// so that neither a large message nor a decompression bomb is ever held whole.
///
/// The caller feeds the compressed payload of a message as it is parsed (`feed`), then takes inflated pieces of at
/// most `limit` bytes (`next`) until it returns nil: then the input so far is used up, and when the message's last
/// payload was fed, the message is complete. Every message's inflated size is counted against `maxMessageSize`
/// (1009 beyond); invalid deflate data is a 1007.
///
/// zlib's state (about 7 KiB, plus the window of `1 << windowBits` bytes once data flows) is made on the first
/// compressed message and kept for the session's life, since later messages may refer back into the window
/// (context takeover); under `client_no_context_takeover` it is freed at the end of each message instead.
final class MessageInflater {
    let windowBits: Int
    let freesAfterMessage: Bool
    let maxMessageSize: UInt64
    private var zlib: ZlibDecompressor?
    /// Compressed bytes fed and not inflated yet.
    private var input: ByteBuffer?
    /// The last payload of the message was fed: the 4 bytes RFC 7692 §7.2.2 removed are appended once it is used up.
    private var messageFed = false
    private var tailFed = false
    /// The last call filled its output: zlib may hold more without further input.
    private var outputWasFull = false
    /// The deflate stream ended inside the message (a block with BFINAL set): what follows in it is ignored.
    private var streamEnded = false
    /// Inflated bytes of the current message so far.
    private(set) var messageSize: UInt64 = 0

    /// The 4 bytes a sender removes from the end of each compressed message (an empty stored block's length fields).
    private static let tail: [UInt8] = [0x00, 0x00, 0xFF, 0xFF]

    init(windowBits: Int, freesAfterMessage: Bool, maxMessageSize: UInt64) {
        self.windowBits = windowBits
        self.freesAfterMessage = freesAfterMessage
        self.maxMessageSize = maxMessageSize
    }

    /// Whether zlib's state is allocated now (tests and measurements).
    var holdsState: Bool { self.zlib != nil }

    /// What `next` yields.
    enum Output: Equatable {
        /// Inflated bytes (never empty).
        case piece(ByteBuffer)
        /// The input fed so far is used up.
        case needsInput
        /// The message whose end was fed is complete; the next `feed` starts a new one.
        case endOfMessage
    }

    /// Whether `next` has work: input not yet inflated, or the end of a message not yet reported.
    var hasWork: Bool {
        (self.input?.readableBytes ?? 0) > 0 || self.outputWasFull || self.messageFed
    }

    /// Compressed payload of the current message; `endsMessage` with its last piece (which may be empty).
    func feed(_ bytes: ByteBuffer, endsMessage: Bool) {
        precondition(!self.messageFed, "MessageInflater: payload fed after the end of its message")
        if bytes.readableBytes > 0, !self.streamEnded {
            if var input = self.input, input.readableBytes > 0 {
                var bytes = bytes
                input.writeBuffer(&bytes)
                self.input = input
            } else {
                self.input = bytes
            }
        }
        self.messageFed = endsMessage
    }

    /// The next inflated piece of at most about `limit` bytes, or what stops it.
    func next(limit: Int, allocator: ByteBufferAllocator) throws -> Output {
        var output = allocator.buffer(capacity: limit)
        while output.writableBytes > 0 {
            if let input = self.input, input.readableBytes > 0 {
                try self.inflate(&output)
            } else if self.outputWasFull {
                // zlib may hold decoded bytes that did not fit: ask once more without input.
                try self.inflate(&output)
                if self.outputWasFull { continue }
            } else if self.messageFed && !self.tailFed {
                self.tailFed = true
                if !self.streamEnded {
                    var tail = allocator.buffer(capacity: Self.tail.count)
                    tail.writeBytes(Self.tail)
                    self.input = tail
                }
            } else {
                break
            }
        }
        self.messageSize += UInt64(output.readableBytes)
        guard self.messageSize <= self.maxMessageSize else { throw FrameParser.Failure(.tooBig, "message too big") }
        if output.readableBytes > 0 { return .piece(output.compacted(allocator: allocator)) }
        guard self.messageFed, self.tailFed else { return .needsInput }
        self.endMessage()
        return .endOfMessage
    }

    private func endMessage() {
        self.messageFed = false
        self.tailFed = false
        self.messageSize = 0
        self.input = nil
        if self.streamEnded || self.freesAfterMessage {
            // A stream that ended cannot be continued: the next message starts a new one (and so a new window).
            self.zlib = nil
            self.streamEnded = false
        }
    }

    private func inflate(_ output: inout ByteBuffer) throws {
        let zlib = try self.zlib ?? self.makeZlib()
        var input = self.input ?? Self.empty
        defer { self.input = input.readableBytes > 0 ? input : nil }
        do {
            try zlib.inflate(from: &input, to: &output)
            self.outputWasFull = false
        } catch let error as CompressNIOError where error == .bufferOverflow {
            self.outputWasFull = true  // the output is full; input or decoded bytes may remain
            return
        } catch let error as CompressNIOError where error == .inputBufferOverflow {
            self.outputWasFull = false  // no progress without more input
            return
        } catch let error as CompressNIOError where error == .corruptData {
            throw FrameParser.Failure(.invalidPayload, "invalid compressed data")
        } catch {
            throw FrameParser.Failure(.internalError, "cannot inflate: \(error)")
        }
        // zlib returns without an error with input left only at the end of the deflate stream (Z_STREAM_END):
        // the message held a final block. The rest of its input (the tail at least) is dropped.
        if input.readableBytes > 0 {
            self.streamEnded = true
            input.moveReaderIndex(forwardBy: input.readableBytes)
        }
    }

    private func makeZlib() throws -> ZlibDecompressor {
        do {
            let zlib = try ZlibDecompressor(algorithm: .deflate, windowSize: Int32(self.windowBits))
            self.zlib = zlib
            return zlib
        } catch {
            throw FrameParser.Failure(.internalError, "cannot start inflating: \(error)")
        }
    }

    /// An empty input with storage behind it (CompressNIO passes the input's base address to zlib).
    private static let empty = ByteBufferAllocator().buffer(capacity: 1)
}
