/// Incremental UTF-8 validation for text messages that arrive in pieces (fragments and partial reads).
///
/// Written by hand because the standard library only validates complete buffers; this is the
/// well-known DFA of Björn Höhrmann ("Flexible and Economical UTF-8 Decoder"), which rejects
/// overlong forms, surrogates and code points above U+10FFFF, and fails as early as the first bad byte
/// (what the Autobahn suite calls "fail fast").
public struct UTF8Validator: Sendable {
    private var state: UInt8 = UTF8Validator.accept

    static let accept: UInt8 = 0
    static let reject: UInt8 = 12

    public init() {}

    /// True between complete code points.
    public var isComplete: Bool { self.state == Self.accept }

    /// Feeds bytes; returns false as soon as the input cannot be valid UTF-8.
    public mutating func feed<Bytes: Sequence>(_ bytes: Bytes) -> Bool where Bytes.Element == UInt8 {
        var state = self.state
        for byte in bytes {
            let type = Self.byteClass[Int(byte)]
            state = Self.transitions[Int(state) + Int(type)]
            if state == Self.reject {
                self.state = state
                return false
            }
        }
        self.state = state
        return true
    }

    /// Fast path for a raw buffer: skips ASCII eight bytes at a time while between code points.
    public mutating func feed(_ buffer: UnsafeRawBufferPointer) -> Bool {
        var index = 0
        let count = buffer.count
        var state = self.state
        while index < count {
            if state == Self.accept {
                while index + 8 <= count {
                    let word = buffer.loadUnaligned(fromByteOffset: index, as: UInt64.self)
                    if word & 0x8080_8080_8080_8080 != 0 { break }
                    index += 8
                }
                if index >= count { break }
            }
            let type = Self.byteClass[Int(buffer[index])]
            state = Self.transitions[Int(state) + Int(type)]
            if state == Self.reject {
                self.state = state
                return false
            }
            index += 1
        }
        self.state = state
        return true
    }

    private static let byteClass: [UInt8] = [
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9,
        7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7,
        8, 8, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2,
        10, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 4, 3, 3, 11, 6, 6, 6, 5, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8,
    ]

    private static let transitions: [UInt8] = [
        0, 12, 24, 36, 60, 96, 84, 12, 12, 12, 48, 72, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12,
        12, 0, 12, 12, 12, 12, 12, 0, 12, 0, 12, 12, 12, 24, 12, 12, 12, 12, 12, 24, 12, 24, 12, 12,
        12, 12, 12, 12, 12, 12, 12, 24, 12, 12, 12, 12, 12, 24, 12, 12, 12, 12, 12, 12, 12, 24, 12, 12,
        12, 12, 12, 12, 12, 12, 12, 36, 12, 36, 12, 12, 12, 36, 12, 12, 12, 12, 12, 36, 12, 36, 12, 12,
        12, 36, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12,
    ]
}
