import Logging
import NIOCore
import NIOHTTP1
import NIOSSL

/// Who the client of one connection is, computed once when its request head arrives from everything the
/// connection learnt until then: the socket's peer and local addresses, a PROXY protocol header, TLS and a client
/// certificate, and a trusted proxy's forwarding header.
struct ClientEndpoint: Sendable, Equatable {
    /// The client's address as far as it is known (the peer, a PROXY header's source, or a trusted
    /// `X-Forwarded-For`/`Forwarded` entry); nil for Unix-socket clients.
    var ip: String?
    /// The client's port; 0 when the address came from a forwarding header.
    var port: Int
    /// The key of per-client limits: the client's IP, or the socket path.
    var key: String
    /// Where the client connected to (the listener, or a PROXY header's destination).
    var destinationIP: String?
    var destinationPort: Int
    /// The client as logged (`client`), and the peer it came through when that is someone else (`peer`).
    var logDescription: String
    var peerDescription: String?
    /// The connection speaks TLS.
    var tls: Bool
    /// Names (common name, subject alternative names) of a verified client certificate.
    var certificateNames: [String]?
    var certificateCommonName: String?

    /// The client of `channel`: its addresses, and the names of its TLS client certificate when it sent one.
    static func make(
        channel: Channel,
        proxy: ProxyHeader.Addresses?,
        tls: Bool,
        headers: HTTPHeaders,
        trusted: TrustedProxies
    ) -> ClientEndpoint {
        var names: [String]?
        var commonName: String?
        if tls, let handler = try? channel.pipeline.syncOperations.handler(type: NIOSSLServerHandler.self),
            let certificate = handler.peerCertificate
        {
            names = CertificateNames.identities(of: certificate)
            commonName = CertificateNames.commonName(of: certificate)
        }
        return Self.make(
            peer: channel.remoteAddress,
            local: channel.localAddress,
            proxy: proxy,
            tls: tls,
            certificateNames: names,
            certificateCommonName: commonName,
            headers: headers,
            trusted: trusted
        )
    }

    /// - Parameters:
    ///   - proxy: the addresses of a PROXY header that was believed (nil without one, or for LOCAL/UNKNOWN).
    ///   - headers: the request's headers, for a trusted proxy's forwarding header.
    static func make(
        peer: SocketAddress?,
        local: SocketAddress?,
        proxy: ProxyHeader.Addresses?,
        tls: Bool,
        certificateNames: [String]? = nil,
        certificateCommonName: String? = nil,
        headers: HTTPHeaders,
        trusted: TrustedProxies
    ) -> ClientEndpoint {
        // One `inet_ntop` for the peer's address serves its IP, key and description.
        let peerIP = peer?.ipAddress.map(Self.unmapped)
        var endpoint = ClientEndpoint(
            ip: peerIP,
            port: peer?.port ?? 0,
            key: peerIP ?? peer?.pathname ?? "unknown",
            destinationIP: local.flatMap { $0.ipAddress.map(Self.unmapped) },
            destinationPort: local?.port ?? 0,
            logDescription: Self.describe(peer, ip: peerIP),
            peerDescription: nil,
            tls: tls,
            certificateNames: certificateNames,
            certificateCommonName: certificateCommonName
        )
        switch proxy {
        case .tcp4(let source, let sourcePort, let destination, let destinationPort)?,
            .tcp6(let source, let sourcePort, let destination, let destinationPort)?:
            let client = Self.unmapped(source)
            endpoint.peerDescription = endpoint.logDescription
            endpoint.logDescription = "\(client.contains(":" as Character) ? "[\(client)]" : client):\(sourcePort)"
            endpoint.ip = client
            endpoint.port = Int(sourcePort)
            endpoint.key = client
            endpoint.destinationIP = Self.unmapped(destination)
            endpoint.destinationPort = Int(destinationPort)
        case .unknown?, nil:
            break
        }
        if !trusted.isEmpty, let peerIP = endpoint.ip {
            let client = trusted.clientAddress(peer: peerIP, headers: headers)
            if client != peerIP {
                endpoint.peerDescription = endpoint.logDescription
                endpoint.logDescription = client
                endpoint.ip = client
                endpoint.port = 0
                endpoint.key = client
            }
        }
        return endpoint
    }

    /// What the connection proved about the client, for the admission policy.
    var identity: UpgradePolicy.ClientIdentity {
        UpgradePolicy.ClientIdentity(authentication: nil, certificateNames: self.certificateNames)
    }

    /// The logger metadata of this client.
    func annotate(_ logger: inout Logger) {
        logger[metadataKey: "client"] = "\(self.logDescription)"
        if let peer = self.peerDescription { logger[metadataKey: "peer"] = "\(peer)" }
        if let names = self.certificateNames {
            logger[metadataKey: "client_cert"] = "\(self.certificateCommonName ?? names.first ?? "?")"
        }
    }

    /// An IP address as logged: IPv4-mapped IPv6 as IPv4.
    static func unmapped(_ ip: String) -> String {
        if ip.hasPrefix("::ffff:"), ip.contains("." as Character) { return String(ip.dropFirst(7)) }
        return ip
    }

    /// The client's address without its port, the key of per-client limits (IPv4-mapped IPv6 as IPv4).
    static func key(_ address: SocketAddress?) -> String {
        guard let ip = address?.ipAddress else { return address?.pathname ?? "unknown" }
        return Self.unmapped(ip)
    }

    /// `ip:port`, `[v6]:port` (IPv4-mapped IPv6 shown as IPv4), or a Unix path.
    static func describe(_ address: SocketAddress?) -> String {
        Self.describe(address, ip: address?.ipAddress.map(Self.unmapped))
    }

    /// `describe` given the address's IP as `unmapped` returns it (nil for a Unix path).
    private static func describe(_ address: SocketAddress?, ip: String?) -> String {
        guard let address else { return "unknown" }
        guard let ip, let port = address.port else {
            let path = address.pathname ?? ""
            return path.isEmpty ? "unix" : "unix:\(path)"
        }
        return ip.contains(":" as Character) ? "[\(ip)]:\(port)" : "\(ip):\(port)"
    }
}
