/// An IPv4 or IPv6 network in CIDR notation (`10.0.0.0/8`, `2001:db8::/32`, or a single address).
///
/// Written by hand: none of the available packages parses addresses into comparable bytes without a socket.
public struct CIDR: Hashable, Sendable, CustomStringConvertible {
    public let bytes: [UInt8]
    public let prefixLength: Int
    public let description: String

    public init?(_ text: String) {
        let parts = text.split(separator: "/", maxSplits: 1, omittingEmptySubsequences: false)
        guard let bytes = Self.parseAddress(String(parts[0])) else { return nil }
        let maxLength = bytes.count * 8
        var length = maxLength
        if parts.count == 2 {
            guard let parsed = Int(parts[1]), (0...maxLength).contains(parsed) else { return nil }
            length = parsed
        }
        self.bytes = bytes
        self.prefixLength = length
        self.description = text
    }

    /// Whether `address` (textual IPv4 or IPv6; IPv4-mapped IPv6 counts as IPv4) lies in this network.
    public func contains(_ address: String) -> Bool {
        guard var candidate = Self.parseAddress(address) else { return false }
        if candidate.count == 16, self.bytes.count == 4,
            candidate[0..<12] == [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF]
        {
            candidate = Array(candidate[12...])
        }
        guard candidate.count == self.bytes.count else { return false }
        var remaining = self.prefixLength
        for index in 0..<self.bytes.count where remaining > 0 {
            let bits = min(8, remaining)
            let mask = UInt8(truncatingIfNeeded: 0xFF << (8 - bits))
            if candidate[index] & mask != self.bytes[index] & mask { return false }
            remaining -= bits
        }
        return true
    }

    /// 4 bytes for IPv4, 16 for IPv6 (with an optional zone `%eth0`, ignored); nil when not an address.
    static func parseAddress(_ text: String) -> [UInt8]? {
        var text = Substring(text)
        if let zone = text.firstIndex(of: "%") { text = text[..<zone] }
        if !text.contains(":" as Character) { return Self.parseIPv4(text) }
        var head: [UInt16] = []
        var tail: [UInt16] = []
        var ipv4Tail: [UInt8] = []
        let halves = text.components(separatedBy: "::")
        guard halves.count <= 2 else { return nil }
        func groups(_ part: String, allowIPv4: Bool) -> [UInt16]? {
            guard !part.isEmpty else { return [] }
            var result: [UInt16] = []
            let pieces = part.split(separator: ":", omittingEmptySubsequences: false)
            for (index, piece) in pieces.enumerated() {
                if allowIPv4 && index == pieces.count - 1 && piece.contains("." as Character) {
                    guard let v4 = Self.parseIPv4(piece) else { return nil }
                    ipv4Tail = v4
                    continue
                }
                guard (1...4).contains(piece.count), let value = UInt16(piece, radix: 16) else { return nil }
                result.append(value)
            }
            return result
        }
        if halves.count == 2 {
            guard let h = groups(halves[0], allowIPv4: false), let t = groups(halves[1], allowIPv4: true) else {
                return nil
            }
            head = h
            tail = t
            guard head.count + tail.count + ipv4Tail.count / 2 < 8 else { return nil }
        } else {
            guard let all = groups(halves[0], allowIPv4: true), all.count + ipv4Tail.count / 2 == 8 else { return nil }
            head = all
        }
        let missing = 8 - head.count - tail.count - ipv4Tail.count / 2
        let words = head + Array(repeating: 0, count: missing) + tail
        var bytes = words.flatMap { [UInt8($0 >> 8), UInt8($0 & 0xFF)] }
        bytes += ipv4Tail
        return bytes.count == 16 ? bytes : nil
    }

    private static func parseIPv4<S: StringProtocol>(_ text: S) -> [UInt8]? {
        let parts = text.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 4 else { return nil }
        var bytes: [UInt8] = []
        for part in parts {
            guard (1...3).contains(part.count), part.allSatisfy(\.isASCII), let value = UInt8(part) else { return nil }
            bytes.append(value)
        }
        return bytes
    }
}
