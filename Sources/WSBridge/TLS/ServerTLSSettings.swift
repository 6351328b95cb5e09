import CBoringSSLCiphers
import Foundation
import NIOCore
import NIOSSL

/// How the listener terminates TLS (`--cert`, `--key`, …): the files to load and the rules for handshakes.
///
/// A value of paths and options; `load()` reads the files into a `ServerTLSContext` (done off the event loop, at
/// start and on every reload).
public struct ServerTLSSettings: Sendable, Equatable {
    /// One certificate chain with its key. The first pair is the default; the others answer the server names
    /// (SNI) their certificates are issued for.
    public struct CertificatePair: Sendable, Equatable {
        /// PEM file: the certificate first, then its chain (intermediates).
        public var certificate: String
        /// PEM file with the private key; nil when it follows the certificate in the same file.
        public var key: String?

        public init(certificate: String, key: String? = nil) {
            self.certificate = certificate
            self.key = key
        }
    }

    public var certificates: [CertificatePair]
    /// The passphrase of encrypted keys, given directly (from the environment).
    public var keyPassword: [UInt8]?
    /// A file holding the passphrase (its first line); re-read on every reload.
    public var keyPasswordFile: String?
    /// Oldest TLS version accepted (default 1.2).
    public var minimumVersion: TLSVersion
    /// An OpenSSL cipher string for TLS 1.2 and below (TLS 1.3 suites are not configurable in BoringSSL).
    public var ciphers: String?
    /// Refuse connections that do not start with a TLS handshake.
    public var sslOnly: Bool
    /// Require a client certificate signed by `clientCA` (mutual TLS); implies `sslOnly`.
    public var verifyClient: Bool
    /// PEM bundle of the CAs client certificates must chain to; nil uses the system's CAs.
    public var clientCA: String?
    /// How long a TLS close waits for the peer's close_notify.
    public var shutdownTimeout: TimeAmount

    public init(
        certificates: [CertificatePair],
        keyPassword: [UInt8]? = nil,
        keyPasswordFile: String? = nil,
        minimumVersion: TLSVersion = .tlsv12,
        ciphers: String? = nil,
        sslOnly: Bool = false,
        verifyClient: Bool = false,
        clientCA: String? = nil,
        shutdownTimeout: TimeAmount = .seconds(2)
    ) {
        self.certificates = certificates
        self.keyPassword = keyPassword
        self.keyPasswordFile = keyPasswordFile
        self.minimumVersion = minimumVersion
        self.ciphers = ciphers
        self.sslOnly = sslOnly
        self.verifyClient = verifyClient
        self.clientCA = clientCA
        self.shutdownTimeout = shutdownTimeout
    }

    /// Plain connections are refused (`--ssl-only`, or `--verify-client`, which a plain connection cannot satisfy).
    public var refusesPlain: Bool { self.sslOnly || self.verifyClient }

    /// `--ssl-version`: websockify's names (`tlsv1_1`, `tlsv1_2`, `tlsv1_3`, `default`) and `1.2`-style ones.
    public static func parseVersion(_ text: String) -> TLSVersion? {
        switch text.lowercased() {
        case "default", "tlsv1_2", "tlsv1.2", "1.2", "tls1.2", "tls1_2": return .tlsv12
        case "tlsv1_3", "tlsv1.3", "1.3", "tls1.3", "tls1_3": return .tlsv13
        case "tlsv1_1", "tlsv1.1", "1.1", "tls1.1", "tls1_1": return .tlsv11
        case "tlsv1", "tlsv1_0", "tlsv1.0", "1.0", "tls1", "tls1.0": return .tlsv1
        default: return nil
        }
    }

    /// Every file the settings read, for change detection.
    public var files: [String] {
        var files: [String] = []
        for pair in self.certificates {
            files.append(pair.certificate)
            if let key = pair.key { files.append(key) }
        }
        if let file = self.keyPasswordFile { files.append(file) }
        if let ca = self.clientCA { files.append(ca) }
        return files
    }

    /// Reads the files and builds the server context. Throws `TLSFileError` naming the file at fault.
    public func load() throws -> ServerTLSContext {
        guard let first = self.certificates.first else {
            throw TLSFileError(file: "--cert", message: "no certificate given")
        }
        let password = try self.passphrase()
        var loaded: [LoadedPair] = []
        for pair in self.certificates {
            loaded.append(try LoadedPair.load(pair, password: password))
        }
        var configuration = TLSConfiguration.makeServerConfiguration(
            certificateChain: loaded[0].chain.map { .certificate($0) },
            privateKey: .privateKey(loaded[0].key)
        )
        configuration.minimumTLSVersion = self.minimumVersion
        if let ciphers = self.ciphers { configuration.cipherSuites = ciphers }
        configuration.shutdownTimeout = self.shutdownTimeout
        if self.verifyClient {
            configuration.certificateVerification = .noHostnameVerification
            if let ca = self.clientCA {
                guard FileManager.default.isReadableFile(atPath: ca) else {
                    throw TLSFileError(file: ca, message: "cannot read the CA file")
                }
                do {
                    let roots = try NIOSSLCertificate.fromPEMFile(ca)
                    guard !roots.isEmpty else { throw TLSFileError(file: ca, message: "no certificate in the CA file") }
                    configuration.trustRoots = .certificates(roots)
                } catch let error as TLSFileError {
                    throw error
                } catch {
                    throw TLSFileError(file: ca, message: "not a PEM certificate bundle (\(error))")
                }
            } else {
                configuration.trustRoots = .default
            }
            configuration.sendCANameList = true
        }
        if loaded.count > 1 {
            let table = loaded.dropFirst().map { ($0.names, $0.chain, $0.key) }
            configuration.sslContextCallback = { values, promise in
                guard let name = values.serverHostname?.lowercased(),
                    let match = table.first(where: { entry in Self.matches(patterns: entry.0, name: name) })
                else {
                    promise.succeed(.noChanges)
                    return
                }
                var override = NIOSSLContextConfigurationOverride()
                override.certificateChain = match.1.map { .certificate($0) }
                override.privateKey = .privateKey(match.2)
                promise.succeed(override)
            }
        }
        if let ciphers = self.ciphers, !Self.selectsCiphers(ciphers) {
            throw TLSFileError(file: "--ssl-ciphers", message: "'\(ciphers)' selects no cipher this TLS library has")
        }
        let context: NIOSSLContext
        do {
            context = try NIOSSLContext(configuration: configuration)
        } catch {
            throw TLSFileError(
                file: first.certificate,
                message: "cannot use this certificate with key \(first.key ?? first.certificate) (\(error))"
            )
        }
        return ServerTLSContext(
            context: context,
            certificates: loaded.map { .init(file: $0.file, names: $0.names, notValidAfter: $0.notValidAfter) }
        )
    }

    /// Whether BoringSSL accepts `ciphers` as a cipher list: it must select at least one cipher (names it does not
    /// know are skipped). Asked of BoringSSL itself, in a context of its own, since NIOSSL stops the process when
    /// the list is refused.
    static func selectsCiphers(_ ciphers: String) -> Bool {
        guard let context = CNIOBoringSSL_SSL_CTX_new(CNIOBoringSSL_TLS_method()) else { return false }
        defer { CNIOBoringSSL_SSL_CTX_free(context) }
        let accepted = CNIOBoringSSL_SSL_CTX_set_cipher_list(context, ciphers) == 1
        // A refusal leaves its reason in this thread's error queue, where a later NIOSSL call would find it.
        CNIOBoringSSL_ERR_clear_error()
        return accepted
    }

    /// Whether one of a certificate's names covers `name`.
    static func matches(patterns: [String], name: String) -> Bool {
        patterns.contains { Self.matches(pattern: $0, name: name) }
    }

    /// Whether a certificate name (`example.com`, `*.example.com`) covers `name` (one label for a wildcard).
    static func matches(pattern: String, name: String) -> Bool {
        let pattern = pattern.lowercased()
        if pattern == name { return true }
        guard pattern.hasPrefix("*.") else { return false }
        let suffix = pattern.dropFirst(1)  // ".example.com"
        guard name.hasSuffix(suffix) else { return false }
        let label = name.dropLast(suffix.count)
        return !label.isEmpty && !label.contains("." as Character)
    }

    private func passphrase() throws -> [UInt8]? {
        if let file = self.keyPasswordFile {
            guard let data = FileManager.default.contents(atPath: file) else {
                throw TLSFileError(file: file, message: "cannot read the key password file")
            }
            var bytes = [UInt8](data)
            if let newline = bytes.firstIndex(where: { $0 == 0x0A || $0 == 0x0D }) { bytes = Array(bytes[..<newline]) }
            return bytes
        }
        return self.keyPassword
    }

    private struct LoadedPair {
        var file: String
        var chain: [NIOSSLCertificate]
        var key: NIOSSLPrivateKey
        var names: [String]
        var notValidAfter: time_t

        static func load(_ pair: CertificatePair, password: [UInt8]?) throws -> LoadedPair {
            guard FileManager.default.isReadableFile(atPath: pair.certificate) else {
                throw TLSFileError(file: pair.certificate, message: "cannot read the certificate file")
            }
            let chain: [NIOSSLCertificate]
            do {
                chain = try NIOSSLCertificate.fromPEMFile(pair.certificate)
            } catch {
                throw TLSFileError(file: pair.certificate, message: "not a PEM certificate (\(error))")
            }
            guard let leaf = chain.first else {
                throw TLSFileError(file: pair.certificate, message: "no certificate in the file")
            }
            let keyFile = pair.key ?? pair.certificate
            guard FileManager.default.isReadableFile(atPath: keyFile) else {
                throw TLSFileError(file: keyFile, message: "cannot read the key file")
            }
            let key: NIOSSLPrivateKey
            do {
                if let password {
                    key = try NIOSSLPrivateKey(file: keyFile, format: .pem) {
                        (setter: NIOSSLPassphraseSetter<[UInt8]>) in
                        setter(password)
                    }
                } else {
                    key = try NIOSSLPrivateKey(file: keyFile, format: .pem)
                }
            } catch {
                let hint =
                    password == nil
                    ? " (an encrypted key needs --key-password-file or WSBRIDGE_KEY_PASSWORD)" : " (wrong password?)"
                throw TLSFileError(file: keyFile, message: "cannot load the private key\(hint)")
            }
            // The key must belong to the certificate: BoringSSL checks the pair when a context is made.
            do {
                _ = try NIOSSLContext(
                    configuration: .makeServerConfiguration(
                        certificateChain: chain.map { .certificate($0) },
                        privateKey: .privateKey(key)
                    )
                )
            } catch {
                throw TLSFileError(
                    file: keyFile,
                    message: "this key does not belong to the certificate \(pair.certificate) (\(error))"
                )
            }
            return LoadedPair(
                file: pair.certificate,
                chain: chain,
                key: key,
                names: CertificateNames.serverNames(of: leaf),
                notValidAfter: leaf.notValidAfter
            )
        }
    }
}

/// A loaded server context and what it serves, for logs.
///
/// `@unchecked`: immutable once loaded; `NIOSSLContext` is thread-safe for creating handlers (BoringSSL's
/// `SSL_CTX` is shared by every connection), it is only not marked `Sendable`.
public struct ServerTLSContext: @unchecked Sendable {
    public let context: NIOSSLContext
    public struct Certificate: Sendable, Equatable {
        public var file: String
        public var names: [String]
        public var notValidAfter: time_t
    }
    public let certificates: [Certificate]
}

/// A TLS file that could not be used, named in the message.
public struct TLSFileError: Error, Equatable, Sendable, CustomStringConvertible {
    public var file: String
    public var message: String
    public init(file: String, message: String) {
        self.file = file
        self.message = message
    }
    public var description: String { "\(self.file): \(self.message)" }
}

/// Names in certificates: the server names a listener certificate covers, and the identities of a client
/// certificate (common name and subject alternative names).
public enum CertificateNames {
    /// DNS names of the subject alternative names, else the common name.
    public static func serverNames(of certificate: NIOSSLCertificate) -> [String] {
        var names: [String] = []
        for name in certificate._subjectAlternativeNames() where name.nameType == .dnsName {
            names.append(String(decoding: name.contents, as: UTF8.self).lowercased())
        }
        if names.isEmpty, let cn = Self.commonName(of: certificate) { names.append(cn.lowercased()) }
        return names
    }

    /// The common name and every DNS, email and URI subject alternative name.
    public static func identities(of certificate: NIOSSLCertificate) -> [String] {
        var names: [String] = []
        if let cn = Self.commonName(of: certificate) { names.append(cn) }
        for name in certificate._subjectAlternativeNames() {
            switch name.nameType {
            case .dnsName, .email, .uri:
                names.append(String(decoding: name.contents, as: UTF8.self))
            default:
                continue
            }
        }
        return names
    }

    public static func commonName(of certificate: NIOSSLCertificate) -> String? {
        certificate.subjectName.last(where: { $0.type == .commonName })?.value
    }
}
