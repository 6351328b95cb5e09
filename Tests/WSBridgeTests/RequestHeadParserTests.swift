import Foundation
import NIOCore
import NIOHTTP1
import XCTest

@testable import WSBridge

final class RequestHeadParserTests: XCTestCase {
    private func parse(_ text: String, limit: Int = 1024) -> RequestHeadParser.Result {
        var parser = RequestHeadParser(limit: limit)
        var buffer = ByteBuffer(string: text)
        return parser.feed(&buffer)
    }

    func testAHeadInPiecesAndTheBytesAfterIt() throws {
        var parser = RequestHeadParser(limit: 1024)
        let text = "GET /?token=a HTTP/1.1\r\nHost: x\r\nUpgrade:  websocket \r\n\r\nEARLY"
        var result = RequestHeadParser.Result.incomplete
        for (index, byte) in text.utf8.enumerated() {
            var one = ByteBuffer(bytes: [byte])
            result = parser.feed(&one)
            if case .head = result {
                XCTAssertEqual(index, text.utf8.count - 6, "the head ends at its empty line")
                break
            }
            XCTAssertEqual(result, .incomplete)
        }
        guard case .head(let head, let rest) = result else { return XCTFail("\(result)") }
        XCTAssertEqual(head.method, .GET)
        XCTAssertEqual(head.uri, "/?token=a")
        XCTAssertEqual(head.version, .http1_1)
        XCTAssertEqual(head.headers.first(name: "upgrade"), "websocket")
        XCTAssertEqual(rest.readableBytes, 0, "bytes after the head are those of later reads, not this one")

        var parser2 = RequestHeadParser(limit: 1024)
        var all = ByteBuffer(string: text)
        guard case .head(_, let rest2) = parser2.feed(&all) else { return XCTFail() }
        XCTAssertEqual(String(buffer: rest2), "EARLY")
    }

    func testOversizedHeadsAndTooManyFields() {
        XCTAssertEqual(
            self.parse("GET / HTTP/1.1\r\nX: " + String(repeating: "a", count: 2000) + "\r\n\r\n"),
            .tooLarge
        )
        XCTAssertEqual(
            self.parse("GET / HTTP/1.1\r\nX: " + String(repeating: "a", count: 2000), limit: 1024),
            .tooLarge
        )
        var fields = "GET / HTTP/1.1\r\n"
        for index in 0..<300 { fields += "X\(index): 1\r\n" }
        XCTAssertEqual(self.parse(fields + "\r\n", limit: 1 << 20), .tooLarge)
    }

    func testMalformedHeads() {
        for text in [
            "GARBAGE\r\n\r\n", "GET  / HTTP/1.1\r\n\r\n", "GET / HTTP/2.0\r\n\r\n", "GET / HTTX/1.1\r\n\r\n",
            "GET / HTTP/1.1\r\nHost x\r\n\r\n", "GET / HTTP/1.1\r\n folded: x\r\n\r\n",
            "GET / HTTP/1.1\nHost: x\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\u{01}b\r\n\r\n", "G(T / HTTP/1.1\r\n\r\n",
        ] {
            guard case .malformed = self.parse(text) else { return XCTFail("accepted: \(text.debugDescription)") }
        }
    }

    func testLeadingEmptyLinesAreIgnored() {
        guard case .head(let head, _) = self.parse("\r\n\r\nGET / HTTP/1.0\r\n\r\n") else { return XCTFail() }
        XCTAssertEqual(head.version, .http1_0)
    }

    func testDuplicateHeadersAreKeptForTheStrictCheck() {
        guard case .head(let head, _) = self.parse("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n") else {
            return XCTFail()
        }
        XCTAssertEqual(head.headers["host"], ["a", "b"])
    }

    func testWebSocketAcceptOfTheRFCSample() {
        XCTAssertEqual(WebSocketAccept.value(forKey: "dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
        XCTAssertEqual(WebSocketAccept.value(forKey: "x3JJHMbDL1EzLkh9GBhXDw=="), "HSmrc0sMlYUkAGmm5OPpG2HaGWk=")
        let answer = WebSocketAccept.switchingProtocols(key: "dGhlIHNhbXBsZSBub25jZQ==", subprotocol: "binary")
        XCTAssertEqual(answer.status, .switchingProtocols)
        XCTAssertEqual(answer.headers["Sec-WebSocket-Accept"], ["s3pPLMBiTxaQ9kYGzzhZRbK+xOo="])
        XCTAssertEqual(answer.headers["Sec-WebSocket-Protocol"], ["binary"])
        XCTAssertEqual(answer.headers["Upgrade"], ["websocket"])
    }
}
