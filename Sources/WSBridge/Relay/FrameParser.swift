import NIOCore

/// A streaming decoder for frames sent by a WebSocket client (RFC 6455 §5), as a value-type state machine.
///
/// Unlike NIO's `WebSocketFrameDecoder`, it never buffers a data frame: payload is unmasked in place and handed
/// out as it arrives, so memory does not grow with the frame size. It also enforces what NIO leaves to the
/// application: masking, RSV bits, reserved opcodes, control-frame rules, fragmentation order, UTF-8 of text
/// messages and close reasons, and close-code validity. Every violation is a `FrameParser.Failure` that names the
/// close code to send.
public struct FrameParser: Sendable {
    /// What the parser yields.
    public enum Event: Equatable, Sendable {
        /// The header of a text, binary or continuation frame, before its payload's `.data` events (only when the
        /// parser was made with `reportsDataFrames`). An empty frame has this event and no `.data`.
        case dataFrame(DataFrameHeader)
        /// Unmasked payload of a text, binary or continuation frame; never empty.
        case data(ByteBuffer)
        case ping(ByteBuffer)
        case pong(ByteBuffer)
        /// A Close frame: the code (nil when the frame had no body) and the reason.
        case close(CloseCode?, String)
        /// Payload of a compressed message (RSV1 on its first frame, only when made with `allowsCompression`), still
        /// compressed: the frame decoder inflates it (`MessageInflater`), so the session never sees this event.
        /// Empty only when it ends the message.
        case compressed(CompressedPayload)
    }

    /// A piece of a compressed message's payload (RFC 7692 §6): its UTF-8 is checked once inflated.
    public struct CompressedPayload: Equatable, Sendable {
        public var bytes: ByteBuffer
        /// The message's opcode (text or binary).
        public var opcode: DataOpcode
        /// The last piece of the message's final frame.
        public var endsMessage: Bool
    }

    /// A protocol violation, with the close code and reason the bridge sends back.
    public struct Failure: Error, Equatable, Sendable, CustomStringConvertible {
        public var code: CloseCode
        public var reason: String
        public init(_ code: CloseCode, _ reason: String) {
            self.code = code
            self.reason = reason
        }
        public var description: String { "\(self.code.rawValue) \(self.reason)" }
    }

    /// The opcode of a data frame.
    public enum DataOpcode: UInt8, Sendable {
        case continuation = 0x0
        case text = 0x1
        case binary = 0x2
    }

    /// What a data frame's header says: enough to mirror the frame (the echo target) while its payload streams.
    public struct DataFrameHeader: Equatable, Sendable {
        public var opcode: DataOpcode
        public var fin: Bool
        /// Payload length; the `.data` events that follow add up to it.
        public var length: UInt64

        public init(opcode: DataOpcode, fin: Bool, length: UInt64) {
            self.opcode = opcode
            self.fin = fin
            self.length = length
        }
    }

    private enum State: Sendable {
        case header
        case payload(remaining: UInt64, mask: (UInt8, UInt8, UInt8, UInt8), maskOffset: Int, fin: Bool)
        case failed(Failure)
        case closed
    }

    public let maxFrameSize: UInt64
    /// Largest client message, its frames together (1009 beyond): checked at each frame header, so that payload is
    /// still streamed and never held.
    public let maxMessageSize: UInt64
    public let requireMask: Bool
    /// Whether data frame headers are reported as `.dataFrame` events. The relay does not need them (it forwards
    /// bytes only) and leaves this off, so that it handles one event per payload chunk and nothing more.
    public let reportsDataFrames: Bool
    /// Unmask in the buffer's storage even when other `ByteBuffer` values share it (see `init`).
    public let unmaskInPlace: Bool
    /// permessage-deflate was negotiated: RSV1 on the first frame of a data message marks it compressed.
    public let allowsCompression: Bool
    private var state: State = .header
    private var inFragmentedMessage = false
    /// Payload bytes of the current message's frames so far, the frame being read included.
    private var messageLength: UInt64 = 0
    private var messageIsText = false
    private var messageIsCompressed = false
    private var utf8 = UTF8Validator()

    /// - Parameter unmaskInPlace: false (the default) keeps `ByteBuffer`'s value semantics: unmasking mutates
    ///   through `withUnsafeMutableReadableBytes`, which copies the whole storage whenever another value shares
    ///   it — and the payload slices handed out for earlier frames of the same read always do, so a read holding
    ///   many frames is copied once per frame. true writes the unmasked bytes into the shared storage instead:
    ///   only for a caller that owns the buffer and knows that no other value looks at its unread bytes (the
    ///   channel's read buffer in `FrameDecoderHandler`: NIO drops it after the read, and handed-out slices only
    ///   cover bytes before the reader index). Issue 5: this removed a memmove of up to 64 KiB per frame.
    public init(
        maxFrameSize: UInt64 = 64 << 20,
        maxMessageSize: UInt64 = 64 << 20,
        requireMask: Bool = true,
        reportsDataFrames: Bool = false,
        unmaskInPlace: Bool = false,
        allowsCompression: Bool = false
    ) {
        self.maxFrameSize = maxFrameSize
        self.maxMessageSize = max(maxMessageSize, maxFrameSize)
        self.requireMask = requireMask
        self.reportsDataFrames = reportsDataFrames
        self.unmaskInPlace = unmaskInPlace
        self.allowsCompression = allowsCompression
    }

    /// Whether a Close frame has been parsed (later bytes are ignored).
    public var isClosed: Bool {
        if case .closed = self.state { return true }
        return false
    }

    /// Parses the next event from the front of `buffer`, consuming what it used. Returns nil when more bytes are
    /// needed (the unconsumed bytes must be kept and presented again with what follows).
    public mutating func next(_ buffer: inout ByteBuffer) throws -> Event? {
        while true {
            switch self.state {
            case .failed(let failure):
                throw failure
            case .closed:
                buffer.moveReaderIndex(forwardBy: buffer.readableBytes)
                return nil
            case .header:
                guard let event = try self.parseHeader(&buffer) else {
                    if case .header = self.state { return nil }  // need more bytes
                    continue  // a data frame header was consumed
                }
                return event
            case .payload(let remaining, let mask, let maskOffset, let fin):
                if remaining == 0 {
                    let compressed = self.messageIsCompressed
                    let opcode = self.messageOpcode
                    try self.endDataFrame(fin: fin)
                    if compressed && fin {
                        return .compressed(CompressedPayload(bytes: ByteBuffer(), opcode: opcode, endsMessage: true))
                    }
                    continue
                }
                let available = buffer.readableBytes
                if available == 0 { return nil }
                let count = Int(min(UInt64(available), remaining))
                let checksUTF8 = self.messageIsText && !self.messageIsCompressed
                let validUTF8: Bool
                if self.unmaskInPlace {
                    validUTF8 = buffer.withUnsafeReadableBytes { bytes -> Bool in
                        let chunk = UnsafeMutableRawBufferPointer(
                            mutating: UnsafeRawBufferPointer(rebasing: bytes[0..<count])
                        )
                        Self.unmask(chunk, mask: mask, offset: maskOffset)
                        return checksUTF8 ? self.utf8.feed(UnsafeRawBufferPointer(chunk)) : true
                    }
                } else {
                    validUTF8 = buffer.withUnsafeMutableReadableBytes { bytes -> Bool in
                        let chunk = UnsafeMutableRawBufferPointer(rebasing: bytes[0..<count])
                        Self.unmask(chunk, mask: mask, offset: maskOffset)
                        return checksUTF8 ? self.utf8.feed(UnsafeRawBufferPointer(chunk)) : true
                    }
                }
                guard validUTF8 else { return try self.fail(.invalidPayload, "invalid UTF-8 in text message") }
                let slice = buffer.readSlice(length: count)!
                self.state = .payload(
                    remaining: remaining - UInt64(count),
                    mask: mask,
                    maskOffset: (maskOffset + count) & 3,
                    fin: fin
                )
                if self.messageIsCompressed {
                    let opcode = self.messageOpcode
                    let ends = remaining == UInt64(count) && fin
                    if remaining == UInt64(count) { try self.endDataFrame(fin: fin) }
                    return .compressed(CompressedPayload(bytes: slice, opcode: opcode, endsMessage: ends))
                }
                if remaining == UInt64(count) { try self.endDataFrame(fin: fin) }
                return .data(slice)
            }
        }
    }

    private mutating func endDataFrame(fin: Bool) throws {
        self.state = .header
        guard fin else { return }
        if self.messageIsText && !self.messageIsCompressed && !self.utf8.isComplete {
            _ = try self.fail(.invalidPayload, "invalid UTF-8 in text message")
        }
        self.inFragmentedMessage = false
        self.messageIsText = false
        self.messageIsCompressed = false
        self.utf8 = UTF8Validator()
    }

    private mutating func fail(_ code: CloseCode, _ reason: String) throws -> Event? {
        let failure = Failure(code, reason)
        self.state = .failed(failure)
        throw failure
    }

    private mutating func parseHeader(_ buffer: inout ByteBuffer) throws -> Event? {
        guard buffer.readableBytes >= 2,
            let first = buffer.getInteger(at: buffer.readerIndex, as: UInt8.self),
            let second = buffer.getInteger(at: buffer.readerIndex + 1, as: UInt8.self)
        else { return nil }
        let fin = first & 0x80 != 0
        let opcode = first & 0x0F
        let masked = second & 0x80 != 0
        let shortLength = second & 0x7F

        // Checks that need only the first two bytes come first, so a bad frame is refused as early as possible.
        let rsv1 = first & 0x40 != 0
        if first & 0x30 != 0 || (rsv1 && !self.allowsCompression) {
            return try self.fail(.protocolError, "reserved bits set")
        }
        let isControl = opcode & 0x08 != 0
        switch opcode {
        case 0x0, 0x1, 0x2, 0x8, 0x9, 0xA: break
        default: return try self.fail(.protocolError, "reserved opcode \(opcode)")
        }
        if self.requireMask && !masked { return try self.fail(.protocolError, "unmasked client frame") }
        if isControl {
            if !fin { return try self.fail(.protocolError, "fragmented control frame") }
            if shortLength > 125 { return try self.fail(.protocolError, "control frame longer than 125 bytes") }
        } else if opcode == 0x0 {
            if !self.inFragmentedMessage {
                return try self.fail(.protocolError, "continuation frame without a message")
            }
        } else if self.inFragmentedMessage {
            return try self.fail(.protocolError, "new data frame inside a fragmented message")
        }
        // RFC 7692 §6.1: RSV1 marks a message, so only its first frame carries it.
        if rsv1 && isControl { return try self.fail(.protocolError, "compressed control frame") }
        if rsv1 && opcode == 0x0 { return try self.fail(.protocolError, "RSV1 set on a continuation frame") }

        let lengthBytes: Int
        switch shortLength {
        case 126: lengthBytes = 2
        case 127: lengthBytes = 8
        default: lengthBytes = 0
        }
        let headerLength = 2 + lengthBytes + (masked ? 4 : 0)
        guard buffer.readableBytes >= headerLength else { return nil }
        var length = UInt64(shortLength)
        if lengthBytes == 2 {
            length = UInt64(buffer.getInteger(at: buffer.readerIndex + 2, as: UInt16.self)!)
        } else if lengthBytes == 8 {
            length = buffer.getInteger(at: buffer.readerIndex + 2, as: UInt64.self)!
            if length & (1 << 63) != 0 { return try self.fail(.protocolError, "frame length has the high bit set") }
        }
        if !isControl {
            if length > self.maxFrameSize { return try self.fail(.tooBig, "frame too big") }
            let before = opcode == 0x0 ? self.messageLength : 0
            guard length <= self.maxMessageSize - before else { return try self.fail(.tooBig, "message too big") }
            self.messageLength = before + length
        }
        var mask: (UInt8, UInt8, UInt8, UInt8) = (0, 0, 0, 0)
        if masked {
            let at = buffer.readerIndex + 2 + lengthBytes
            mask = (
                buffer.getInteger(at: at, as: UInt8.self)!, buffer.getInteger(at: at + 1, as: UInt8.self)!,
                buffer.getInteger(at: at + 2, as: UInt8.self)!, buffer.getInteger(at: at + 3, as: UInt8.self)!
            )
        }

        if isControl {
            // Control frames are at most 125 bytes: wait for the whole frame.
            guard buffer.readableBytes >= headerLength + Int(length) else { return nil }
            buffer.moveReaderIndex(forwardBy: headerLength)
            var payload = ByteBuffer(buffer.readSlice(length: Int(length))!.readableBytesView)
            payload.withUnsafeMutableReadableBytes { Self.unmask($0, mask: mask, offset: 0) }
            switch opcode {
            case 0x9: return .ping(payload)
            case 0xA: return .pong(payload)
            default: return try self.parseClose(payload)
            }
        }

        buffer.moveReaderIndex(forwardBy: headerLength)
        if opcode != 0x0 {
            self.messageIsText = opcode == 0x1
            self.messageIsCompressed = rsv1
            self.inFragmentedMessage = !fin
        }
        // A final continuation frame ends the message in `endDataFrame` once its payload is through.
        self.state = .payload(remaining: length, mask: mask, maskOffset: 0, fin: fin)
        // A compressed message's frames are not reported: the decoder frames what it inflates itself.
        guard self.reportsDataFrames, !self.messageIsCompressed else { return nil }
        // An empty frame ends here, so that a message it leaves with incomplete UTF-8 fails before its header is
        // reported (as a last payload chunk is checked before it is handed out).
        if length == 0 { try self.endDataFrame(fin: fin) }
        return .dataFrame(DataFrameHeader(opcode: DataOpcode(rawValue: opcode)!, fin: fin, length: length))
    }

    private var messageOpcode: DataOpcode { self.messageIsText ? .text : .binary }

    private mutating func parseClose(_ payload: ByteBuffer) throws -> Event? {
        var payload = payload
        if payload.readableBytes == 0 {
            self.state = .closed
            return .close(nil, "")
        }
        guard let raw = payload.readInteger(as: UInt16.self) else {
            return try self.fail(.protocolError, "close frame with a 1-byte body")
        }
        let code = CloseCode(raw)
        guard code.isValidOnWire else { return try self.fail(.protocolError, "invalid close code \(raw)") }
        var validator = UTF8Validator()
        let valid = payload.withUnsafeReadableBytes { validator.feed($0) } && validator.isComplete
        guard valid else { return try self.fail(.invalidPayload, "invalid UTF-8 in close reason") }
        self.state = .closed
        return .close(code, String(decoding: payload.readableBytesView, as: UTF8.self))
    }

    /// XORs `bytes` with the masking key, starting `offset` bytes into the key's 4-byte cycle.
    ///
    /// Eight bytes per step (four words per loop turn), about ten times NIO's byte-by-byte unmask.
    static func unmask(_ bytes: UnsafeMutableRawBufferPointer, mask: (UInt8, UInt8, UInt8, UInt8), offset: Int) {
        let count = bytes.count
        guard count > 0, let base = bytes.baseAddress else { return }
        let phase = offset & 3
        // The key rotated by `phase`, repeated to fill a machine word, in memory order.
        var key = (mask.0, mask.1, mask.2, mask.3, mask.0, mask.1, mask.2, mask.3, mask.0, mask.1, mask.2, mask.3)
        let pattern = withUnsafeBytes(of: &key) { $0.loadUnaligned(fromByteOffset: phase, as: UInt64.self) }
        var index = 0
        while index + 32 <= count {
            let p = base + index
            p.storeBytes(of: p.loadUnaligned(as: UInt64.self) ^ pattern, as: UInt64.self)
            (p + 8).storeBytes(of: (p + 8).loadUnaligned(as: UInt64.self) ^ pattern, as: UInt64.self)
            (p + 16).storeBytes(of: (p + 16).loadUnaligned(as: UInt64.self) ^ pattern, as: UInt64.self)
            (p + 24).storeBytes(of: (p + 24).loadUnaligned(as: UInt64.self) ^ pattern, as: UInt64.self)
            index += 32
        }
        while index + 8 <= count {
            let p = base + index
            p.storeBytes(of: p.loadUnaligned(as: UInt64.self) ^ pattern, as: UInt64.self)
            index += 8
        }
        withUnsafeBytes(of: &key) { keyBytes in
            while index < count {
                let byte = base.load(fromByteOffset: index, as: UInt8.self) ^ keyBytes[(phase + index) & 3]
                base.storeBytes(of: byte, toByteOffset: index, as: UInt8.self)
                index += 1
            }
        }
    }
}
