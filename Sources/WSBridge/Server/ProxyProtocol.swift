#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// PROXY protocol version sent to a backend (`proxy_protocol: v1|v2`).
public enum ProxyProtocolVersion: String, Sendable, Hashable {
    case v1
    case v2
}

/// A PROXY protocol header (HAProxy's spec, versions 1 and 2): a pure value with a strict parser and an exact
/// encoder. No I/O, so every malformed input can be unit-tested and fuzzed.
public struct ProxyHeader: Sendable, Equatable {
    /// The connection's endpoints as the proxy saw them.
    public enum Addresses: Sendable, Equatable {
        /// No address information: v1 `UNKNOWN`, v2 `LOCAL` or an unspecified/unsupported family. The receiver uses
        /// the real peer address.
        case unknown
        case tcp4(source: String, sourcePort: UInt16, destination: String, destinationPort: UInt16)
        case tcp6(source: String, sourcePort: UInt16, destination: String, destinationPort: UInt16)
    }

    public var version: ProxyProtocolVersion
    public var addresses: Addresses

    public init(version: ProxyProtocolVersion, addresses: Addresses) {
        self.version = version
        self.addresses = addresses
    }

    /// The source address and port, when the header has one.
    public var source: (ip: String, port: UInt16)? {
        switch self.addresses {
        case .unknown: return nil
        case .tcp4(let ip, let port, _, _), .tcp6(let ip, let port, _, _): return (ip, port)
        }
    }

    public enum ParseResult: Sendable, Equatable {
        /// A prefix of a possibly valid header: read more.
        case incomplete
        /// A header of `length` bytes.
        case header(ProxyHeader, length: Int)
        case invalid(String)
    }

    static let v2Signature: [UInt8] = [0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A]
    static let v1Prefix: [UInt8] = Array("PROXY ".utf8)
    /// The longest v1 line, CRLF included (the spec's bound).
    static let v1MaxLength = 107

    /// Parses the header at the start of `bytes`.
    public static func parse<Bytes: RandomAccessCollection>(_ bytes: Bytes) -> ParseResult
    where Bytes.Element == UInt8, Bytes.Index == Int {
        let bytes = Array(bytes)
        if bytes.isEmpty { return .incomplete }
        if bytes[0] == Self.v2Signature[0] {
            let n = min(bytes.count, Self.v2Signature.count)
            guard Array(bytes[0..<n]) == Array(Self.v2Signature[0..<n]) else {
                return .invalid("not a PROXY protocol header")
            }
            return Self.parseV2(bytes)
        }
        let n = min(bytes.count, Self.v1Prefix.count)
        guard Array(bytes[0..<n]) == Array(Self.v1Prefix[0..<n]) else { return .invalid("not a PROXY protocol header") }
        return Self.parseV1(bytes)
    }

    private static func parseV1(_ bytes: [UInt8]) -> ParseResult {
        guard let cr = bytes.firstIndex(of: 0x0D) else {
            if bytes.count >= Self.v1MaxLength { return .invalid("PROXY v1 line too long") }
            if bytes.contains(0x0A) { return .invalid("PROXY v1 line must end with CRLF") }
            return .incomplete
        }
        guard cr + 2 <= Self.v1MaxLength else { return .invalid("PROXY v1 line too long") }
        guard cr + 1 < bytes.count else { return .incomplete }
        guard bytes[cr + 1] == 0x0A else { return .invalid("PROXY v1 line must end with CRLF") }
        let line = bytes[0..<cr]
        guard !line.contains(0x0A), line.allSatisfy({ $0 >= 0x20 && $0 < 0x7F }) else {
            return .invalid("PROXY v1 line has control or non-ASCII bytes")
        }
        let text = String(decoding: line, as: UTF8.self)
        let fields = text.split(separator: " ", omittingEmptySubsequences: false).map(String.init)
        let length = cr + 2
        guard fields.count >= 2 else { return .invalid("PROXY v1 line has no protocol") }
        switch fields[1] {
        case "UNKNOWN":
            return .header(ProxyHeader(version: .v1, addresses: .unknown), length: length)
        case "TCP4", "TCP6":
            guard fields.count == 6 else { return .invalid("PROXY v1 \(fields[1]) needs 4 fields") }
            let v6 = fields[1] == "TCP6"
            guard let source = Self.canonicalIP(fields[2], v6: v6),
                let destination = Self.canonicalIP(fields[3], v6: v6)
            else {
                return .invalid("PROXY v1 address is not \(v6 ? "IPv6" : "IPv4")")
            }
            guard let sourcePort = Self.port(fields[4]), let destinationPort = Self.port(fields[5]) else {
                return .invalid("PROXY v1 port is not a number 0-65535")
            }
            let addresses: Addresses =
                v6
                ? .tcp6(
                    source: source,
                    sourcePort: sourcePort,
                    destination: destination,
                    destinationPort: destinationPort
                )
                : .tcp4(
                    source: source,
                    sourcePort: sourcePort,
                    destination: destination,
                    destinationPort: destinationPort
                )
            return .header(ProxyHeader(version: .v1, addresses: addresses), length: length)
        default:
            return .invalid("PROXY v1 protocol must be TCP4, TCP6 or UNKNOWN")
        }
    }

    private static func parseV2(_ bytes: [UInt8]) -> ParseResult {
        guard bytes.count >= 16 else { return .incomplete }
        let versionCommand = bytes[12]
        guard versionCommand >> 4 == 2 else { return .invalid("PROXY v2 version must be 2") }
        let command = versionCommand & 0x0F
        guard command <= 1 else { return .invalid("PROXY v2 command must be LOCAL or PROXY") }
        let family = bytes[13]
        let length = Int(bytes[14]) << 8 | Int(bytes[15])
        guard bytes.count >= 16 + length else { return .incomplete }
        let body = Array(bytes[16..<(16 + length)])
        let total = 16 + length
        if command == 0 {  // LOCAL: the proxy's own connection (health checks); addresses are ignored
            return .header(ProxyHeader(version: .v2, addresses: .unknown), length: total)
        }
        switch family {
        case 0x00:  // UNSPEC
            return .header(ProxyHeader(version: .v2, addresses: .unknown), length: total)
        case 0x11:  // TCP over IPv4
            guard body.count >= 12 else { return .invalid("PROXY v2 TCP4 addresses are truncated") }
            let source = Self.format(Array(body[0..<4]), v6: false)
            let destination = Self.format(Array(body[4..<8]), v6: false)
            return .header(
                ProxyHeader(
                    version: .v2,
                    addresses: .tcp4(
                        source: source,
                        sourcePort: Self.uint16(body, 8),
                        destination: destination,
                        destinationPort: Self.uint16(body, 10)
                    )
                ),
                length: total
            )
        case 0x21:  // TCP over IPv6
            guard body.count >= 36 else { return .invalid("PROXY v2 TCP6 addresses are truncated") }
            let source = Self.format(Array(body[0..<16]), v6: true)
            let destination = Self.format(Array(body[16..<32]), v6: true)
            return .header(
                ProxyHeader(
                    version: .v2,
                    addresses: .tcp6(
                        source: source,
                        sourcePort: Self.uint16(body, 32),
                        destination: destination,
                        destinationPort: Self.uint16(body, 34)
                    )
                ),
                length: total
            )
        case 0x31:  // Unix stream: no IP address to take
            guard body.count >= 216 else { return .invalid("PROXY v2 UNIX addresses are truncated") }
            return .header(ProxyHeader(version: .v2, addresses: .unknown), length: total)
        default:
            return .invalid("PROXY v2 family/protocol 0x\(String(family, radix: 16)) is not a stream protocol")
        }
    }

    /// The header's bytes.
    public func encoded() -> [UInt8] {
        switch self.version {
        case .v1:
            switch self.addresses {
            case .unknown:
                return Array("PROXY UNKNOWN\r\n".utf8)
            case .tcp4(let s, let sp, let d, let dp):
                return Array("PROXY TCP4 \(s) \(d) \(sp) \(dp)\r\n".utf8)
            case .tcp6(let s, let sp, let d, let dp):
                return Array("PROXY TCP6 \(s) \(d) \(sp) \(dp)\r\n".utf8)
            }
        case .v2:
            var bytes = Self.v2Signature
            switch self.addresses {
            case .unknown:
                bytes += [0x20, 0x00, 0x00, 0x00]  // LOCAL, UNSPEC, no addresses
            case .tcp4(let s, let sp, let d, let dp):
                bytes += [0x21, 0x11, 0x00, 12]
                bytes += Self.binary(s, v6: false) + Self.binary(d, v6: false)
                bytes += [UInt8(sp >> 8), UInt8(sp & 0xFF), UInt8(dp >> 8), UInt8(dp & 0xFF)]
            case .tcp6(let s, let sp, let d, let dp):
                bytes += [0x21, 0x21, 0x00, 36]
                bytes += Self.binary(s, v6: true) + Self.binary(d, v6: true)
                bytes += [UInt8(sp >> 8), UInt8(sp & 0xFF), UInt8(dp >> 8), UInt8(dp & 0xFF)]
            }
            return bytes
        }
    }

    /// The header for a connection from `source` to `destination` (IP strings and ports). Mixed families are
    /// expressed in IPv6 (IPv4-mapped); a missing address gives `UNKNOWN`/`LOCAL`.
    public static func forConnection(
        version: ProxyProtocolVersion,
        source: (ip: String, port: Int)?,
        destination: (ip: String, port: Int)?
    ) -> ProxyHeader {
        guard let source, let destination else { return ProxyHeader(version: version, addresses: .unknown) }
        let sourcePort = UInt16(clamping: source.port)
        let destinationPort = UInt16(clamping: destination.port)
        let s4 = Self.canonicalIP(source.ip, v6: false)
        let d4 = Self.canonicalIP(destination.ip, v6: false)
        if let s4, let d4 {
            return ProxyHeader(
                version: version,
                addresses: .tcp4(source: s4, sourcePort: sourcePort, destination: d4, destinationPort: destinationPort)
            )
        }
        let s6 = s4.map { "::ffff:\($0)" } ?? Self.canonicalIP(source.ip, v6: true)
        let d6 = d4.map { "::ffff:\($0)" } ?? Self.canonicalIP(destination.ip, v6: true)
        guard let s6 = s6.flatMap({ Self.canonicalIP($0, v6: true) }),
            let d6 = d6.flatMap({ Self.canonicalIP($0, v6: true) })
        else {
            return ProxyHeader(version: version, addresses: .unknown)
        }
        return ProxyHeader(
            version: version,
            addresses: .tcp6(source: s6, sourcePort: sourcePort, destination: d6, destinationPort: destinationPort)
        )
    }

    // MARK: helpers

    /// The address in canonical form, or nil when it is not a valid address of that family. IPv4 must be four
    /// decimal numbers without leading zeros.
    static func canonicalIP(_ text: String, v6: Bool) -> String? {
        if v6 {
            var address = in6_addr()
            guard !text.isEmpty, inet_pton(AF_INET6, text, &address) == 1 else { return nil }
            return Self.format(withUnsafeBytes(of: &address) { Array($0) }, v6: true)
        }
        let parts = text.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 4 else { return nil }
        for part in parts {
            guard !part.isEmpty, part.count <= 3, part.allSatisfy({ $0.isASCII && $0.isNumber }),
                part == "0" || !part.hasPrefix("0"), let value = Int(part), value <= 255
            else { return nil }
        }
        return text
    }

    private static func port(_ text: String) -> UInt16? {
        guard !text.isEmpty, text.count <= 5, text.allSatisfy({ $0.isASCII && $0.isNumber }),
            text == "0" || !text.hasPrefix("0"),
            let value = Int(text), value <= 65535
        else { return nil }
        return UInt16(value)
    }

    private static func uint16(_ bytes: [UInt8], _ offset: Int) -> UInt16 {
        UInt16(bytes[offset]) << 8 | UInt16(bytes[offset + 1])
    }

    static func format(_ bytes: [UInt8], v6: Bool) -> String {
        var buffer = [CChar](repeating: 0, count: 64)
        let family = v6 ? AF_INET6 : AF_INET
        _ = bytes.withUnsafeBytes { raw in inet_ntop(family, raw.baseAddress, &buffer, socklen_t(buffer.count)) }
        return String(cString: buffer)
    }

    private static func binary(_ ip: String, v6: Bool) -> [UInt8] {
        if v6 {
            var address = in6_addr()
            _ = inet_pton(AF_INET6, ip, &address)
            return withUnsafeBytes(of: &address) { Array($0) }
        }
        var address = in_addr()
        _ = inet_pton(AF_INET, ip, &address)
        return withUnsafeBytes(of: &address) { Array($0) }
    }
}
