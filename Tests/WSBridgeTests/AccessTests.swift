import NIOCore
import NIOHTTP1
import NIOPosix
import XCTest

@testable import WSBridge

final class AccessTests: XCTestCase {
    // MARK: trusted proxies

    func testTrustedProxiesAndForwardingChains() throws {
        let trusted = try TrustedProxies(["10.0.0.0/8", "192.0.2.7", "2001:db8::/32"])
        XCTAssertTrue(trusted.contains("10.200.1.1"))
        XCTAssertTrue(trusted.contains("::ffff:10.0.0.1"))
        XCTAssertTrue(trusted.contains("192.0.2.7"))
        XCTAssertFalse(trusted.contains("192.0.2.8"))
        XCTAssertTrue(trusted.contains("2001:db8:1::5"))
        XCTAssertFalse(trusted.contains("2001:db9::5"))
        XCTAssertFalse(trusted.contains("not-an-ip"))

        func client(_ peer: String, _ headers: [(String, String)]) -> String {
            trusted.clientAddress(peer: peer, headers: HTTPHeaders(headers))
        }
        XCTAssertEqual(client("10.0.0.1", [("X-Forwarded-For", "203.0.113.9")]), "203.0.113.9")
        XCTAssertEqual(client("10.0.0.1", [("X-Forwarded-For", "1.1.1.1, 203.0.113.9, 10.9.9.9")]), "203.0.113.9")
        XCTAssertEqual(
            client("10.0.0.1", [("X-Forwarded-For", "1.1.1.1"), ("X-Forwarded-For", "10.9.9.9")]),
            "1.1.1.1"
        )
        XCTAssertEqual(client("10.0.0.1", [("X-Forwarded-For", "10.2.2.2, 10.9.9.9")]), "10.2.2.2")
        XCTAssertEqual(client("10.0.0.1", [("X-Forwarded-For", "garbage, 10.9.9.9")]), "10.9.9.9")
        XCTAssertEqual(client("10.0.0.1", [("X-Forwarded-For", "garbage")]), "10.0.0.1")
        XCTAssertEqual(client("198.51.100.1", [("X-Forwarded-For", "203.0.113.9")]), "198.51.100.1")
        XCTAssertThrowsError(try TrustedProxies(["10.0.0.0/33"]))
        XCTAssertThrowsError(try TrustedProxies(["10.0.0.0/-1"]))
        XCTAssertThrowsError(try TrustedProxies(["example.com"]))
        XCTAssertThrowsError(try TrustedProxies(["::/129"]))
        XCTAssertTrue(try TrustedProxies(["0.0.0.0/0"]).contains("8.8.8.8"))
    }

    /// Behind a proxy that appends `X-Forwarded-For` (nginx, HAProxy), a `Forwarded` header can only come from the
    /// client: it must never pick the address.
    func testDefaultHeaderIsXFFAndClientForwardedIsIgnored() throws {
        let trusted = try TrustedProxies(["10.0.0.0/8"])
        XCTAssertEqual(trusted.header, .xff)
        func client(_ headers: [(String, String)]) -> String {
            trusted.clientAddress(peer: "10.0.0.1", headers: HTTPHeaders(headers))
        }
        // The client sent Forwarded (and its own XFF); the proxy appended the real peer to XFF.
        XCTAssertEqual(
            client([("Forwarded", "for=192.0.2.99"), ("X-Forwarded-For", "192.0.2.99, 203.0.113.5")]),
            "203.0.113.5"
        )
        XCTAssertEqual(client([("Forwarded", "for=192.0.2.99"), ("X-Forwarded-For", "203.0.113.5")]), "203.0.113.5")
        // Forwarded alone is not believed: the peer is the client.
        XCTAssertEqual(client([("Forwarded", "for=192.0.2.99")]), "10.0.0.1")
        // HAProxy adds a header of its own after the client's: the last one wins.
        XCTAssertEqual(client([("X-Forwarded-For", "192.0.2.99"), ("X-Forwarded-For", "203.0.113.5")]), "203.0.113.5")
    }

    func testForwardedHeaderWhenChosen() throws {
        let trusted = try TrustedProxies(["10.0.0.0/8"], header: .forwarded)
        func client(_ headers: [(String, String)]) -> String {
            trusted.clientAddress(peer: "10.0.0.1", headers: HTTPHeaders(headers))
        }
        XCTAssertEqual(client([("Forwarded", "for=192.0.2.60;proto=http;by=203.0.113.43")]), "192.0.2.60")
        XCTAssertEqual(client([("Forwarded", "for=\"[2001:db9::17]:4711\", for=10.1.1.1")]), "2001:db9::17")
        XCTAssertEqual(
            client([("Forwarded", "For=\"198.51.100.3:80\""), ("X-Forwarded-For", "1.1.1.1")]),
            "198.51.100.3"
        )
        // X-Forwarded-For is the client's own then.
        XCTAssertEqual(client([("X-Forwarded-For", "192.0.2.99")]), "10.0.0.1")
        XCTAssertEqual(client([("X-Forwarded-For", "192.0.2.99"), ("Forwarded", "for=203.0.113.5")]), "203.0.113.5")
        XCTAssertEqual(TrustedProxies.Header(rawValue: "forwarded"), .forwarded)
        XCTAssertNil(TrustedProxies.Header(rawValue: "x-real-ip"))
    }

    // MARK: Basic authentication

    func header(_ user: String, _ password: String) -> HTTPHeaders {
        HTTPHeaders([("Authorization", "Basic " + Data("\(user):\(password)".utf8).base64EncodedString())])
    }

    func testBasicAuthPlainAndHashed() throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        defer { try? group.syncShutdownGracefully() }
        let loop = group.next()
        let plain = BasicAuthenticator(users: try BasicAuthenticator.parseSource("admin:pa:ss"))
        XCTAssertEqual(try plain.check(self.header("admin", "pa:ss"), on: loop).wait(), .authenticated(user: "admin"))
        XCTAssertEqual(try plain.check(self.header("admin", "pa:s"), on: loop).wait(), .invalid)
        XCTAssertEqual(try plain.check(self.header("admin", "pa:sss"), on: loop).wait(), .invalid)
        XCTAssertEqual(try plain.check(self.header("Admin", "pa:ss"), on: loop).wait(), .invalid)
        XCTAssertEqual(try plain.check(HTTPHeaders(), on: loop).wait(), .missing)
        XCTAssertEqual(try plain.check(HTTPHeaders([("Authorization", "Basic %%%")]), on: loop).wait(), .invalid)
        XCTAssertEqual(try plain.check(HTTPHeaders([("Authorization", "Digest abc")]), on: loop).wait(), .invalid)

        let file = """
            # comment
            ann:$2y$04$abcdefghijklmnopqrstuujydOTSfIH/d5oUHpsygqV5X9xJLQc6e

            ben:$5$abc$/LKlXd6vuvdFX3oWbf2vGk3DgflzzsvOtMZsiOxqqY5
            """
        let hashed = BasicAuthenticator(users: try BasicAuthenticator.parseFile(file, file: "users"))
        XCTAssertEqual(
            try hashed.check(self.header("ann", "correct horse"), on: loop).wait(),
            .authenticated(user: "ann")
        )
        XCTAssertEqual(try hashed.check(self.header("ann", "correct horsE"), on: loop).wait(), .invalid)
        XCTAssertEqual(try hashed.check(self.header("ben", "pw"), on: loop).wait(), .authenticated(user: "ben"))
        XCTAssertEqual(try hashed.check(self.header("cat", "pw"), on: loop).wait(), .invalid)
    }

    func testCredentialsFileErrorsNameTheLine() {
        for (text, line) in [
            ("ann:plain\n", 1), ("# c\n\nann\n", 3),
            (
                "ann:$5$abc$/LKlXd6vuvdFX3oWbf2vGk3DgflzzsvOtMZsiOxqqY5\nann:$5$abc$/LKlXd6vuvdFX3oWbf2vGk3DgflzzsvOtMZsiOxqqY5\n",
                2
            ),
            (":$5$abc$x\n", 1), ("ann:$1$md5isnotallowed\n", 1),
        ] {
            XCTAssertThrowsError(try BasicAuthenticator.parseFile(text, file: "users")) { error in
                XCTAssertEqual((error as? AuthFileError)?.line, line, "\(text.debugDescription): \(error)")
            }
        }
        XCTAssertThrowsError(try BasicAuthenticator.parseFile("# nothing\n", file: "users"))
        XCTAssertThrowsError(try BasicAuthenticator.parseSource("nocolon"))
    }

    func testConstantTimeEquality() {
        XCTAssertTrue(BasicAuthenticator.constantTimeEquals([1, 2, 3], [1, 2, 3]))
        XCTAssertFalse(BasicAuthenticator.constantTimeEquals([1, 2, 3], [1, 2, 4]))
        XCTAssertFalse(BasicAuthenticator.constantTimeEquals([1, 2, 3], [1, 2]))
        XCTAssertFalse(BasicAuthenticator.constantTimeEquals([], [0]))
        XCTAssertTrue(BasicAuthenticator.constantTimeEquals([], []))
    }

    // MARK: admission with an identity

    func request(_ uri: String) -> HTTPRequestHead {
        HTTPRequestHead(
            version: .http1_1,
            method: .GET,
            uri: uri,
            headers: HTTPHeaders([
                ("Host", "h"), ("Upgrade", "websocket"), ("Connection", "Upgrade"),
                ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="), ("Sec-WebSocket-Version", "13"),
            ])
        )
    }

    func testAuthenticationAndClientCertificatesInTheDecision() {
        var ops = Target(name: "ops", backend: .tcp(host: "127.0.0.1", port: 1))
        ops.clientCertNames = ["alice", "Carol@Example.test"]
        let open = Target(name: "open", backend: .tcp(host: "127.0.0.1", port: 2))
        let table = TargetTable(mode: .tokens(["ops": ops, "open": open]))
        let policy = UpgradePolicy()
        func status(_ uri: String, _ identity: UpgradePolicy.ClientIdentity) -> (Int, String) {
            switch policy.decide(self.request(uri), targets: table, identity: identity) {
            case .accept: return (101, "")
            case .reject(let rejection): return (Int(rejection.status.code), rejection.reason)
            }
        }
        XCTAssertEqual(status("/?token=open", .init(authentication: .missing)).0, 401)
        XCTAssertEqual(status("/?token=nope", .init(authentication: .invalid)).0, 401)  // before the token lookup
        XCTAssertEqual(status("/?token=open", .init(authentication: .authenticated(user: "u"))).0, 101)
        XCTAssertEqual(status("/?token=open", .init()).0, 101)
        XCTAssertEqual(status("/?token=ops", .init()).1, "client certificate required")
        XCTAssertEqual(
            status("/?token=ops", .init(certificateNames: ["bob", "bob.example.test"])).1,
            "client certificate not allowed for this target"
        )
        XCTAssertEqual(status("/?token=ops", .init(certificateNames: ["alice"])).0, 101)
        XCTAssertEqual(status("/?token=ops", .init(certificateNames: ["carol", "carol@example.test"])).0, 101)
        // A server-wide list (ClientCertCNAuth) applies to targets without their own.
        let global = UpgradePolicy(clientCertNames: ["bob"])
        if case .accept = global.decide(
            self.request("/?token=open"),
            targets: table,
            identity: .init(certificateNames: ["carol"])
        ) {
            XCTFail("carol accepted by a server-wide list of bob")
        }
        if case .reject(let r) = global.decide(
            self.request("/?token=open"),
            targets: table,
            identity: .init(certificateNames: ["BOB"])
        ) {
            XCTFail("bob refused: \(r)")
        }
        if case .reject(let r) = global.decide(
            self.request("/?token=ops"),
            targets: table,
            identity: .init(certificateNames: ["alice"])
        ) {
            XCTFail("the target's own list must win: \(r)")
        }
        guard
            case .reject(let rejection) = policy.decide(
                self.request("/?token=open"),
                targets: table,
                identity: .init(authentication: .missing)
            )
        else {
            return XCTFail("accepted")
        }
        XCTAssertEqual(rejection.headers.first?.0, "WWW-Authenticate")
        XCTAssertEqual(rejection.headers.first?.1, "Basic realm=\"wsbridge\", charset=\"UTF-8\"")
    }

    // MARK: targets and certificates

    func testYAMLTargetTLSAndProxyProtocolKeys() throws {
        let text = """
            targets:
              a:
                backend: db.internal:5432
                tls: true
                proxy_protocol: v2
              b:
                backend: 10.0.0.1:5900
                tls: { ca: ca.pem, server_name: vnc.internal, insecure: false, client_cert: /c.pem, client_key: k.pem }
                client_cert_names: [alice]
              c:
                backend: 10.0.0.1:5901
                tls: false
            """
        let contents = try YAMLTargetsParser.parse(text, file: "/etc/wsbridge/t.yaml")
        let byToken = Dictionary(uniqueKeysWithValues: contents.entries.map { ($0.token, $0.target) })
        XCTAssertEqual(byToken["a"]?.tls, BackendTLS())
        XCTAssertEqual(byToken["a"]?.proxyProtocol, .v2)
        XCTAssertEqual(
            byToken["b"]?.tls,
            BackendTLS(
                ca: "/etc/wsbridge/ca.pem",
                serverName: "vnc.internal",
                clientCertificate: "/c.pem",
                clientKey: "/etc/wsbridge/k.pem"
            )
        )
        XCTAssertEqual(byToken["b"]?.clientCertNames, ["alice"])
        XCTAssertNil(byToken["c"]?.tls)
        for (bad, line) in [
            ("targets:\n  a:\n    backend: h:1\n    tls: { sni: x }\n", 4),
            ("targets:\n  a:\n    backend: h:1\n    tls: yes please\n", 4),
            ("targets:\n  a:\n    backend: h:1\n    proxy_protocol: v3\n", 4),
            ("targets:\n  a:\n    unix: /x.sock\n    tls: true\n", 2),
            ("targets:\n  a:\n    backend: h:1\n    tls: { insecure: maybe }\n", 4),
            ("targets:\n  a:\n    backend: h:1\n    client_cert_names: []\n", 4),
        ] {
            XCTAssertThrowsError(try YAMLTargetsParser.parse(bad, file: "t.yaml")) { error in
                XCTAssertEqual((error as? TargetsFileError)?.line, line, "\(bad): \(error)")
            }
        }
    }

    func testServerNameMatching() {
        XCTAssertTrue(ServerTLSSettings.matches(pattern: "a.example.com", name: "a.example.com"))
        XCTAssertTrue(ServerTLSSettings.matches(pattern: "A.Example.com", name: "a.example.com"))
        XCTAssertTrue(ServerTLSSettings.matches(pattern: "*.example.com", name: "x.example.com"))
        XCTAssertFalse(ServerTLSSettings.matches(pattern: "*.example.com", name: "example.com"))
        XCTAssertFalse(ServerTLSSettings.matches(pattern: "*.example.com", name: "a.b.example.com"))
        XCTAssertFalse(ServerTLSSettings.matches(pattern: "*.example.com", name: ".example.com"))
        XCTAssertEqual(ServerTLSSettings.parseVersion("tlsv1_3"), .tlsv13)
        XCTAssertEqual(ServerTLSSettings.parseVersion("default"), .tlsv12)
        XCTAssertNil(ServerTLSSettings.parseVersion("sslv3"))
    }

    func testBackendServerNameDefaultsToTheHostUnlessItIsAnAddress() {
        XCTAssertEqual(BackendTLS().serverHostname(for: "db.internal"), "db.internal")
        XCTAssertNil(BackendTLS().serverHostname(for: "10.0.0.1"))
        XCTAssertNil(BackendTLS().serverHostname(for: "::1"))
        XCTAssertEqual(BackendTLS(serverName: "x").serverHostname(for: "10.0.0.1"), "x")
    }
}
