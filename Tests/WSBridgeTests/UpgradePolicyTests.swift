import NIOHTTP1
import XCTest

@testable import WSBridge

final class UpgradePolicyTests: XCTestCase {
    let echo = Target(name: "ec…", backend: .tcp(host: "127.0.0.1", port: 7000))

    func request(
        _ uri: String = "/?token=echo",
        method: HTTPMethod = .GET,
        version: HTTPVersion = .http1_1,
        removing: [String] = [],
        extra: [(String, String)] = []
    ) -> HTTPRequestHead {
        var headers = HTTPHeaders([
            ("Host", "bridge.example.com"),
            ("Upgrade", "websocket"),
            ("Connection", "keep-alive, Upgrade"),
            ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ("Sec-WebSocket-Version", "13"),
        ])
        for name in removing { headers.remove(name: name) }
        for (name, value) in extra { headers.replaceOrAdd(name: name, value: value) }
        return HTTPRequestHead(version: version, method: method, uri: uri, headers: headers)
    }

    func table(origins: [String]? = nil, targetOrigins: [String]? = nil) throws -> TargetTable {
        var target = self.echo
        target.origins = try targetOrigins.map(OriginAllowList.init)
        return TargetTable(mode: .tokens(["echo": target]), origins: try origins.map(OriginAllowList.init))
    }

    func status(_ head: HTTPRequestHead, _ table: TargetTable, requireOrigin: Bool = false) -> Int {
        switch UpgradePolicy(requireOrigin: requireOrigin).decide(head, targets: table) {
        case .accept: return 101
        case .reject(let rejection): return Int(rejection.status.code)
        }
    }

    func testAcceptsAWellFormedRequestAndPicksBinary() throws {
        let table = try self.table()
        guard case .accept(let admission) = UpgradePolicy().decide(self.request(), targets: table) else {
            return XCTFail("refused")
        }
        XCTAssertEqual(admission.target, self.echo)
        XCTAssertNil(admission.subprotocol)
        let offered = self.request(extra: [("Sec-WebSocket-Protocol", "chat, binary")])
        guard case .accept(let withBinary) = UpgradePolicy().decide(offered, targets: table) else { return XCTFail() }
        XCTAssertEqual(withBinary.subprotocol, "binary")
        let others = self.request(extra: [("Sec-WebSocket-Protocol", "chat, base64")])
        guard case .accept(let none) = UpgradePolicy().decide(others, targets: table) else { return XCTFail() }
        XCTAssertNil(none.subprotocol)
    }

    func testEachRejectionHasItsStatus() throws {
        let table = try self.table()
        XCTAssertEqual(self.status(self.request(removing: ["Upgrade"]), table), 404)
        XCTAssertEqual(self.status(self.request(method: .POST, removing: ["Upgrade"]), table), 405)
        XCTAssertEqual(self.status(self.request(method: .POST), table), 405)
        XCTAssertEqual(self.status(self.request(version: .http1_0), table), 400)
        XCTAssertEqual(self.status(self.request(extra: [("Upgrade", "h2c")]), table), 400)
        XCTAssertEqual(self.status(self.request(extra: [("Connection", "keep-alive")]), table), 400)
        XCTAssertEqual(self.status(self.request(removing: ["Host"]), table), 400)
        XCTAssertEqual(self.status(self.request(removing: ["Sec-WebSocket-Key"]), table), 400)
        XCTAssertEqual(self.status(self.request(extra: [("Sec-WebSocket-Key", "c2hvcnQ=")]), table), 400)
        XCTAssertEqual(
            self.status(self.request(extra: [("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZR==")]), table),
            400
        )
        XCTAssertEqual(self.status(self.request(extra: [("Sec-WebSocket-Version", "8")]), table), 426)
        XCTAssertEqual(self.status(self.request(removing: ["Sec-WebSocket-Version"]), table), 426)
        XCTAssertEqual(self.status(self.request("/"), table), 400)
        XCTAssertEqual(self.status(self.request("/?token=nope"), table), 404)
        XCTAssertEqual(self.status(self.request(), table, requireOrigin: true), 403)

        if case .reject(let rejection) = UpgradePolicy().decide(
            self.request(extra: [("Sec-WebSocket-Version", "8")]),
            targets: table
        ) {
            XCTAssertEqual(rejection.headers.first?.0, "Sec-WebSocket-Version")
            XCTAssertEqual(rejection.headers.first?.1, "13")
        } else {
            XCTFail("accepted version 8")
        }
    }

    func testOriginsGlobalWildcardAndPerTarget() throws {
        let global = try self.table(origins: ["https://app.example.com", "https://*.example.org"])
        func origin(_ value: String) -> HTTPRequestHead { self.request(extra: [("Origin", value)]) }
        XCTAssertEqual(self.status(origin("https://app.example.com"), global), 101)
        XCTAssertEqual(self.status(origin("https://APP.example.com:443"), global), 101)
        XCTAssertEqual(self.status(origin("http://app.example.com"), global), 403)
        XCTAssertEqual(self.status(origin("https://a.b.example.org"), global), 101)
        XCTAssertEqual(self.status(origin("https://example.org"), global), 403)
        XCTAssertEqual(self.status(origin("https://evil.com"), global), 403)
        XCTAssertEqual(self.status(origin("null"), global), 403)
        XCTAssertEqual(self.status(self.request(), global), 101, "no Origin: non-browser clients are accepted")
        // An unknown origin gets 403 even for unknown tokens: it learns nothing about tokens.
        XCTAssertEqual(self.status(self.request("/?token=nope", extra: [("Origin", "https://evil.com")]), global), 403)

        let perTarget = try self.table(
            origins: ["https://app.example.com"],
            targetOrigins: ["https://admin.example.com"]
        )
        XCTAssertEqual(self.status(origin("https://admin.example.com"), perTarget), 101)
        XCTAssertEqual(self.status(origin("https://app.example.com"), perTarget), 403)
    }

    func testTokenSources() {
        func head(_ uri: String, cookie: String? = nil) -> HTTPRequestHead {
            var headers = HTTPHeaders()
            if let cookie { headers.add(name: "Cookie", value: cookie) }
            return HTTPRequestHead(version: .http1_1, method: .GET, uri: uri, headers: headers)
        }
        XCTAssertEqual(UpgradePolicy().token(in: head("/?token=abc")), "abc")
        XCTAssertEqual(UpgradePolicy().token(in: head("/websockify?x=1&token=a%2Fb+c")), "a/b c")
        XCTAssertEqual(UpgradePolicy().token(in: head("/", cookie: "a=1; token=xyz; b=2")), "xyz")
        XCTAssertEqual(UpgradePolicy().token(in: head("/?token=q", cookie: "token=c")), "q", "query wins over cookie")
        XCTAssertNil(UpgradePolicy().token(in: head("/?tokenx=1")))
        XCTAssertNil(UpgradePolicy().token(in: head("/?token=")))
        XCTAssertNil(UpgradePolicy().token(in: head("/?token=%zz")))
    }

    func testSingleTargetModeIgnoresTokens() {
        let table = TargetTable(mode: .single(self.echo))
        XCTAssertEqual(self.status(self.request("/"), table), 101)
        XCTAssertEqual(self.status(self.request("/?token=whatever"), table), 101)
    }

    func testTokenSourcesInTheirDocumentedOrder() {
        func head(_ uri: String, _ headers: [(String, String)] = []) -> HTTPRequestHead {
            HTTPRequestHead(version: .http1_1, method: .GET, uri: uri, headers: HTTPHeaders(headers))
        }
        let policy = UpgradePolicy(tokenSources: .init(pathTemplate: "/t/{token}"))
        let everything = [
            ("Authorization", "Bearer bearer-tok"), ("Sec-WebSocket-Protocol", "binary, token.proto-tok"),
            ("Cookie", "token=cookie-tok"),
        ]
        XCTAssertEqual(policy.token(in: head("/t/path-tok?token=query-tok", everything)), "query-tok")
        XCTAssertEqual(policy.token(in: head("/t/path-tok", everything)), "path-tok")
        XCTAssertEqual(policy.token(in: head("/t/a%20b")), "a b")
        XCTAssertEqual(
            policy.token(in: head("/x/path-tok", everything)),
            "bearer-tok",
            "the path must match the template"
        )
        XCTAssertEqual(policy.token(in: head("/", Array(everything.dropFirst()))), "proto-tok")
        XCTAssertEqual(policy.token(in: head("/", Array(everything.dropFirst(2)))), "cookie-tok")
        XCTAssertNil(policy.token(in: head("/t/")))
        XCTAssertNil(policy.token(in: head("/", [("Authorization", "Basic dTpw")])))

        let host = UpgradePolicy(tokenSources: .init(hostToken: true))
        XCTAssertEqual(
            host.token(in: head("/?token=ignored", [("Host", "vnc-7.example.com:6080")])),
            "vnc-7.example.com"
        )
        XCTAssertEqual(host.token(in: head("/", [("Host", "[::1]:6080")])), "::1")
    }

    func testSubprotocolTokenIsEchoedWhenBinaryIsNotOffered() throws {
        let table = try self.table()
        let onlyToken = self.request("/", extra: [("Sec-WebSocket-Protocol", "token.echo")])
        guard case .accept(let admission) = UpgradePolicy().decide(onlyToken, targets: table) else { return XCTFail() }
        XCTAssertEqual(admission.subprotocol, "token.echo")
        XCTAssertEqual(admission.token, "echo")
        let withBinary = self.request("/", extra: [("Sec-WebSocket-Protocol", "token.echo, binary")])
        guard case .accept(let second) = UpgradePolicy().decide(withBinary, targets: table) else { return XCTFail() }
        XCTAssertEqual(second.subprotocol, "binary")
    }

    func testAllowClients() throws {
        var target = self.echo
        target.allowClients = [CIDR("10.0.0.0/8")!, CIDR("2001:db8::/32")!]
        let table = TargetTable(mode: .tokens(["echo": target]))
        func status(_ client: String?) -> Int {
            switch UpgradePolicy().decide(self.request(), targets: table, client: client) {
            case .accept: return 101
            case .reject(let rejection): return Int(rejection.status.code)
            }
        }
        XCTAssertEqual(status("10.1.2.3"), 101)
        XCTAssertEqual(status("::ffff:10.9.9.9"), 101)
        XCTAssertEqual(status("2001:db8:1::5"), 101)
        XCTAssertEqual(status("192.168.1.1"), 403)
        XCTAssertEqual(status(nil), 403)
    }

    func testCIDRParsing() {
        XCTAssertTrue(CIDR("127.0.0.1")!.contains("127.0.0.1"))
        XCTAssertFalse(CIDR("127.0.0.1")!.contains("127.0.0.2"))
        XCTAssertTrue(CIDR("0.0.0.0/0")!.contains("8.8.8.8"))
        XCTAssertTrue(CIDR("::/0")!.contains("::1"))
        XCTAssertTrue(CIDR("fe80::/10")!.contains("fe80::1%eth0"))
        XCTAssertTrue(CIDR("::ffff:0:0/96")!.contains("::ffff:1.2.3.4"))
        XCTAssertTrue(CIDR("1::")!.contains("1:0:0:0:0:0:0:0"))
        for bad in [
            "10.0.0.0/33", "10.0.0", "1.2.3.256", "::1::2", "1:2:3:4:5:6:7:8:9", "x", "10.0.0.0/", "fe80::/129",
        ] {
            XCTAssertNil(CIDR(bad), bad)
        }
    }
}
