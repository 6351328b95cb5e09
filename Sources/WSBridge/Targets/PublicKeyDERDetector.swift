/// Recognises bytes that are an ASN.1 DER key (SubjectPublicKeyInfo, PKCS#1 or PKCS#8), so that a public key pasted
/// as bare base64 (as some identity providers display it) is never taken for an HMAC secret: with it as the secret,
/// anyone holding the public key could sign tokens.
///
/// Pure and conservative: bytes starting with a SEQUENCE tag that name an RSA, EC, Ed25519/Ed448 or X25519/X448
/// algorithm OID, or that are exactly one SEQUENCE of INTEGERs (PKCS#1 `RSAPublicKey`), are a key.
public enum PublicKeyDERDetector {
    /// What the bytes look like, for the error message; nil when they do not look like a DER key.
    public static func describe(_ bytes: [UInt8]) -> String? {
        guard bytes.count >= 2, bytes[0] == 0x30 else { return nil }
        for (oid, name) in Self.algorithms where Self.contains(bytes, oid) {
            return "\(name) key in DER (an ASN.1 SEQUENCE naming OID \(Self.dotted(oid)))"
        }
        if let content = Self.sequenceContent(bytes, at: 0), content.end == bytes.count,
            Self.isIntegers(bytes, from: content.start, to: content.end)
        {
            return "RSA public key in DER (PKCS#1: an ASN.1 SEQUENCE of INTEGERs)"
        }
        return nil
    }

    /// Algorithm OIDs as DER (tag, length, value).
    static let algorithms: [([UInt8], String)] = [
        ([0x06, 0x09, 0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x01, 0x01], "an RSA"),
        ([0x06, 0x09, 0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x01, 0x0A], "an RSA-PSS"),
        ([0x06, 0x07, 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x02, 0x01], "an EC"),
        ([0x06, 0x03, 0x2B, 0x65, 0x70], "an Ed25519"),
        ([0x06, 0x03, 0x2B, 0x65, 0x71], "an Ed448"),
        ([0x06, 0x03, 0x2B, 0x65, 0x6E], "an X25519"),
        ([0x06, 0x03, 0x2B, 0x65, 0x6F], "an X448"),
    ]

    static func contains(_ bytes: [UInt8], _ needle: [UInt8]) -> Bool {
        guard bytes.count >= needle.count else { return false }
        for start in 0...(bytes.count - needle.count) where bytes[start..<start + needle.count].elementsEqual(needle) {
            return true
        }
        return false
    }

    /// The content range of a DER element with tag `0x30` at `offset` (definite length), if well-formed.
    static func sequenceContent(_ bytes: [UInt8], at offset: Int) -> (start: Int, end: Int)? {
        guard offset < bytes.count, bytes[offset] == 0x30 else { return nil }
        return Self.element(bytes, at: offset)
    }

    static func element(_ bytes: [UInt8], at offset: Int) -> (start: Int, end: Int)? {
        guard offset + 1 < bytes.count else { return nil }
        let first = Int(bytes[offset + 1])
        var length = 0
        var start = offset + 2
        if first < 0x80 {
            length = first
        } else {
            let count = first & 0x7F
            guard count >= 1, count <= 4, start + count <= bytes.count else { return nil }
            for index in start..<start + count { length = length << 8 | Int(bytes[index]) }
            start += count
        }
        guard start + length <= bytes.count else { return nil }
        return (start, start + length)
    }

    static func isIntegers(_ bytes: [UInt8], from start: Int, to end: Int) -> Bool {
        var offset = start
        var count = 0
        while offset < end {
            guard bytes[offset] == 0x02, let element = Self.element(bytes, at: offset), element.end <= end,
                element.end > element.start
            else { return false }
            offset = element.end
            count += 1
        }
        return count >= 2
    }

    static func dotted(_ oid: [UInt8]) -> String {
        let value = oid.dropFirst(2)
        guard let first = value.first else { return "" }
        var parts = [String(first / 40), String(first % 40)]
        var current = 0
        for byte in value.dropFirst() {
            current = current << 7 | Int(byte & 0x7F)
            if byte & 0x80 == 0 {
                parts.append(String(current))
                current = 0
            }
        }
        return parts.joined(separator: ".")
    }
}
