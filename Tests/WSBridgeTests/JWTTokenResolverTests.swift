import Crypto
import Foundation
import JWTKit
import Logging
import NIOEmbedded
import XCTest

@testable import WSBridge

final class JWTTokenResolverTests: XCTestCase {
    struct Payload: JWTPayload {
        var host: String?
        var port: Int?
        var target: String?
        var exp: ExpirationClaim?
        var nbf: NotBeforeClaim?
        var aud: AudienceClaim?
        var iss: IssuerClaim?
        func verify(using algorithm: some JWTAlgorithm) async throws {}
    }

    /// A 2048-bit RSA key for RS256 (generated for these tests only).
    static let rsaPEM = """
        -----BEGIN PRIVATE KEY-----
        MIIEuwIBADANBgkqhkiG9w0BAQEFAASCBKUwggShAgEAAoIBAQCf4Uwg6ACUmoEH
        Y7b3CedoPR7tYT4YE8X30i/DCtdaR3Qpgk7N9L5DpTPgMSLAOWRl4et+BuCpWep3
        igyuq8CpIBoqsYykeV/DcETf0HsQyF8r+WW2afc80sLyKra+eGtA/9nkWVrTkRB2
        Y4r/TIkNbWt3ryh5SkyytC0Itu0nqa6EE9uskYzjBC3utDdfDXXIrBOigD1ejOzf
        cbNRFJRGwupEJGIO4KsyN2iBvcMU+mYrZbb5ShUV/u7is0/AN5Lrf1btY7tVQdJE
        mpKXBkTlsxNDblc6hFF9YxMsIWeKcqN0gzIBm9L1nx4L8bQ2wxPw2BdxlZnk/Oeq
        k48L4L5LAgMBAAECgf8MSk9K8BSYD6RlbQaMqEaoQ0Wj7L7I0taPvP5ehoc8A6sv
        RAzrmj1vFpyhWm3Rc0/LCHv66K1CSlu4jIuUa7NGOVWiOsI11W2D3YnW5conDUAp
        bLcZctDTnckWciuTkwobQIkz+r4rV2fB5pZIzsqZgpF02amOVApPsnzxtR4wor6t
        0ztQPKAfujIr8cLKTrg5so2BZpLb2sYfCmYlUZrrRWyrDVIjCStJ+T3xYZBn1670
        Q5N30oUr4OWMs0w1R1vPmuvS5sNJnba3+gx+7IlH0+ydBFfSNELDEH+3oMkUCQGw
        Nd1pJAaH3EMefedxMpkvDGWNPKCLsL0TxiZqeUUCgYEA3DZogIIUCscq7zMb2HFd
        yTZb6QVGGpbq5CbTtdiGSGYXQVUb55WyPpxCYZVk8e8ndJ1U2ZV8klGFGG4nW3xG
        /q2SD1wvJ4UwsqCSTkGcmvr8eRv80lEOCHyECdz9qIiv+rIW5TU8EFTF5HLiwiU6
        ROioPTWctYryIlQc2zhug20CgYEAudzaYYkgvfU8pp0VfuYgHmKGwL2FJ+jrsKUD
        9bWZCpO6Xtcn+Zm7ieH8ITFKt5HxI5BrB+a1ey1cbv01DKMswBq1OaXbueF8V9Nr
        hWZHDtLMSV2+IslT3V+0c2HVqM9kfqjrMN9QPvsOnm4Pz7zS1GkCHCRjTZTJMxjC
        dqZ5fZcCgYBaBIu3bHUQ6tWsLjJFyiHSbLwphxRfLi4a0Zxdi4No+QKsnEPp6RGR
        8oJYLZ+0HlT8oIvc3fSsQ1Kq5+yCw0yqMv2v9bj46MM9YdIs1zlTSSIHx98TgjrA
        UVYQShwO1sFJM5+UVqyU6HJ0rlnvjxRAsvKDAvVqaMAONGAPZQQYCQKBgQCVbEjl
        QSlhjldEW+V8L+aChxNuwO7cNxXE3eVhFK4FIt8igDdTI5TyNQxOYyJ+koYa4XAq
        2f/tF3rIgCi2EDlZ+B7aSc1skys0MHSwuplGAZLbKNJDhTg3MUoRuQXcwV85tPPg
        Rqhs+cm29SUhDd0xh3p6xYZQSN24hp9QZGYn4QKBgDxXImF7vPS5uXqk0+i3h1oz
        1fg5LIvaIBCtrEJr4cEBhqH1ohXDRNd55HFvenPd1D1RxxRKJwXeHs5lopYOTu/s
        OrI+bQ+2nNYGRyuaCeq8LqRqqq3XTwxSio+vT6jBwijBDpStemezDTYzeUtg9bpf
        8N3mQIizDxvdFVFm9tuR
        -----END PRIVATE KEY-----
        """

    var directory: URL!

    override func setUp() {
        self.directory = FileManager.default.temporaryDirectory.appendingPathComponent(
            "wsbridge-jwt-\(UUID().uuidString)"
        )
        try! FileManager.default.createDirectory(at: self.directory, withIntermediateDirectories: true)
    }

    override func tearDown() {
        try? FileManager.default.removeItem(at: self.directory)
    }

    private func write(_ name: String, _ text: String) -> String {
        let path = self.directory.appendingPathComponent(name).path
        FileManager.default.createFile(atPath: path, contents: Data(text.utf8))
        return path
    }

    private func resolver(_ path: String, _ options: JWTTokenResolver.Options = .init(), targets: TargetsStore? = nil)
        async throws -> JWTTokenResolver
    {
        try await JWTTokenResolver(path: path, options: options, targets: targets, logger: Logger(label: "test"))
    }

    private func payload(exp: TimeInterval? = 300, nbf: TimeInterval? = nil, aud: String? = nil, iss: String? = nil)
        -> Payload
    {
        Payload(
            host: "127.0.0.1",
            port: 5901,
            exp: exp.map { ExpirationClaim(value: Date().addingTimeInterval($0)) },
            nbf: nbf.map { NotBeforeClaim(value: Date().addingTimeInterval($0)) },
            aud: aud.map { AudienceClaim(value: [$0]) },
            iss: iss.map { IssuerClaim(value: $0) }
        )
    }

    /// 64 bytes: long enough for HS512 (RFC 7518 3.2).
    private static let secret = Data(
        "websockify-test-secret-0123456789-websockify-test-secret-01234567".utf8.prefix(64)
    )
    private static var secretFile: String {
        secret.base64EncodedString().replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
            .replacingOccurrences(of: "=", with: "")
    }

    private func hmacToken(_ payload: Payload, _ digest: DigestAlgorithm, secret: Data = secret) async throws -> String
    {
        let keys = JWTKeyCollection()
        await keys.add(hmac: HMACKey(from: secret), digestAlgorithm: digest)
        return try await keys.sign(payload)
    }

    private let backend = TokenResolution.found(Target(name: "jwt", backend: .tcp(host: "127.0.0.1", port: 5901)))

    func testHMACAlgorithmsWithWebsockifysKeyFile() async throws {
        let resolver = try await self.resolver(self.write("secret.key", Self.secretFile + "\n"))
        for digest in [DigestAlgorithm.sha256, .sha384, .sha512] {
            let verdict = await resolver.verify(try await self.hmacToken(self.payload(), digest))
            XCTAssertEqual(verdict, self.backend, "\(digest)")
        }
    }

    func testRS256ES256EdDSAFromPEM() async throws {
        let rsaPrivate = try Insecure.RSA.PrivateKey(pem: Self.rsaPEM)
        let es = ES256PrivateKey()
        let ed = try EdDSA.PrivateKey()
        // Public keys for ES256 and EdDSA, the private PEM for RSA (websockify accepts either).
        let rsaResolver = try await self.resolver(self.write("rsa.pem", Self.rsaPEM))
        let esResolver = try await self.resolver(self.write("es.pem", es.publicKey.pemRepresentation))
        let edResolver = try await self.resolver(self.write("ed.pem", ed.publicKey.pemRepresentation))

        let rsaKeys = JWTKeyCollection()
        await rsaKeys.add(rsa: rsaPrivate, digestAlgorithm: .sha256)
        let esKeys = JWTKeyCollection()
        await esKeys.add(ecdsa: es)
        let edKeys = JWTKeyCollection()
        await edKeys.add(eddsa: ed)
        let rsaToken = try await rsaKeys.sign(self.payload())
        let esToken = try await esKeys.sign(self.payload())
        let edToken = try await edKeys.sign(self.payload())

        var verdict = await rsaResolver.verify(rsaToken)
        XCTAssertEqual(verdict, self.backend)
        verdict = await esResolver.verify(esToken)
        XCTAssertEqual(verdict, self.backend)
        verdict = await edResolver.verify(edToken)
        XCTAssertEqual(verdict, self.backend)
        // The wrong key type for the header's alg: no candidate key.
        verdict = await esResolver.verify(edToken)
        XCTAssertEqual(verdict, .invalid("invalid token: no key for alg EdDSA"))
    }

    func testWrongKeyExpiredNotYetValidAndLeeway() async throws {
        let resolver = try await self.resolver(self.write("secret.key", Self.secretFile), .init(leeway: 5))
        var verdict = await resolver.verify(
            try await self.hmacToken(self.payload(), .sha256, secret: Data(repeating: 7, count: 64))
        )
        XCTAssertEqual(verdict, .invalid("invalid token: bad signature"))
        verdict = await resolver.verify(try await self.hmacToken(self.payload(exp: -60), .sha256))
        XCTAssertEqual(verdict, .invalid("invalid token: expired"))
        verdict = await resolver.verify(try await self.hmacToken(self.payload(exp: -2), .sha256))
        XCTAssertEqual(verdict, self.backend, "within the leeway")
        verdict = await resolver.verify(try await self.hmacToken(self.payload(nbf: 60), .sha256))
        XCTAssertEqual(verdict, .invalid("invalid token: not yet valid"))
        verdict = await resolver.verify(try await self.hmacToken(self.payload(exp: nil), .sha256))
        XCTAssertEqual(verdict, self.backend, "exp is optional, as in websockify")
    }

    func testAudienceAndIssuer() async throws {
        let resolver = try await self.resolver(
            self.write("secret.key", Self.secretFile),
            .init(audience: "wsbridge", issuer: "https://issuer.example")
        )
        var verdict = await resolver.verify(
            try await self.hmacToken(self.payload(aud: "wsbridge", iss: "https://issuer.example"), .sha256)
        )
        XCTAssertEqual(verdict, self.backend)
        verdict = await resolver.verify(
            try await self.hmacToken(self.payload(aud: "other", iss: "https://issuer.example"), .sha256)
        )
        XCTAssertEqual(verdict, .invalid("invalid token: wrong audience"))
        verdict = await resolver.verify(
            try await self.hmacToken(self.payload(aud: "wsbridge", iss: "https://evil.example"), .sha256)
        )
        XCTAssertEqual(verdict, .invalid("invalid token: wrong issuer"))
        verdict = await resolver.verify(try await self.hmacToken(self.payload(), .sha256))
        XCTAssertEqual(verdict, .invalid("invalid token: wrong audience"))
    }

    func testRotationWithADirectoryAndAJWKSet() async throws {
        let keysDirectory = self.directory.appendingPathComponent("keys").path
        try FileManager.default.createDirectory(atPath: keysDirectory, withIntermediateDirectories: true)
        let es = ES256PrivateKey()
        FileManager.default.createFile(atPath: keysDirectory + "/old.key", contents: Data(Self.secretFile.utf8))
        FileManager.default.createFile(
            atPath: keysDirectory + "/new.pem",
            contents: Data(es.publicKey.pemRepresentation.utf8)
        )
        let resolver = try await self.resolver(keysDirectory)
        var verdict = await resolver.verify(try await self.hmacToken(self.payload(), .sha256))
        XCTAssertEqual(verdict, self.backend)
        let esKeys = JWTKeyCollection()
        await esKeys.add(ecdsa: es)
        verdict = await resolver.verify(try await esKeys.sign(self.payload()))
        XCTAssertEqual(verdict, self.backend)

        // A JWK set with two EC keys chosen by kid (jwt-kit reads RSA, EC and OKP JWKs; not "oct").
        let first = ES256PrivateKey()
        let second = ES256PrivateKey()
        func jwk(_ key: ES256PrivateKey, _ kid: String) -> String {
            let (x, y) = key.parameters!
            return
                "{\"kty\": \"EC\", \"crv\": \"P-256\", \"kid\": \"\(kid)\", \"alg\": \"ES256\", \"x\": \"\(x)\", \"y\": \"\(y)\"}"
        }
        let setResolver = try await self.resolver(
            self.write("keys.json", "{\"keys\": [\(jwk(first, "2024")), \(jwk(second, "2025"))]}")
        )
        for (kid, key) in [("2024", first), ("2025", second)] {
            let signer = JWTKeyCollection()
            await signer.add(ecdsa: key, kid: JWKIdentifier(string: kid))
            let verdict = await setResolver.verify(
                try await signer.sign(self.payload(), kid: JWKIdentifier(string: kid))
            )
            XCTAssertEqual(verdict, self.backend, kid)
        }
        let stranger = JWTKeyCollection()
        await stranger.add(ecdsa: ES256PrivateKey(), kid: JWKIdentifier(string: "2025"))
        let verdict2 = await setResolver.verify(
            try await stranger.sign(self.payload(), kid: JWKIdentifier(string: "2025"))
        )
        XCTAssertEqual(verdict2, .invalid("invalid token: bad signature"))
    }

    func testTargetClaimNamesALoadedTarget() async throws {
        let named = Target(name: "vnc-lab", backend: .tcp(host: "10.0.0.5", port: 5900), maxSessions: 3)
        let store = TargetsStore(fixed: TargetTable(mode: .tokens(["s3cr3t": named])))
        let resolver = try await self.resolver(self.write("secret.key", Self.secretFile), targets: store)
        var claims = self.payload()
        claims.host = nil
        claims.port = nil
        claims.target = "vnc-lab"
        var verdict = await resolver.verify(try await self.hmacToken(claims, .sha256))
        XCTAssertEqual(verdict, .found(named))
        claims.target = "nope"
        verdict = await resolver.verify(try await self.hmacToken(claims, .sha256))
        XCTAssertEqual(verdict, .invalid("invalid token: unknown target 'nope'"))
    }

    func testNotAJWTAlgNoneAndJWE() async throws {
        let resolver = try await self.resolver(self.write("secret.key", Self.secretFile))
        let loop = EmbeddedEventLoop()
        XCTAssertEqual(try resolver.resolve("plain-token", on: loop).wait(), .notFound)
        XCTAssertEqual(
            try resolver.resolve("eyJhbGciOiJSU0EtT0FFUCJ9.a.b.c.d", on: loop).wait(),
            .invalid("invalid token: JWE (encrypted tokens) is not supported")
        )
        // {"alg":"none"} . {"host":"h","port":1} . (no signature)
        let none = "eyJhbGciOiJub25lIn0.eyJob3N0IjoiaCIsInBvcnQiOjF9."
        let verdict = await resolver.verify(none)
        XCTAssertEqual(verdict, .invalid("invalid token: no signature algorithm"))
    }

    /// websockify (jwcrypto) verifies HMAC with secrets of any length, and its own test key is short: such a
    /// secret loads (with a warning) and verifies HS256/384/512, with a wrong signature still refused.
    func testHMACSecretsShorterThanTheirHashLoadAndVerify() async throws {
        let secret = Data("sixteen-byte-key".utf8)
        let file = secret.base64EncodedString().replacingOccurrences(of: "=", with: "")
        let resolver = try await self.resolver(self.write("short.key", file + "\n"))
        XCTAssertEqual(resolver.keyCount, 3)
        func token(_ alg: String, _ sign: (Data) -> Data) -> String {
            func b64(_ data: Data) -> String {
                data.base64EncodedString().replacingOccurrences(of: "+", with: "-").replacingOccurrences(
                    of: "/",
                    with: "_"
                )
                .replacingOccurrences(of: "=", with: "")
            }
            let exp = Int(Date().timeIntervalSince1970) + 300
            let signed =
                b64(Data("{\"alg\":\"\(alg)\",\"typ\":\"JWT\"}".utf8)) + "."
                + b64(Data("{\"host\":\"127.0.0.1\",\"port\":5901,\"exp\":\(exp)}".utf8))
            return signed + "." + b64(sign(Data(signed.utf8)))
        }
        let key = SymmetricKey(data: secret)
        let tokens = [
            token("HS256") { Data(HMAC<SHA256>.authenticationCode(for: $0, using: key)) },
            token("HS384") { Data(HMAC<SHA384>.authenticationCode(for: $0, using: key)) },
            token("HS512") { Data(HMAC<SHA512>.authenticationCode(for: $0, using: key)) },
        ]
        for token in tokens {
            let verdict = await resolver.verify(token)
            XCTAssertEqual(verdict, self.backend, token)
        }
        let other = SymmetricKey(data: Data("another-16-bytes".utf8))
        let forged = token("HS256") { Data(HMAC<SHA256>.authenticationCode(for: $0, using: other)) }
        let verdict = await resolver.verify(forged)
        XCTAssertEqual(verdict, .invalid("invalid token: bad signature"))
        let warnings = JWTTokenResolver.warnings(
            try await JWTTokenResolver.loadKeys(self.directory.appendingPathComponent("short.key").path)
        )
        XCTAssertEqual(warnings.count, 1)
        XCTAssertTrue(warnings[0].contains("HMAC secret of 16 bytes"), warnings[0])
    }

    func testBadKeyFiles() async {
        for (name, text) in [
            ("empty", ""), ("pem", "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"),
            ("json", "{\"keys\": [{\"kty\": \"zzz\"}]}"),
        ] {
            do {
                _ = try await self.resolver(self.write(name, text))
                XCTFail("accepted \(name)")
            } catch {}
        }
    }

    /// A public key pasted as bare base64 DER (the PEM body without its armour, as identity providers show it) is
    /// refused as an HMAC secret: anyone holding it could sign tokens.
    func testPublicKeyAsBareBase64DERIsRefusedAsHMACSecret() async throws {
        func body(_ pem: String) -> String {
            pem.split(separator: "\n").filter { !$0.hasPrefix("-----") }.joined()
        }
        let rsa = try Insecure.RSA.PrivateKey(pem: Self.rsaPEM)
        let cases: [(String, String, String)] = [
            ("rsa-public", body(rsa.publicKey.pemRepresentation), "RSA"),
            (
                "rsa-public-wrapped",
                rsa.publicKey.pemRepresentation.split(separator: "\n").filter { !$0.hasPrefix("-----") }.joined(
                    separator: "\n"
                ), "RSA"
            ),
            ("rsa-private", body(Self.rsaPEM), "RSA"),
            ("ec-public", body(ES256PrivateKey().publicKey.pemRepresentation), "EC"),
            ("ed25519-public", body(try EdDSA.PrivateKey(curve: .ed25519).publicKey.pemRepresentation), "Ed25519"),
        ]
        for (name, text, kind) in cases {
            do {
                _ = try await self.resolver(self.write(name, text + "\n"))
                XCTFail("accepted \(name) as an HMAC secret")
            } catch {
                let message = "\(error)"
                XCTAssertTrue(message.contains("refused as an HMAC secret"), "\(name): \(message)")
                XCTAssertTrue(message.contains(kind), "\(name): \(message)")
            }
        }
        // PKCS#1 RSAPublicKey (a SEQUENCE of two INTEGERs), no algorithm OID.
        let pkcs1: [UInt8] = [0x30, 0x26, 0x02, 0x21, 0x00] + [UInt8](repeating: 0xC5, count: 32) + [0x02, 0x01, 0x03]
        XCTAssertNotNil(PublicKeyDERDetector.describe(pkcs1))
        // A real secret is still a secret.
        XCTAssertNil(PublicKeyDERDetector.describe(Array(Self.secret)))
        XCTAssertNil(PublicKeyDERDetector.describe([0x30] + [UInt8](repeating: 0x41, count: 40)))
        _ = try await self.resolver(self.write("secret.key", Self.secretFile))
    }
}
