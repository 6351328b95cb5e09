import NIOCore
import NIOPosix

#if canImport(Glibc)
    import Glibc
#endif

/// Monotonic nanoseconds.
@inline(__always) func nowNanos() -> UInt64 { NIODeadline.now().uptimeNanoseconds }

/// Options of a client run.
struct ClientOptions {
    var endpoint: Endpoint
    var scenario: String
    /// Message (frame) size in bytes, or write size in raw TCP mode.
    var size = 16 << 10
    var sessions = 1
    var warmup = 1.0
    var seconds = 3.0
    /// `flood`: stop a session after this many bytes.
    var floodCap = 32 << 20
    /// `hold`, `flood`: how many connects are in flight at once.
    var connectConcurrency = 32
    /// `hold`, `flood`: give up waiting for the operator's `release` line after this many seconds.
    var holdTimeout = 120.0
}

/// Frames (or raw chunks) for a client that sends the pattern stream in messages of `size` bytes, precomputed
/// once so that sending costs the client nothing but the system calls. Messages are masked with a fixed key:
/// the bridge's unmask work does not depend on the key's value.
struct OutgoingStream {
    let messages: [ByteBuffer]

    init(kind: Endpoint.Kind, size: Int, allocator: ByteBufferAllocator, mask: UInt32 = 0xA1B2_C3D4) {
        precondition(
            size > 0 && (size % Pattern.period == 0 || Pattern.period % size == 0),
            "message size must divide \(Pattern.period) or be a multiple of it"
        )
        let count = max(1, Pattern.period / size)
        var offset: UInt64 = 0
        var all = allocator.buffer(capacity: count * (size + 14) + (size > Pattern.period ? size : 0))
        var ranges: [(Int, Int)] = []
        for _ in 0..<count {
            let start = all.writerIndex
            switch kind {
            case .webSocket:
                if size <= Pattern.period {
                    Frames.appendMasked(
                        &all,
                        opcode: 0x2,
                        payload: Pattern.window(at: offset, length: size),
                        mask: mask
                    )
                } else {
                    // A message of several periods: the pattern repeated, masked as one payload.
                    Frames.appendHeader(&all, opcode: 0x2, length: size, mask: mask)
                    let payloadStart = all.writerIndex
                    for _ in 0..<(size / Pattern.period) {
                        all.writeBytes(Pattern.window(at: 0, length: Pattern.period))
                    }
                    all.withUnsafeMutableReadableBytes {
                        Frames.xorMask(UnsafeMutableRawBufferPointer(rebasing: $0[payloadStart...]), mask: mask)
                    }
                }
            case .rawTCP:
                if size <= Pattern.period {
                    all.writeBytes(Pattern.window(at: offset, length: size))
                } else {
                    for _ in 0..<(size / Pattern.period) {
                        all.writeBytes(Pattern.window(at: 0, length: Pattern.period))
                    }
                }
            }
            ranges.append((start, all.writerIndex - start))
            offset += UInt64(size)
        }
        self.messages = ranges.map { all.getSlice(at: $0.0, length: $0.1)! }
    }
}

/// A scenario: connects, runs, and returns a result line (JSON).
protocol Scenario: ConnectionDriver {
    func start()
    /// Called on the event loop once the run ends; returns the JSON fields.
    func finish() -> [(String, String)]
}

func jsonNumber(_ value: Double) -> String {
    value.isFinite ? "\(Double(Int64((value * 1000).rounded())) / 1000)" : "null"
}
