import NIOCore
import XCTest

@testable import WSBridge

final class FrameParserTests: XCTestCase {
    /// Feeds `bytes` in chunks of `chunk` bytes (keeping leftovers, as the handler does) and collects events.
    private func parse(
        _ bytes: [UInt8],
        chunk: Int = .max,
        maxFrameSize: UInt64 = 1 << 20,
        maxMessageSize: UInt64 = 1 << 20,
        reportsDataFrames: Bool = false
    ) -> ([FrameParser.Event], FrameParser.Failure?) {
        var parser = FrameParser(
            maxFrameSize: maxFrameSize,
            maxMessageSize: maxMessageSize,
            reportsDataFrames: reportsDataFrames
        )
        var events: [FrameParser.Event] = []
        var pending = ByteBuffer()
        var offset = 0
        while offset < bytes.count {
            let end = min(bytes.count, offset + max(1, chunk))
            pending.writeBytes(bytes[offset..<end])
            offset = end
            do {
                while let event = try parser.next(&pending) { events.append(event) }
            } catch let failure as FrameParser.Failure {
                return (events, failure)
            } catch {
                XCTFail("unexpected \(error)")
            }
        }
        return (events, nil)
    }

    private func payloadBytes(_ events: [FrameParser.Event]) -> [UInt8] {
        events.flatMap { event -> [UInt8] in
            if case .data(let buffer) = event { return Array(buffer.readableBytesView) }
            return []
        }
    }

    func testBinaryPayloadIsUnmaskedAcrossEveryChunkSize() {
        let payload = (0..<300).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ 3) }
        let bytes = FrameBuilder.binary(payload).bytes
        for chunk in [1, 2, 3, 5, 7, 13, 64, 299, 1000] {
            let (events, failure) = self.parse(bytes, chunk: chunk)
            XCTAssertNil(failure)
            XCTAssertEqual(self.payloadBytes(events), payload, "chunk \(chunk)")
            XCTAssertFalse(
                events.contains { if case .data(let b) = $0 { return b.readableBytes == 0 } else { return false } }
            )
        }
    }

    func testLengthEncodingsAndEmptyFrames() {
        for size in [0, 1, 125, 126, 127, 65535, 65536, 70000] {
            let payload = (0..<size).map { UInt8(truncatingIfNeeded: $0) }
            let (events, failure) = self.parse(FrameBuilder.binary(payload).bytes, chunk: 4096)
            XCTAssertNil(failure, "size \(size)")
            XCTAssertEqual(self.payloadBytes(events), payload, "size \(size)")
        }
    }

    func testWordWiseUnmaskMatchesBytewiseForEveryPhaseAndLength() {
        let mask: (UInt8, UInt8, UInt8, UInt8) = (0xA1, 0x02, 0xF3, 0x44)
        let maskArray: [UInt8] = [0xA1, 0x02, 0xF3, 0x44]
        for length in 0..<80 {
            for phase in 0..<4 {
                var data = (0..<length).map { UInt8(truncatingIfNeeded: $0 &* 31) }
                let expected = data.enumerated().map { $0.element ^ maskArray[($0.offset + phase) % 4] }
                data.withUnsafeMutableBytes { FrameParser.unmask($0, mask: mask, offset: phase) }
                XCTAssertEqual(data, expected, "length \(length) phase \(phase)")
            }
        }
    }

    func testFragmentedMessageWithInterleavedPing() {
        var bytes = FrameBuilder.binary([1, 2, 3], fin: false).bytes
        bytes += FrameBuilder(opcode: 0x9, payload: [9, 9]).bytes
        bytes += FrameBuilder(opcode: 0x0, payload: [4, 5], fin: false).bytes
        bytes += FrameBuilder(opcode: 0x0, payload: [6], fin: true).bytes
        bytes += FrameBuilder.binary([7]).bytes
        let (events, failure) = self.parse(bytes, chunk: 3)
        XCTAssertNil(failure)
        XCTAssertEqual(self.payloadBytes(events), [1, 2, 3, 4, 5, 6, 7])
        XCTAssertTrue(events.contains(.ping(ByteBuffer(bytes: [9, 9]))))
    }

    func testTextMessagesAreValidatedAcrossFragments() {
        let euro = Array("€".utf8)  // E2 82 AC
        var bytes = FrameBuilder(opcode: 0x1, payload: [euro[0]], fin: false).bytes
        bytes += FrameBuilder(opcode: 0x0, payload: [euro[1], euro[2]], fin: true).bytes
        XCTAssertNil(self.parse(bytes).1)

        let truncated = FrameBuilder(opcode: 0x1, payload: [euro[0], euro[1]], fin: true).bytes
        XCTAssertEqual(self.parse(truncated).1?.code, .invalidPayload)

        let invalid = FrameBuilder.init(opcode: 0x1, payload: [0x61, 0xFF]).bytes
        XCTAssertEqual(self.parse(invalid).1, FrameParser.Failure(.invalidPayload, "invalid UTF-8 in text message"))

        // Binary frames are not validated.
        XCTAssertNil(self.parse(FrameBuilder.binary([0xFF, 0xFE]).bytes).1)
    }

    func testProtocolViolations() {
        var unmasked = FrameBuilder.binary([1])
        unmasked.masked = false
        var rsv = FrameBuilder.binary([1])
        rsv.rsv = 0b100
        var longLength = FrameBuilder.binary([])
        longLength.declaredLength = 1 << 63
        let cases: [(String, [UInt8], CloseCode)] = [
            ("unmasked", unmasked.bytes, .protocolError),
            ("rsv", rsv.bytes, .protocolError),
            ("opcode 3", FrameBuilder(opcode: 0x3).bytes, .protocolError),
            ("opcode 0xB", FrameBuilder(opcode: 0xB).bytes, .protocolError),
            ("long ping", FrameBuilder(opcode: 0x9, payload: Array(repeating: 0, count: 126)).bytes, .protocolError),
            ("fragmented ping", FrameBuilder(opcode: 0x9, payload: [], fin: false).bytes, .protocolError),
            ("lonely continuation", FrameBuilder(opcode: 0x0, payload: [1]).bytes, .protocolError),
            (
                "new message inside fragment",
                FrameBuilder.binary([1], fin: false).bytes + FrameBuilder.binary([2]).bytes, .protocolError
            ),
            ("length high bit", longLength.bytes, .protocolError),
            ("close 1 byte", FrameBuilder(opcode: 0x8, payload: [3]).bytes, .protocolError),
            ("close code 999", FrameBuilder.close(999).bytes, .protocolError),
            ("close code 1005", FrameBuilder.close(1005).bytes, .protocolError),
            ("close code 1006", FrameBuilder.close(1006).bytes, .protocolError),
            ("close code 1015", FrameBuilder.close(1015).bytes, .protocolError),
            ("close code 2000", FrameBuilder.close(2000).bytes, .protocolError),
            ("close code 5000", FrameBuilder.close(5000).bytes, .protocolError),
            ("close reason utf8", FrameBuilder.close(1000, [0xC0, 0xAF]).bytes, .invalidPayload),
        ]
        for (name, bytes, code) in cases {
            XCTAssertEqual(self.parse(bytes).1?.code, code, name)
        }
    }

    func testMessageSizeLimitCountsEveryFrameOfAMessage() {
        let part = Array(repeating: UInt8(7), count: 400)
        let ping = FrameBuilder(opcode: 0x9, payload: [1]).bytes
        // 400 + 400 + 200 = the limit exactly, with a ping between the fragments: relayed whole.
        let fits =
            FrameBuilder.binary(part, fin: false).bytes + ping
            + FrameBuilder(opcode: 0x0, payload: part, fin: false).bytes
            + FrameBuilder(opcode: 0x0, payload: Array(part[..<200]), fin: true).bytes
        for chunk in [1, 7, Int.max] {
            let (events, failure) = self.parse(fits, chunk: chunk, maxFrameSize: 1000, maxMessageSize: 1000)
            XCTAssertNil(failure, "chunk \(chunk)")
            XCTAssertEqual(self.payloadBytes(events), part + part + Array(part[..<200]), "chunk \(chunk)")
        }
        // One byte more: refused at the header of the frame that crosses the limit, before its payload is handed on.
        let over =
            FrameBuilder.binary(part, fin: false).bytes + FrameBuilder(opcode: 0x0, payload: part, fin: false).bytes
            + FrameBuilder(opcode: 0x0, payload: Array(part[..<201]), fin: true).bytes
        let (events, failure) = self.parse(over, maxFrameSize: 1000, maxMessageSize: 1000)
        XCTAssertEqual(failure, FrameParser.Failure(.tooBig, "message too big"))
        XCTAssertEqual(self.payloadBytes(events), part + part)
        // A new message starts from zero: two messages of 600 bytes each pass a limit of 1000.
        let two =
            FrameBuilder.binary(Array(repeating: 1, count: 600)).bytes
            + FrameBuilder.text(String(repeating: "a", count: 600)).bytes
        XCTAssertNil(self.parse(two, maxFrameSize: 1000, maxMessageSize: 1000).1)
        // The message limit is never below the frame limit.
        XCTAssertEqual(FrameParser(maxFrameSize: 5000, maxMessageSize: 1000).maxMessageSize, 5000)
    }

    func testFrameSizeLimit() {
        var huge = FrameBuilder.binary([])
        huge.declaredLength = (1 << 63) - 1
        XCTAssertEqual(self.parse(huge.bytes).1, FrameParser.Failure(.tooBig, "frame too big"))
        XCTAssertEqual(
            self.parse(FrameBuilder.binary(Array(repeating: 1, count: 1025)).bytes, maxFrameSize: 1024).1?.code,
            .tooBig
        )
        XCTAssertNil(self.parse(FrameBuilder.binary(Array(repeating: 1, count: 1024)).bytes, maxFrameSize: 1024).1)
    }

    func testDataFrameHeadersAreReportedOnlyWhenAsked() {
        var bytes = FrameBuilder.text("héllo", fin: false).bytes
        bytes += FrameBuilder(opcode: 0x9, payload: [7]).bytes
        bytes += FrameBuilder(opcode: 0x0, payload: [], fin: false).bytes
        bytes += FrameBuilder(opcode: 0x0, payload: Array(" wörld".utf8), fin: true).bytes
        bytes += FrameBuilder.binary([]).bytes
        bytes += FrameBuilder.binary(Array(repeating: 0xAB, count: 300)).bytes
        typealias Header = FrameParser.DataFrameHeader
        let expectedHeaders: [Header] = [
            Header(opcode: .text, fin: false, length: 6),
            Header(opcode: .continuation, fin: false, length: 0),
            Header(opcode: .continuation, fin: true, length: 7),
            Header(opcode: .binary, fin: true, length: 0),
            Header(opcode: .binary, fin: true, length: 300),
        ]
        for chunk in [1, 2, 5, 64, 10_000] {
            let (events, failure) = self.parse(bytes, chunk: chunk, reportsDataFrames: true)
            XCTAssertNil(failure, "chunk \(chunk)")
            let headers = events.compactMap { event -> Header? in
                if case .dataFrame(let header) = event { return header }
                return nil
            }
            XCTAssertEqual(headers, expectedHeaders, "chunk \(chunk)")
            // Every header comes before its payload, and the payload adds up to the announced length.
            var remaining: UInt64 = 0
            for event in events {
                switch event {
                case .dataFrame(let header):
                    XCTAssertEqual(remaining, 0, "chunk \(chunk): a header inside the previous frame's payload")
                    remaining = header.length
                case .data(let buffer):
                    XCTAssertGreaterThan(buffer.readableBytes, 0)
                    remaining -= UInt64(buffer.readableBytes)
                default:
                    break
                }
            }
            XCTAssertEqual(remaining, 0)
            XCTAssertEqual(self.payloadBytes(events), Array("héllo wörld".utf8) + Array(repeating: 0xAB, count: 300))
            XCTAssertTrue(events.contains(.ping(ByteBuffer(bytes: [7]))))
        }
        // The relay's parser reports payload only.
        let (relayEvents, relayFailure) = self.parse(bytes, chunk: 3)
        XCTAssertNil(relayFailure)
        XCTAssertFalse(relayEvents.contains { if case .dataFrame = $0 { return true } else { return false } })
    }

    func testAnEmptyFinalFrameThatLeavesUTF8IncompleteFailsBeforeItsHeaderIsReported() {
        let euro = Array("€".utf8)
        var bytes = FrameBuilder(opcode: 0x1, payload: [euro[0], euro[1]], fin: false).bytes
        bytes += FrameBuilder(opcode: 0x0, payload: [], fin: true).bytes
        for reports in [false, true] {
            let (events, failure) = self.parse(bytes, reportsDataFrames: reports)
            XCTAssertEqual(failure, FrameParser.Failure(.invalidPayload, "invalid UTF-8 in text message"))
            XCTAssertFalse(events.contains(.dataFrame(.init(opcode: .continuation, fin: true, length: 0))))
        }
        // Likewise the last piece of a non-empty final frame is never handed out.
        let truncated = FrameBuilder(opcode: 0x1, payload: Array("ab".utf8) + [euro[0]]).bytes
        let (events, failure) = self.parse(truncated, reportsDataFrames: true)
        XCTAssertEqual(failure?.code, .invalidPayload)
        XCTAssertEqual(events, [.dataFrame(.init(opcode: .text, fin: true, length: 3))])
    }

    func testFailureIsSticky() {
        var parser = FrameParser()
        var buffer = FrameBuilder(opcode: 0x3).buffer
        XCTAssertThrowsError(try parser.next(&buffer))
        var good = FrameBuilder.binary([1]).buffer
        XCTAssertThrowsError(try parser.next(&good))
    }

    func testCloseFrames() {
        XCTAssertEqual(self.parse(FrameBuilder.close(nil).bytes).0, [.close(nil, "")])
        XCTAssertEqual(self.parse(FrameBuilder.close(1000, Array("bye".utf8)).bytes).0, [.close(.normal, "bye")])
        for valid: UInt16 in [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 3999, 4000, 4999] {
            XCTAssertEqual(self.parse(FrameBuilder.close(valid).bytes).0, [.close(CloseCode(valid), "")], "\(valid)")
        }
        // Bytes after a Close are ignored.
        let after = FrameBuilder.close(1000).bytes + FrameBuilder.binary([1]).bytes
        let (events, failure) = self.parse(after)
        XCTAssertNil(failure)
        XCTAssertEqual(events, [.close(.normal, "")])
    }
}

final class UTF8ValidatorTests: XCTestCase {
    func testAgreesWithTheStandardLibraryOnRandomInput() {
        var generator = SystemRandomNumberGenerator()
        let alphabet: [UInt8] = [
            0x00, 0x41, 0x7F, 0x80, 0xBF, 0xC0, 0xC1, 0xC2, 0xDF, 0xE0, 0xED, 0xEF, 0xF0, 0xF4, 0xF5, 0xFF, 0xA0, 0x9F,
            0x90, 0x8F,
        ]
        for _ in 0..<20000 {
            let length = Int.random(in: 0...8, using: &generator)
            let bytes = (0..<length).map { _ in alphabet.randomElement(using: &generator)! }
            let expected = String(validating: bytes, as: UTF8.self) != nil
            var validator = UTF8Validator()
            let ok = validator.feed(bytes) && validator.isComplete
            XCTAssertEqual(ok, expected, "\(bytes.map { String($0, radix: 16) })")
            var fast = UTF8Validator()
            let okFast = bytes.withUnsafeBytes { fast.feed($0) } && fast.isComplete
            XCTAssertEqual(okFast, expected)
        }
    }

    func testLongASCIIAndSplitCodePoints() {
        let text = String(repeating: "abcdefgh", count: 100) + "€𝄞" + String(repeating: "x", count: 17)
        let bytes = Array(text.utf8)
        for split in 0...bytes.count {
            var validator = UTF8Validator()
            XCTAssertTrue(bytes[..<split].withUnsafeBytes { validator.feed($0) })
            XCTAssertTrue(bytes[split...].withUnsafeBytes { validator.feed($0) })
            XCTAssertTrue(validator.isComplete)
        }
        var surrogate = UTF8Validator()
        XCTAssertFalse(surrogate.feed([0xED, 0xA0, 0x80]))
        var overlong = UTF8Validator()
        XCTAssertFalse(overlong.feed([0xE0, 0x80, 0xAF]))
        var tooHigh = UTF8Validator()
        XCTAssertFalse(tooHigh.feed([0xF4, 0x90, 0x80, 0x80]))
    }
}
