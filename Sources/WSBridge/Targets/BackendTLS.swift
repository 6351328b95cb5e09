import Foundation
import NIOSSL

/// TLS to a backend (`tls:` in a YAML target, `--ssl-target`): whom to trust, which name to send and check, and an
/// optional client certificate.
///
/// The value compares by its settings; `load()` adds the ready `NIOSSLContext` (read off the event loop, when the
/// targets are loaded).
public struct BackendTLS: Sendable, Hashable {
    /// PEM bundle of the CAs the backend's certificate must chain to; nil uses the system's CAs.
    public var ca: String?
    /// Name sent in SNI and checked against the certificate; nil uses the backend's host (when it is a name).
    public var serverName: String?
    /// Skip certificate verification (a warning is logged for every session).
    public var insecure: Bool
    /// Client certificate (PEM, chain allowed) and key, for backends that ask for one.
    public var clientCertificate: String?
    public var clientKey: String?
    /// The context built from the settings; nil until `load()`.
    public private(set) var context: NIOSSLContext?

    public init(
        ca: String? = nil,
        serverName: String? = nil,
        insecure: Bool = false,
        clientCertificate: String? = nil,
        clientKey: String? = nil
    ) {
        self.ca = ca
        self.serverName = serverName
        self.insecure = insecure
        self.clientCertificate = clientCertificate
        self.clientKey = clientKey
    }

    public static func == (lhs: BackendTLS, rhs: BackendTLS) -> Bool {
        lhs.ca == rhs.ca && lhs.serverName == rhs.serverName && lhs.insecure == rhs.insecure
            && lhs.clientCertificate == rhs.clientCertificate && lhs.clientKey == rhs.clientKey
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(self.ca)
        hasher.combine(self.serverName)
        hasher.combine(self.insecure)
        hasher.combine(self.clientCertificate)
        hasher.combine(self.clientKey)
    }

    /// The same settings with their context. Throws `TLSFileError` naming the file that cannot be used.
    public func load() throws -> BackendTLS {
        var configuration = TLSConfiguration.makeClientConfiguration()
        configuration.minimumTLSVersion = .tlsv12
        configuration.certificateVerification = self.insecure ? .none : .fullVerification
        if let ca = self.ca {
            guard FileManager.default.isReadableFile(atPath: ca) else {
                throw TLSFileError(file: ca, message: "cannot read the CA file")
            }
            let roots: [NIOSSLCertificate]
            do {
                roots = try NIOSSLCertificate.fromPEMFile(ca)
            } catch {
                throw TLSFileError(file: ca, message: "not a PEM certificate bundle")
            }
            guard !roots.isEmpty else { throw TLSFileError(file: ca, message: "no certificate in the CA file") }
            configuration.trustRoots = .certificates(roots)
        }
        if let certificate = self.clientCertificate {
            guard FileManager.default.isReadableFile(atPath: certificate) else {
                throw TLSFileError(file: certificate, message: "cannot read the client certificate")
            }
            do {
                configuration.certificateChain = try NIOSSLCertificate.fromPEMFile(certificate).map { .certificate($0) }
            } catch {
                throw TLSFileError(file: certificate, message: "not a PEM certificate")
            }
            let keyFile = self.clientKey ?? certificate
            do {
                configuration.privateKey = .privateKey(try NIOSSLPrivateKey(file: keyFile, format: .pem))
            } catch {
                throw TLSFileError(
                    file: keyFile,
                    message: "cannot load the private key (encrypted keys are not supported here)"
                )
            }
        }
        var loaded = self
        do {
            loaded.context = try NIOSSLContext(configuration: configuration)
        } catch {
            throw TLSFileError(
                file: self.clientCertificate ?? self.ca ?? "tls",
                message: "cannot build a TLS context (\(error))"
            )
        }
        return loaded
    }

    /// The name to send in SNI and verify: `server_name`, else the host when it is not an IP address.
    public func serverHostname(for host: String) -> String? {
        if let name = self.serverName { return name }
        return Self.isIPAddress(host) ? nil : host
    }

    static func isIPAddress(_ host: String) -> Bool {
        var v4 = in_addr()
        var v6 = in6_addr()
        return inet_pton(AF_INET, host, &v4) == 1 || inet_pton(AF_INET6, host, &v6) == 1
    }
}
