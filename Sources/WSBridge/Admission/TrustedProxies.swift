import NIOHTTP1

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// The networks of proxies whose forwarding header is believed (`--trusted-proxy CIDR`), and which header that is
/// (`--trusted-proxy-header xff|forwarded`).
///
/// Only the one header the proxies are known to write is read: a proxy that appends `X-Forwarded-For` (nginx's
/// `$proxy_add_x_forwarded_for`, HAProxy's `option forwardfor`) passes a client's own `Forwarded` header through
/// untouched, so believing it would let any client pick its address. The client is found walking that header's
/// chain from the nearest hop backwards: the first address that is not a trusted proxy is the client. Headers from
/// a peer outside the list are ignored.
public struct TrustedProxies: Sendable, Equatable {
    /// The forwarding header the trusted proxies write.
    public enum Header: String, Sendable, Equatable, CaseIterable {
        /// `X-Forwarded-For` (several headers joined in order), what nginx and HAProxy append.
        case xff
        /// `Forwarded` `for=` values (RFC 7239).
        case forwarded
    }

    private var networks: [CIDR]
    /// The only header the client's address is taken from.
    public var header: Header

    public struct CIDRError: Error, CustomStringConvertible, Sendable {
        public var description: String
    }

    /// `10.0.0.0/8`, `192.0.2.7` (one address), `2001:db8::/32`.
    public init(_ cidrs: [String], header: Header = .xff) throws {
        self.header = header
        self.networks = try cidrs.map { text in
            guard let network = CIDR(text) else {
                throw CIDRError(description: "'\(text)' is not an IP address or CIDR network (such as 10.0.0.0/8)")
            }
            return network
        }
    }

    /// No trusted proxy: every forwarding header is ignored.
    public static let none = TrustedProxies(networks: [], header: .xff)

    private init(networks: [CIDR], header: Header) {
        self.networks = networks
        self.header = header
    }

    public var isEmpty: Bool { self.networks.isEmpty }

    /// Whether `ip` (IPv4, IPv6, IPv4-mapped IPv6) is a trusted proxy.
    public func contains(_ ip: String) -> Bool {
        self.networks.contains { $0.contains(ip) }
    }

    /// The client's address for a request from `peer`: from the configured header only when the peer is trusted,
    /// else the peer itself. A malformed entry stops the walk at the hop before it.
    public func clientAddress(peer: String, headers: HTTPHeaders) -> String {
        guard self.contains(peer) else { return peer }
        let chain: [String]
        switch self.header {
        case .forwarded:
            chain = Self.forwardedFor(headers)
        case .xff:
            chain = headers["x-forwarded-for"].flatMap { $0.split(separator: ",") }.map { $0.trimmingWhitespace() }
        }
        var client = peer
        for entry in chain.reversed() {
            guard let ip = Self.normalized(entry) else { return client }
            client = ip
            if !self.contains(ip) { return ip }
        }
        return client
    }

    /// The `for=` values of `Forwarded` headers (RFC 7239), in order, brackets, quotes and ports removed.
    static func forwardedFor(_ headers: HTTPHeaders) -> [String] {
        var result: [String] = []
        for value in headers["forwarded"] {
            for element in value.split(separator: ",") {
                for pair in element.split(separator: ";") {
                    let parts = pair.split(separator: "=", maxSplits: 1)
                    guard parts.count == 2, parts[0].trimmingWhitespace().lowercased() == "for" else { continue }
                    var node = parts[1].trimmingWhitespace()
                    if node.count >= 2, node.hasPrefix("\""), node.hasSuffix("\"") {
                        node = String(node.dropFirst().dropLast())
                    }
                    if node.hasPrefix("["), let close = node.firstIndex(of: "]") {
                        node = String(node[node.index(after: node.startIndex)..<close])
                    } else if node.filter({ $0 == ":" }).count == 1, let colon = node.firstIndex(of: ":") {
                        node = String(node[..<colon])
                    }
                    result.append(node)
                }
            }
        }
        return result
    }

    /// The address in the form used for logs and limits (IPv4-mapped IPv6 as IPv4), or nil if it is not one.
    static func normalized(_ text: String) -> String? {
        guard let bytes = Self.bytes(of: text) else { return nil }
        if bytes.count == 4 { return ProxyHeader.format(bytes, v6: false) }
        return ProxyHeader.format(bytes, v6: true)
    }

    /// 4 bytes for IPv4 (IPv4-mapped IPv6 included), 16 for IPv6.
    static func bytes(of text: String) -> [UInt8]? {
        var v4 = in_addr()
        if inet_pton(AF_INET, text, &v4) == 1 { return withUnsafeBytes(of: &v4) { Array($0) } }
        var v6 = in6_addr()
        guard inet_pton(AF_INET6, text, &v6) == 1 else { return nil }
        let bytes = withUnsafeBytes(of: &v6) { Array($0) }
        if bytes[0..<10].allSatisfy({ $0 == 0 }), bytes[10] == 0xFF, bytes[11] == 0xFF { return Array(bytes[12...]) }
        return bytes
    }
}
