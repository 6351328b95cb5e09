import NIOCore

/// Builds client frames byte by byte, the way a browser would send them (or, for negative tests, wouldn't).
struct FrameBuilder {
    var fin = true
    var rsv: UInt8 = 0
    var opcode: UInt8
    var masked = true
    var mask: [UInt8] = [0x37, 0xFA, 0x21, 0x3D]
    var payload: [UInt8]
    /// Overrides the length field (for lying headers).
    var declaredLength: UInt64?

    init(opcode: UInt8, payload: [UInt8] = [], fin: Bool = true) {
        self.opcode = opcode
        self.payload = payload
        self.fin = fin
    }

    static func binary(_ payload: [UInt8], fin: Bool = true) -> FrameBuilder {
        .init(opcode: 0x2, payload: payload, fin: fin)
    }
    static func text(_ text: String, fin: Bool = true) -> FrameBuilder {
        .init(opcode: 0x1, payload: Array(text.utf8), fin: fin)
    }
    static func close(_ code: UInt16?, _ reason: [UInt8] = []) -> FrameBuilder {
        var payload: [UInt8] = []
        if let code { payload = [UInt8(code >> 8), UInt8(code & 0xFF)] + reason }
        return .init(opcode: 0x8, payload: payload)
    }

    var bytes: [UInt8] {
        var out: [UInt8] = [(fin ? 0x80 : 0) | (rsv << 4) | opcode]
        let length = declaredLength ?? UInt64(payload.count)
        let maskBit: UInt8 = masked ? 0x80 : 0
        if length < 126 {
            out.append(maskBit | UInt8(length))
        } else if length <= 0xFFFF {
            out.append(maskBit | 126)
            out += [UInt8(length >> 8), UInt8(length & 0xFF)]
        } else {
            out.append(maskBit | 127)
            for shift in stride(from: 56, through: 0, by: -8) { out.append(UInt8((length >> UInt64(shift)) & 0xFF)) }
        }
        if masked {
            out += mask
            out += payload.enumerated().map { $0.element ^ mask[$0.offset % 4] }
        } else {
            out += payload
        }
        return out
    }

    var buffer: ByteBuffer { ByteBuffer(bytes: self.bytes) }
}
