/// One frame the server sent, read from raw bytes: the one frame reader of the tests.
struct ServerFrame: Equatable {
    var fin: Bool
    var opcode: UInt8
    var masked: Bool
    var payload: [UInt8]

    /// Every complete frame at the start of `bytes` (an incomplete one at the end is left out).
    static func parse(_ bytes: [UInt8]) -> [ServerFrame] {
        var frames: [ServerFrame] = []
        var index = 0
        while index + 2 <= bytes.count {
            var length = Int(bytes[index + 1] & 0x7F)
            var start = index + 2
            if length == 126 {
                guard start + 2 <= bytes.count else { break }
                length = Int(bytes[index + 2]) << 8 | Int(bytes[index + 3])
                start += 2
            } else if length == 127 {
                guard start + 8 <= bytes.count else { break }
                length = (0..<8).reduce(0) { $0 << 8 | Int(bytes[index + 2 + $1]) }
                start += 8
            }
            guard start + length <= bytes.count else { break }
            frames.append(
                ServerFrame(
                    fin: bytes[index] & 0x80 != 0,
                    opcode: bytes[index] & 0x0F,
                    masked: bytes[index + 1] & 0x80 != 0,
                    payload: Array(bytes[start..<start + length])
                )
            )
            index = start + length
        }
        return frames
    }
}
