import NIOCore
import NIOHTTP1
import XCTest

@testable import WSBridge

/// Upgrade requests with a body or with duplicated key headers get 400 at once, in memory and through the whole
/// pipeline.
final class StrictHeadTests: XCTestCase {
    private func status(_ extra: String, table: TargetTable? = nil) throws -> String {
        let harness = try PipelineHarness(
            table: table ?? TargetTable(mode: .tokens(["echo": Target(name: "e", backend: .echo)]))
        )
        try harness.send(PipelineHarness.upgradeRequest(extra: extra))
        let (head, _) = PipelineHarness.splitHead(try harness.output())
        if !head.hasPrefix("HTTP/1.1 101") { XCTAssertFalse(harness.client.isActive, "closed after \(head)") }
        return String(head.prefix(12))
    }

    func testBodiesAndDuplicatesAre400() throws {
        for extra in [
            "Content-Length: 10\r\n", "Transfer-Encoding: chunked\r\n", "Content-Length: 0\r\nContent-Length: 0\r\n",
            "Host: other.example.com\r\n", "Origin: https://a.example\r\nOrigin: https://b.example\r\n",
            "Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAA==\r\n", "Sec-WebSocket-Version: 13\r\n",
        ] {
            XCTAssertEqual(try self.status(extra), "HTTP/1.1 400", extra)
        }
        XCTAssertEqual(try self.status("Content-Length: 0\r\n"), "HTTP/1.1 101", "an empty body is no body")
    }

    func testStrictCheckReasons() {
        func head(_ extra: [(String, String)]) -> HTTPRequestHead {
            var headers = HTTPHeaders([("Host", "x"), ("Upgrade", "websocket")])
            headers.add(contentsOf: extra)
            return HTTPRequestHead(version: .http1_1, method: .GET, uri: "/", headers: headers)
        }
        XCTAssertEqual(UpgradePolicy.strictHeadCheck(head([]))?.kind, nil)
        XCTAssertEqual(UpgradePolicy.strictHeadCheck(head([("Content-Length", "3")]))?.kind, .requestBody)
        XCTAssertEqual(UpgradePolicy.strictHeadCheck(head([("Transfer-Encoding", "identity")]))?.kind, .requestBody)
        XCTAssertEqual(UpgradePolicy.strictHeadCheck(head([("Host", "y")]))?.kind, .duplicateHeader)
        XCTAssertEqual(
            UpgradePolicy.strictHeadCheck(head([("Origin", "a"), ("origin", "b")]))?.reason,
            "duplicate Origin header"
        )
        let plain = HTTPRequestHead(
            version: .http1_1,
            method: .POST,
            uri: "/",
            headers: HTTPHeaders([("Host", "x"), ("Content-Length", "5")])
        )
        XCTAssertNil(UpgradePolicy.strictHeadCheck(plain), "bodies of plain requests are not the upgrade's business")
        let twoHosts = HTTPRequestHead(
            version: .http1_1,
            method: .GET,
            uri: "/",
            headers: HTTPHeaders([("Host", "x"), ("Host", "y")])
        )
        XCTAssertEqual(UpgradePolicy.strictHeadCheck(twoHosts)?.kind, .duplicateHeader)
    }
}
