import NIOCore

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// The byte stream every scenario moves: a fixed pseudo-random block of `period` bytes, repeated. Any receiver
/// that knows its position in the stream can check every byte it gets with `memcmp`, which costs far less than
/// the relay being measured.
enum Pattern {
    static let period = 1 << 20

    /// The block twice in a row, so that a window of up to `period` bytes at any offset is contiguous.
    nonisolated(unsafe) static let doubled: UnsafeMutableRawBufferPointer = {
        let memory = UnsafeMutableRawBufferPointer.allocate(byteCount: 2 * period, alignment: 16)
        var state: UInt64 = 0x9E37_79B9_7F4A_7C15
        for index in stride(from: 0, to: period, by: 8) {
            state ^= state << 13
            state ^= state >> 7
            state ^= state << 17
            memory.storeBytes(of: state, toByteOffset: index, as: UInt64.self)
        }
        memcpy(memory.baseAddress! + period, memory.baseAddress!, period)
        return memory
    }()

    /// The pattern as a ByteBuffer (twice the period), for zero-copy slices.
    static func buffer(allocator: ByteBufferAllocator) -> ByteBuffer {
        var buffer = allocator.buffer(capacity: 2 * period)
        buffer.writeBytes(UnsafeRawBufferPointer(doubled))
        return buffer
    }

    /// `length` (at most `period`) bytes of the stream starting at `offset`.
    static func window(at offset: UInt64, length: Int) -> UnsafeRawBufferPointer {
        precondition(length <= period)
        let start = Int(offset % UInt64(period))
        return UnsafeRawBufferPointer(rebasing: UnsafeRawBufferPointer(doubled)[start..<(start + length)])
    }
}

/// Checks that received bytes continue the pattern stream.
struct StreamVerifier {
    private(set) var offset: UInt64 = 0
    private(set) var mismatches = 0

    /// Verifies and counts `bytes`; returns false on the first difference.
    @discardableResult
    mutating func consume(_ bytes: UnsafeRawBufferPointer) -> Bool {
        var done = 0
        while done < bytes.count {
            let count = min(bytes.count - done, Pattern.period)
            let expected = Pattern.window(at: self.offset, length: count)
            if memcmp(bytes.baseAddress! + done, expected.baseAddress!, count) != 0 {
                self.mismatches += 1
                self.offset += UInt64(bytes.count - done)
                return false
            }
            done += count
            self.offset += UInt64(count)
        }
        return true
    }

    @discardableResult
    mutating func consume(_ buffer: ByteBuffer) -> Bool {
        buffer.withUnsafeReadableBytes { self.consume($0) }
    }
}

/// Client frame building (RFC 6455 §5.2): a masked frame with the given payload.
enum Frames {
    static func appendHeader(_ buffer: inout ByteBuffer, opcode: UInt8, length: Int, mask: UInt32?) {
        buffer.writeInteger(UInt8(0x80 | opcode))
        let maskBit: UInt8 = mask == nil ? 0 : 0x80
        if length < 126 {
            buffer.writeInteger(maskBit | UInt8(length))
        } else if length <= 0xFFFF {
            buffer.writeInteger(maskBit | 126)
            buffer.writeInteger(UInt16(length))
        } else {
            buffer.writeInteger(maskBit | 127)
            buffer.writeInteger(UInt64(length))
        }
        if let mask { buffer.writeInteger(mask) }
    }

    /// Appends a masked frame carrying `payload`.
    static func appendMasked(_ buffer: inout ByteBuffer, opcode: UInt8, payload: UnsafeRawBufferPointer, mask: UInt32) {
        self.appendHeader(&buffer, opcode: opcode, length: payload.count, mask: mask)
        let start = buffer.writerIndex
        buffer.writeBytes(payload)
        let skip = start - buffer.readerIndex
        buffer.withUnsafeMutableReadableBytes { all in
            let bytes = UnsafeMutableRawBufferPointer(rebasing: all[skip...])
            xorMask(bytes, mask: mask)
        }
    }

    /// XORs with the 4-byte key in network order (word-wise).
    static func xorMask(_ bytes: UnsafeMutableRawBufferPointer, mask: UInt32) {
        let key = mask.bigEndian  // the key's bytes in memory order
        let word = UInt64(key) | (UInt64(key) << 32)
        var index = 0
        let count = bytes.count
        while index + 8 <= count {
            let value = bytes.loadUnaligned(fromByteOffset: index, as: UInt64.self) ^ word
            bytes.storeBytes(of: value, toByteOffset: index, as: UInt64.self)
            index += 8
        }
        withUnsafeBytes(of: key) { keyBytes in
            while index < count {
                bytes[index] ^= keyBytes[index & 3]
                index += 1
            }
        }
    }

    /// A masked Close frame with code 1000.
    static func close(allocator: ByteBufferAllocator, mask: UInt32 = 0x3A5C_96E1) -> ByteBuffer {
        var buffer = allocator.buffer(capacity: 8)
        var code = UInt16(1000).bigEndian
        withUnsafeBytes(of: &code) { appendMasked(&buffer, opcode: 0x8, payload: $0, mask: mask) }
        return buffer
    }
}
