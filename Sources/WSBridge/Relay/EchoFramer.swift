import NIOCore
import NIOWebSocket

/// Turns the client's data frames into the frames an echo target sends back, as their payload streams in.
///
/// A frame whose payload arrives in one piece is mirrored exactly: same opcode, same FIN bit, same payload. A frame
/// whose payload arrives in several reads is sent back as it arrives, one frame per piece: the first with the
/// frame's opcode, the others as continuations, FIN only on the last piece of a final frame. The peer reads the
/// same messages (opcode and bytes) and the echo never holds more than one read's worth of a frame.
struct EchoFramer {
    private var opcode = WebSocketOpcode.continuation
    private var fin = false
    private var remaining: UInt64 = 0
    private var started = false

    /// A data frame header: returns the frame to send at once for an empty frame, else nil (its payload follows).
    mutating func frameStarted(_ header: FrameParser.DataFrameHeader) -> WebSocketFrame? {
        precondition(self.remaining == 0, "a data frame started before the previous one's payload was through")
        let opcode = Self.opcode(header.opcode)
        guard header.length > 0 else {
            return WebSocketFrame(fin: header.fin, opcode: opcode, data: ByteBuffer())
        }
        self.opcode = opcode
        self.fin = header.fin
        self.remaining = header.length
        self.started = false
        return nil
    }

    /// A piece of the current frame's payload: the frame that carries it back.
    mutating func payload(_ buffer: ByteBuffer) -> WebSocketFrame {
        let count = UInt64(buffer.readableBytes)
        precondition(count <= self.remaining, "more payload than the frame header announced")
        self.remaining -= count
        let opcode = self.started ? WebSocketOpcode.continuation : self.opcode
        self.started = true
        return WebSocketFrame(fin: self.remaining == 0 && self.fin, opcode: opcode, data: buffer)
    }

    private static func opcode(_ opcode: FrameParser.DataOpcode) -> WebSocketOpcode {
        switch opcode {
        case .continuation: return .continuation
        case .text: return .text
        case .binary: return .binary
        }
    }
}
