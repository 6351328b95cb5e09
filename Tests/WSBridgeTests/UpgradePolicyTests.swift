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
        XCTAssertEqual(self.status(self.request(extra: [("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZR==")]), table), 400)
        XCTAssertEqual(self.status(self.request(extra: [("Sec-WebSocket-Version", "8")]), table), 426)
        XCTAssertEqual(self.status(self.request(removing: ["Sec-WebSocket-Version"]), table), 426)
        XCTAssertEqual(self.status(self.request("/"), table), 400)
        XCTAssertEqual(self.status(self.request("/?token=nope"), table), 404)
        XCTAssertEqual(self.status(self.request(), table, requireOrigin: true), 403)

        if case .reject(let rejection) = UpgradePolicy().decide(self.request(extra: [("Sec-WebSocket-Version", "8")]), targets: table) {
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

        let perTarget = try self.table(origins: ["https://app.example.com"], targetOrigins: ["https://admin.example.com"])
        XCTAssertEqual(self.status(origin("https://admin.example.com"), perTarget), 101)
        XCTAssertEqual(self.status(origin("https://app.example.com"), perTarget), 403)
    }

    func testTokenSources() {
        func head(_ uri: String, cookie: String? = nil) -> HTTPRequestHead {
            var headers = HTTPHeaders()
            if let cookie { headers.add(name: "Cookie", value: cookie) }
            return HTTPRequestHead(version: .http1_1, method: .GET, uri: uri, headers: headers)
        }
        XCTAssertEqual(UpgradePolicy.token(in: head("/?token=abc")), "abc")
        XCTAssertEqual(UpgradePolicy.token(in: head("/websockify?x=1&token=a%2Fb+c")), "a/b c")
        XCTAssertEqual(UpgradePolicy.token(in: head("/", cookie: "a=1; token=xyz; b=2")), "xyz")
        XCTAssertEqual(UpgradePolicy.token(in: head("/?token=q", cookie: "token=c")), "q", "query wins over cookie")
        XCTAssertNil(UpgradePolicy.token(in: head("/?tokenx=1")))
        XCTAssertNil(UpgradePolicy.token(in: head("/?token=")))
        XCTAssertNil(UpgradePolicy.token(in: head("/?token=%zz")))
    }

    func testSingleTargetModeIgnoresTokens() {
        let table = TargetTable(mode: .single(self.echo))
        XCTAssertEqual(self.status(self.request("/"), table), 101)
        XCTAssertEqual(self.status(self.request("/?token=whatever"), table), 101)
    }
}
