import CompressNIO
import NIOCore

/// Compresses the frames of the bridge's messages to the client (RFC 7692 §7.2.1), one frame at a time.
///
/// Each frame's payload is deflated and flushed to a byte boundary (Z_SYNC_FLUSH), so that a frame never waits for
/// the next one; the final frame of a message drops the 4 bytes (`00 00 FF FF`) that the flush ends with, as the
/// RFC asks. With context takeover the window carries over from message to message (repeated prompts and escape
/// sequences of a terminal cost a few bytes); under `server_no_context_takeover` zlib's state is freed at the end
/// of each message.
///
/// zlib's state is made when the first message is compressed: `1 << (windowBits + 2)` bytes for the window and
/// `1 << (memoryLevel + 9)` for the hash, plus about 6 KiB (zlib.h); with the bridge's 12 and 5, about 38 KiB.
final class MessageDeflater {
    let windowBits: Int
    let freesAfterMessage: Bool
    /// zlib's memory level: its hash table and pending buffer, `1 << (memoryLevel + 9)` bytes.
    static let memoryLevel: Int32 = 5
    /// zlib's compression level: 1, its fastest. A relay's bytes go out as they come, and for a console's text
    /// level 1 saves nearly what level 6 does at about a third of the CPU (docs/benchmarks.md, "Compression").
    static let level: Int32 = 1
    private var zlib: ZlibCompressor?

    init(windowBits: Int, freesAfterMessage: Bool) {
        self.windowBits = windowBits
        self.freesAfterMessage = freesAfterMessage
    }

    /// Whether zlib's state is allocated now (tests and measurements).
    var holdsState: Bool { self.zlib != nil }

    /// The compressed payload of one frame of a message; `endsMessage` for its final frame.
    func compress(_ payload: ByteBuffer, endsMessage: Bool, allocator: ByteBufferAllocator) throws -> ByteBuffer {
        let zlib = try self.zlib ?? self.makeZlib()
        var input = payload
        if input.readableBytes == 0 {
            // CompressNIO hands zlib the input's address: an empty input needs storage behind it.
            input = allocator.buffer(capacity: 1)
        }
        var output = allocator.buffer(capacity: zlib.maxSize(from: input))
        while true {
            do {
                try zlib.deflate(from: &input, to: &output, flush: .sync)
            } catch let error as CompressNIOError where error == .bufferOverflow && output.writableBytes > 0 {
                break  // Z_BUF_ERROR with room left: nothing to flush (an empty frame after a flushed one)
            }
            if input.readableBytes == 0 && output.writableBytes > 0 { break }
            // The output filled up (deflateBound says it cannot, but zlib may still hold bytes): more room.
            output.reserveCapacity(minimumWritableBytes: max(1024, output.capacity))
        }
        if endsMessage {
            // §7.2.1: the flush ends with an empty stored block; its 4 length bytes are left out.
            if output.readableBytes >= 4,
                output.getBytes(at: output.writerIndex - 4, length: 4) == [0x00, 0x00, 0xFF, 0xFF]
            {
                output.moveWriterIndex(to: output.writerIndex - 4)
            } else if output.readableBytes == 0 {
                // Nothing was pending (the frames before were flushed): the receiver appends 00 00 FF FF, which
                // needs the header byte of an empty stored block before it (the stream is byte-aligned here).
                output.writeInteger(UInt8(0))
            }
            if self.freesAfterMessage { self.zlib = nil }
        }
        // The output was sized for incompressible input: a compressed frame usually needs a fraction of it.
        return output.compacted(allocator: allocator)
    }

    private func makeZlib() throws -> ZlibCompressor {
        let configuration = ZlibConfiguration(
            windowSize: Int32(self.windowBits),
            compressionLevel: Self.level,
            memoryLevel: Self.memoryLevel
        )
        let zlib = try ZlibCompressor(algorithm: .deflate, configuration: configuration)
        self.zlib = zlib
        return zlib
    }
}
