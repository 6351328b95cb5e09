import Crypto
import Foundation
import JWTKit
import Logging
import NIOConcurrencyHelpers
import NIOCore
import ServiceLifecycle

/// Signed tokens (websockify's `JWTTokenApi`, JWS only): the token itself says where it goes, so every instance
/// verifies it alone. Keys come from files: PEM (RSA → RS256/384/512, EC P-256/384/521 → ES256/384/512,
/// Ed25519 → EdDSA; public or private keys), a JWK or JWK set (`{"keys": [...]}`, chosen by `kid`), or anything
/// else as a symmetric secret (HS256/384/512) which, as websockify (jwcrypto) reads it, is the base64url of the
/// secret bytes. A directory is every file in it (not starting with `.`): several keys at once, for rotation.
///
/// Claims: `host` and `port` (websockify), or `target`, the name (or token) of a loaded target whose policy then
/// applies. `exp` and `nbf` are enforced with `leeway`; `aud` and `iss` when configured. The header's `alg` must be
/// one the key is for (no algorithm confusion, no `none`). JWE (encrypted tokens) is not supported.
///
/// A `Service`: `run` re-reads the key files when they change (a `FileWatcher`: polled every second, through
/// symlinks, debounced) and on SIGHUP, off the event loops.
public final class JWTTokenResolver: TokenResolver, Service {
    public struct Options: Sendable {
        public var leeway: TimeInterval
        public var audience: String?
        public var issuer: String?
        /// Close sessions (1008 `token expired`) when their token's `exp` passes.
        public var closeAtExpiry: Bool
        public init(
            leeway: TimeInterval = 5,
            audience: String? = nil,
            issuer: String? = nil,
            closeAtExpiry: Bool = false
        ) {
            self.leeway = leeway
            self.audience = audience
            self.issuer = issuer
            self.closeAtExpiry = closeAtExpiry
        }
    }

    /// One verification key: the algorithms it may verify, its `kid` (nil matches any), and what verifies.
    struct Key: Sendable {
        var algorithms: Set<String>
        var kid: String?
        var verifier: Verifier
        var file: String
        /// Said loudly at every load (a secret shorter than RFC 7518 wants).
        var warning: String?

        init(algorithms: Set<String>, kid: String?, collection: JWTKeyCollection, file: String) {
            self.algorithms = algorithms
            self.kid = kid
            self.verifier = .collection(collection)
            self.file = file
        }

        init(shortSecret secret: Data, algorithm: String, file: String, warning: String?) {
            self.algorithms = [algorithm]
            self.kid = nil
            self.verifier = .shortHMAC(SymmetricKey(data: secret))
            self.file = file
            self.warning = warning
        }
    }

    enum Verifier: Sendable {
        /// jwt-kit: every algorithm, and HMAC with a secret at least as long as its hash.
        case collection(JWTKeyCollection)
        /// HMAC with a secret shorter than its hash, which jwt-kit refuses (an assertion) and websockify accepts.
        case shortHMAC(SymmetricKey)
    }

    public let path: String
    public let options: Options
    private let targets: TargetsStore?
    private let logger: Logger
    private let keys: NIOLockedValueBox<[Key]>
    private let now: @Sendable () -> Date
    /// SIGHUP (a subscription to `HangupSignals`): re-reads the keys at once.
    private let hangups: AsyncStream<Void>?

    public var name: String { "jwt" }

    /// Loads the keys now; throws `TargetsFileError` naming the file that is not a usable key.
    public init(
        path: String,
        options: Options = .init(),
        targets: TargetsStore? = nil,
        logger: Logger,
        hangups: AsyncStream<Void>? = nil,
        now: @escaping @Sendable () -> Date = Date.init
    ) async throws {
        self.hangups = hangups
        self.path = path
        self.options = options
        self.targets = targets
        self.logger = logger
        self.now = now
        let keys = try await Self.loadKeys(path)
        for warning in Self.warnings(keys) { logger.warning("\(warning)") }
        self.keys = NIOLockedValueBox(keys)
    }

    public var keyCount: Int { self.keys.withLockedValue { $0.count } }

    public func resolve(_ token: String, on eventLoop: EventLoop) -> EventLoopFuture<TokenResolution> {
        // Not a JWS at all (three base64url parts): not ours, unknown as any other token.
        let parts = token.split(separator: ".", omittingEmptySubsequences: false)
        if parts.count == 5 {
            return eventLoop.makeSucceededFuture(.invalid("invalid token: JWE (encrypted tokens) is not supported"))
        }
        guard parts.count == 3, parts[0].hasPrefix("eyJ") else { return eventLoop.makeSucceededFuture(.notFound) }
        let promise = eventLoop.makePromise(of: TokenResolution.self)
        promise.completeWithTask { await self.verify(token) }
        return promise.futureResult
    }

    /// Verification itself (signature, then time, audience, issuer, then the claims that name the backend).
    func verify(_ token: String) async -> TokenResolution {
        guard let header = Self.header(of: token) else { return .invalid("invalid token: malformed header") }
        guard let alg = header.alg, alg.lowercased() != "none" else {
            return .invalid("invalid token: no signature algorithm")
        }
        let candidates = self.keys.withLockedValue { keys in
            keys.filter { $0.algorithms.contains(alg) && ($0.kid == nil || header.kid == nil || $0.kid == header.kid) }
        }
        guard !candidates.isEmpty else { return .invalid("invalid token: no key for alg \(alg)") }
        var claims: Claims?
        for key in candidates {
            switch key.verifier {
            case .collection(let collection):
                claims = try? await collection.verify(token, as: Claims.self, iteratingKeys: true)
            case .shortHMAC(let secret):
                if Self.hmacIsValid(token, alg: alg, secret: secret) {
                    claims = try? await JWTKeyCollection().unverified(token, as: Claims.self)
                }
            }
            if claims != nil { break }
        }
        guard let claims else { return .invalid("invalid token: bad signature") }
        let now = self.now()
        if let exp = claims.exp?.value, now.timeIntervalSince(exp) > self.options.leeway {
            return .invalid("invalid token: expired")
        }
        if let nbf = claims.nbf?.value, nbf.timeIntervalSince(now) > self.options.leeway {
            return .invalid("invalid token: not yet valid")
        }
        if let audience = self.options.audience, !(claims.aud?.value.contains(audience) ?? false) {
            return .invalid("invalid token: wrong audience")
        }
        if let issuer = self.options.issuer, claims.iss?.value != issuer {
            return .invalid("invalid token: wrong issuer")
        }
        let deadline = self.options.closeAtExpiry ? claims.exp?.value : nil
        if let name = claims.target {
            guard var target = self.namedTarget(name) else {
                return .invalid("invalid token: unknown target '\(name)'")
            }
            target.sessionDeadline = deadline
            return .found(target)
        }
        guard let host = claims.host, let port = claims.port else {
            return .invalid("invalid token: no host/port or target claim")
        }
        let hostPart = host.contains(":" as Character) && !host.hasPrefix("[") ? "[\(host)]" : host
        guard case .success(let backend) = BackendAddress.parseHostPort("\(hostPart):\(port)") else {
            return .invalid("invalid token: bad host/port claims")
        }
        // One metric series (`jwt`) for every backend that tokens name.
        var target = Target(name: "jwt", backend: backend)
        target.sessionDeadline = deadline
        return .found(target)
    }

    private func namedTarget(_ name: String) -> Target? {
        guard let table = self.targets?.current, case .tokens(let map) = table.mode else { return nil }
        return map.values.first(where: { $0.name == name }) ?? map[name]
    }

    // MARK: claims and header

    struct Claims: JWTPayload {
        var host: String?
        var port: String?
        var target: String?
        var exp: ExpirationClaim?
        var nbf: NotBeforeClaim?
        var aud: AudienceClaim?
        var iss: IssuerClaim?

        enum CodingKeys: String, CodingKey { case host, port, target, exp, nbf, aud, iss }

        init(from decoder: any Decoder) throws {
            let container = try decoder.container(keyedBy: CodingKeys.self)
            self.host = try container.decodeIfPresent(String.self, forKey: .host)
            // websockify's tokens carry the port as a number or a string.
            if let number = try? container.decodeIfPresent(Int.self, forKey: .port) {
                self.port = String(number)
            } else {
                self.port = try container.decodeIfPresent(String.self, forKey: .port)
            }
            self.target = try container.decodeIfPresent(String.self, forKey: .target)
            self.exp = try container.decodeIfPresent(ExpirationClaim.self, forKey: .exp)
            self.nbf = try container.decodeIfPresent(NotBeforeClaim.self, forKey: .nbf)
            self.aud = try container.decodeIfPresent(AudienceClaim.self, forKey: .aud)
            self.iss = try container.decodeIfPresent(IssuerClaim.self, forKey: .iss)
        }

        /// Time, audience and issuer are checked by the resolver, with its leeway and options.
        func verify(using algorithm: some JWTAlgorithm) async throws {}
    }

    struct Header: Decodable {
        var alg: String?
        var kid: String?
    }

    static func header(of token: String) -> Header? {
        guard let first = token.split(separator: ".").first, let data = Self.base64URLDecode(String(first)) else {
            return nil
        }
        return try? JSONDecoder().decode(Header.self, from: data)
    }

    static func base64URLDecode(_ text: String) -> Data? {
        var base64 = text.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        base64 = base64.filter { !$0.isWhitespace }
        while base64.count % 4 != 0 { base64.append("=") }
        return Data(base64Encoded: base64)
    }

    // MARK: keys

    static func keyFiles(_ path: String) throws -> [String] {
        try TargetsLoader(path: path).files()
    }

    static func loadKeys(_ path: String) async throws -> [Key] {
        var keys: [Key] = []
        for file in try Self.keyFiles(path) {
            guard let data = FileManager.default.contents(atPath: file) else {
                throw TargetsFileError(file: file, line: nil, message: "cannot read key file")
            }
            do {
                keys += try await Self.keys(from: data, file: file)
            } catch let error as TargetsFileError {
                throw error
            } catch {
                throw TargetsFileError(file: file, line: nil, message: "not a usable key: \(error)")
            }
        }
        guard !keys.isEmpty else { throw TargetsFileError(file: path, line: nil, message: "no keys") }
        return keys
    }

    static func keys(from data: Data, file: String) async throws -> [Key] {
        let text = String(decoding: data, as: UTF8.self).trimmingWhitespace()
        if text.hasPrefix("{") {
            let object = try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any]
            let json: String
            if object?["keys"] != nil {
                json = text
            } else {
                json = "{\"keys\": [\(text)]}"
            }
            let collection = JWTKeyCollection()
            try await collection.add(jwksJSON: json)
            // A JWK's kid and alg select it: jwt-kit checks the kid, the key type bounds the algorithm.
            return [Key(algorithms: Self.allAlgorithms, kid: nil, collection: collection, file: file)]
        }
        if text.contains("-----BEGIN") {
            return try await Self.pemKeys(text, file: file)
        }
        guard let secret = Self.base64URLDecode(text), !secret.isEmpty else {
            throw TargetsFileError(
                file: file,
                line: nil,
                message: "a symmetric key file holds the base64url of the secret (as websockify reads it)"
            )
        }
        // A public key pasted as bare base64 DER would make anyone who has it able to sign tokens.
        if let what = PublicKeyDERDetector.describe(Array(secret)) {
            throw TargetsFileError(
                file: file,
                line: nil,
                message:
                    "refused as an HMAC secret: this looks like \(what); anyone holding the public key could sign tokens with it. Give an asymmetric key as PEM (-----BEGIN PUBLIC KEY-----) or a JWK"
            )
        }
        // RFC 7518 §3.2 wants an HMAC key at least as long as the hash output; jwt-kit enforces it. websockify
        // (jwcrypto) accepts any length, and deployments have short secrets (websockify's own test key is one):
        // refusing them would break the switch, so they load with a loud warning and are verified here.
        let warning =
            secret.count < 32
            ? "\(file): HMAC secret of \(secret.count) bytes, shorter than the 32 that RFC 7518 3.2 requires for HS256: tokens signed with it are easier to forge; use a random secret of at least 32 bytes (64 for HS512)"
            : nil
        var keys: [Key] = []
        for (name, digest, size) in [
            ("HS256", DigestAlgorithm.sha256, 32), ("HS384", .sha384, 48), ("HS512", .sha512, 64),
        ] {
            if secret.count >= size {
                let collection = JWTKeyCollection()
                await collection.add(hmac: HMACKey(from: secret), digestAlgorithm: digest)
                keys.append(Key(algorithms: [name], kid: nil, collection: collection, file: file))
            } else {
                // HS384/HS512 with a secret shorter than their hash: accepted by websockify too.
                keys.append(Key(shortSecret: secret, algorithm: name, file: file, warning: warning))
            }
        }
        return keys
    }

    /// Whether `token`'s signature is the HMAC of its first two parts under `secret` (compared in constant time).
    static func hmacIsValid(_ token: String, alg: String, secret: SymmetricKey) -> Bool {
        let parts = token.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 3, let signature = Self.base64URLDecode(String(parts[2])) else { return false }
        let signed = Data("\(parts[0]).\(parts[1])".utf8)
        switch alg {
        case "HS256": return HMAC<SHA256>.isValidAuthenticationCode(signature, authenticating: signed, using: secret)
        case "HS384": return HMAC<SHA384>.isValidAuthenticationCode(signature, authenticating: signed, using: secret)
        case "HS512": return HMAC<SHA512>.isValidAuthenticationCode(signature, authenticating: signed, using: secret)
        default: return false
        }
    }

    /// The warnings of `keys`, once each (a short secret is three keys, one per algorithm).
    static func warnings(_ keys: [Key]) -> [String] {
        var seen: Set<String> = []
        var warnings: [String] = []
        for case let warning? in keys.map(\.warning) where seen.insert(warning).inserted {
            warnings.append(warning)
        }
        return warnings
    }

    static let allAlgorithms: Set<String> = [
        "HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "ES256", "ES384", "ES512", "EdDSA",
    ]

    private static func pemKeys(_ pem: String, file: String) async throws -> [Key] {
        func single(_ algorithms: Set<String>, _ add: (JWTKeyCollection) async throws -> Void) async throws -> Key {
            let collection = JWTKeyCollection()
            try await add(collection)
            return Key(algorithms: algorithms, kid: nil, collection: collection, file: file)
        }
        func rsa(_ key: some RSAKey) async throws -> [Key] {
            var keys: [Key] = []
            for (name, digest) in [("RS256", DigestAlgorithm.sha256), ("RS384", .sha384), ("RS512", .sha512)] {
                keys.append(try await single([name]) { await $0.add(rsa: key, digestAlgorithm: digest) })
            }
            return keys
        }
        if let key = try? Insecure.RSA.PublicKey(pem: pem) { return try await rsa(key) }
        if let key = try? Insecure.RSA.PrivateKey(pem: pem) { return try await rsa(key) }
        if let key = (try? ES256PublicKey(pem: pem)) ?? (try? ES256PrivateKey(pem: pem)).map({ $0.publicKey }) {
            return [try await single(["ES256"]) { await $0.add(ecdsa: key) }]
        }
        if let key = (try? ES384PublicKey(pem: pem)) ?? (try? ES384PrivateKey(pem: pem)).map({ $0.publicKey }) {
            return [try await single(["ES384"]) { await $0.add(ecdsa: key) }]
        }
        if let key = (try? ES512PublicKey(pem: pem)) ?? (try? ES512PrivateKey(pem: pem)).map({ $0.publicKey }) {
            return [try await single(["ES512"]) { await $0.add(ecdsa: key) }]
        }
        if let key = (try? EdDSA.PublicKey(pem: pem)) ?? (try? EdDSA.PrivateKey(pem: pem)).map({ $0.publicKey }) {
            return [try await single(["EdDSA"]) { await $0.add(eddsa: key) }]
        }
        throw TargetsFileError(file: file, line: nil, message: "PEM is not an RSA, EC (P-256/384/521) or Ed25519 key")
    }

    // MARK: reload

    public func run() async throws {
        let watcher = FileWatcher(paths: [self.path], what: "JWT keys", logger: self.logger, hangups: self.hangups)
        let path = self.path
        await watcher.run(
            load: { try await Self.loadKeys(path) },
            apply: { result in
                switch result {
                case .success(let keys):
                    self.keys.withLockedValue { $0 = keys }
                    self.logger.info("JWT keys reloaded", metadata: ["keys": "\(keys.count)", "source": "\(path)"])
                    for warning in Self.warnings(keys) { self.logger.warning("\(warning)") }
                case .failure(let error):
                    self.logger.error("\(error) (previous JWT keys stay in force)")
                }
            }
        )
    }
}
