import XCTest

@testable import WSBridge

final class ProxyProtocolTests: XCTestCase {
    let signature: [UInt8] = [0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A]

    func parse(_ text: String) -> ProxyHeader.ParseResult { ProxyHeader.parse(Array(text.utf8)) }

    func testV1Valid() {
        XCTAssertEqual(
            self.parse("PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\nGET"),
            .header(
                .init(
                    version: .v1,
                    addresses: .tcp4(
                        source: "192.0.2.1",
                        sourcePort: 56324,
                        destination: "198.51.100.2",
                        destinationPort: 443
                    )
                ),
                length: 45
            )
        )
        XCTAssertEqual(
            self.parse("PROXY TCP6 2001:DB8::1 ::1 0 65535\r\n"),
            .header(
                .init(
                    version: .v1,
                    addresses: .tcp6(source: "2001:db8::1", sourcePort: 0, destination: "::1", destinationPort: 65535)
                ),
                length: 36
            )
        )
        XCTAssertEqual(self.parse("PROXY UNKNOWN\r\n"), .header(.init(version: .v1, addresses: .unknown), length: 15))
        XCTAssertEqual(
            self.parse("PROXY UNKNOWN ffff::1 ::1 1 2\r\n"),
            .header(.init(version: .v1, addresses: .unknown), length: 31)
        )
    }

    func testV1Incremental() {
        let full = "PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\n"
        for end in 1..<full.utf8.count {
            XCTAssertEqual(ProxyHeader.parse(Array(full.utf8.prefix(end))), .incomplete, "prefix of \(end) bytes")
        }
    }

    func testV1Malformed() {
        let corpus = [
            "GET / HTTP/1.1\r\n", "proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n", "PROXY  TCP4 1.2.3.4 5.6.7.8 1 2\r\n",
            "PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n", "PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",
            "PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n",
            "PROXY TCP4 1.2.3.256 5.6.7.8 1 2\r\n", "PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n",
            "PROXY TCP4 1.2.3 5.6.7.8 1 2\r\n",
            "PROXY TCP4 ::1 5.6.7.8 1 2\r\n", "PROXY TCP6 1.2.3.4 ::1 1 2\r\n",
            "PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n",
            "PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n", "PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n",
            "PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n",
            "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\r\n",
            "PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n",
            "PROXY\r\n", "PROXY \r\n", "PROXY TCP4 1.2.3.4\t5.6.7.8 1 2\r\n",
            "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\u{7F}\r\n",
            "PROXY TCP4 1.2.3.4 5.6.7.8 1 é\r\n", "PROXY " + String(repeating: "9", count: 120),
            "PROXY TCP4 " + String(repeating: "1", count: 100) + "\r\n",
        ]
        for text in corpus {
            guard case .invalid = self.parse(text) else {
                XCTFail("accepted: \(text.debugDescription) as \(self.parse(text))")
                continue
            }
        }
    }

    func v2(_ command: UInt8, _ family: UInt8, _ body: [UInt8]) -> [UInt8] {
        self.signature + [command, family, UInt8(body.count >> 8), UInt8(body.count & 0xFF)] + body
    }

    func testV2Valid() {
        let tcp4 = self.v2(0x21, 0x11, [192, 0, 2, 1, 198, 51, 100, 2, 0xDC, 0x04, 0x01, 0xBB])
        XCTAssertEqual(
            ProxyHeader.parse(tcp4 + [0x47]),
            .header(
                .init(
                    version: .v2,
                    addresses: .tcp4(
                        source: "192.0.2.1",
                        sourcePort: 56324,
                        destination: "198.51.100.2",
                        destinationPort: 443
                    )
                ),
                length: 28
            )
        )
        var v6body = [UInt8](repeating: 0, count: 36)
        v6body[0] = 0x20
        v6body[1] = 0x01
        v6body[2] = 0x0d
        v6body[3] = 0xb8
        v6body[15] = 1
        v6body[31] = 1
        v6body[33] = 80
        v6body[35] = 81
        XCTAssertEqual(
            ProxyHeader.parse(self.v2(0x21, 0x21, v6body)),
            .header(
                .init(
                    version: .v2,
                    addresses: .tcp6(source: "2001:db8::1", sourcePort: 80, destination: "::1", destinationPort: 81)
                ),
                length: 52
            )
        )
        // TLVs after the addresses are skipped.
        XCTAssertEqual(
            ProxyHeader.parse(self.v2(0x21, 0x11, Array(tcp4[16...]) + [0x04, 0x00, 0x01, 0x00])),
            .header(
                .init(
                    version: .v2,
                    addresses: .tcp4(
                        source: "192.0.2.1",
                        sourcePort: 56324,
                        destination: "198.51.100.2",
                        destinationPort: 443
                    )
                ),
                length: 32
            )
        )
        XCTAssertEqual(
            ProxyHeader.parse(self.v2(0x20, 0x00, [])),
            .header(.init(version: .v2, addresses: .unknown), length: 16)
        )
        XCTAssertEqual(
            ProxyHeader.parse(self.v2(0x20, 0x11, [1, 2, 3])),
            .header(.init(version: .v2, addresses: .unknown), length: 19)
        )
        XCTAssertEqual(
            ProxyHeader.parse(self.v2(0x21, 0x00, [])),
            .header(.init(version: .v2, addresses: .unknown), length: 16)
        )
        XCTAssertEqual(
            ProxyHeader.parse(self.v2(0x21, 0x31, [UInt8](repeating: 0, count: 216))),
            .header(.init(version: .v2, addresses: .unknown), length: 232)
        )
        for end in 1..<tcp4.count {
            XCTAssertEqual(ProxyHeader.parse(Array(tcp4.prefix(end))), .incomplete, "prefix of \(end) bytes")
        }
    }

    func testV2Malformed() {
        let corpus: [[UInt8]] = [
            [0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0B],
            self.v2(0x11, 0x11, [UInt8](repeating: 0, count: 12)),  // version 1 in a v2 header
            self.v2(0x31, 0x11, [UInt8](repeating: 0, count: 12)),
            self.v2(0x22, 0x11, [UInt8](repeating: 0, count: 12)),  // command 2
            self.v2(0x21, 0x12, [UInt8](repeating: 0, count: 12)),  // UDP
            self.v2(0x21, 0x22, [UInt8](repeating: 0, count: 36)),
            self.v2(0x21, 0x11, [UInt8](repeating: 0, count: 11)),  // truncated addresses
            self.v2(0x21, 0x21, [UInt8](repeating: 0, count: 35)),
            self.v2(0x21, 0x31, [UInt8](repeating: 0, count: 215)),
            self.v2(0x21, 0x41, [UInt8](repeating: 0, count: 12)),
            [0x0D, 0x0A, 0x0D, 0x0A, 0x01],
        ]
        for bytes in corpus {
            guard case .invalid = ProxyHeader.parse(bytes) else {
                XCTFail("accepted: \(bytes) as \(ProxyHeader.parse(bytes))")
                continue
            }
        }
    }

    /// Random inputs never crash the parser; whatever it accepts re-encodes to a header it accepts the same way.
    func testRandomInputs() {
        var generator = SystemRandomNumberGenerator()
        for round in 0..<20_000 {
            var bytes: [UInt8]
            switch round % 3 {
            case 0: bytes = Array("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n".utf8)
            case 1: bytes = self.v2(0x21, 0x11, [1, 2, 3, 4, 5, 6, 7, 8, 0, 1, 0, 2])
            default:
                bytes = (0..<Int.random(in: 0...40, using: &generator)).map { _ in
                    UInt8.random(in: 0...255, using: &generator)
                }
            }
            for _ in 0..<Int.random(in: 0...3, using: &generator) where !bytes.isEmpty {
                bytes[Int.random(in: 0..<bytes.count, using: &generator)] = UInt8.random(in: 0...255, using: &generator)
            }
            if case .header(let header, let length) = ProxyHeader.parse(bytes) {
                XCTAssertLessThanOrEqual(length, bytes.count)
                if header.addresses != .unknown {
                    guard case .header(let again, _) = ProxyHeader.parse(header.encoded()) else {
                        return XCTFail("re-encoded header refused: \(header)")
                    }
                    XCTAssertEqual(again.addresses, header.addresses)
                }
            }
        }
    }

    func testEncodingIsExact() {
        XCTAssertEqual(
            ProxyHeader.forConnection(
                version: .v1,
                source: ("::ffff:192.0.2.1", 1234),
                destination: ("198.51.100.2", 443)
            ).encoded(),
            Array("PROXY TCP6 ::ffff:192.0.2.1 ::ffff:198.51.100.2 1234 443\r\n".utf8)
        )
        XCTAssertEqual(
            ProxyHeader.forConnection(version: .v1, source: ("192.0.2.1", 1234), destination: ("198.51.100.2", 443))
                .encoded(),
            Array("PROXY TCP4 192.0.2.1 198.51.100.2 1234 443\r\n".utf8)
        )
        XCTAssertEqual(
            ProxyHeader.forConnection(version: .v2, source: ("192.0.2.1", 1234), destination: ("198.51.100.2", 443))
                .encoded(),
            self.signature + [0x21, 0x11, 0x00, 0x0C, 192, 0, 2, 1, 198, 51, 100, 2, 0x04, 0xD2, 0x01, 0xBB]
        )
        XCTAssertEqual(
            ProxyHeader.forConnection(version: .v2, source: ("2001:db8::1", 1), destination: ("::1", 2)).encoded(),
            self.signature + [0x21, 0x21, 0x00, 36, 0x20, 0x01, 0x0d, 0xb8] + [UInt8](repeating: 0, count: 11) + [1]
                + [UInt8](repeating: 0, count: 15) + [1, 0, 1, 0, 2]
        )
        XCTAssertEqual(
            ProxyHeader.forConnection(version: .v1, source: nil, destination: nil).encoded(),
            Array("PROXY UNKNOWN\r\n".utf8)
        )
        XCTAssertEqual(
            ProxyHeader.forConnection(version: .v2, source: nil, destination: nil).encoded(),
            self.signature + [0x20, 0x00, 0x00, 0x00]
        )
    }
}
