import NIOCore
import NIOWebSocket
import XCTest

@testable import WSBridge

final class EchoFramerTests: XCTestCase {
    private typealias Header = FrameParser.DataFrameHeader

    private func describe(_ frame: WebSocketFrame) -> String {
        let opcode = "\(frame.opcode)".replacingOccurrences(of: "WebSocketOpcode.", with: "")
        return "\(frame.fin ? "F" : "-") \(opcode) \(String(decoding: frame.data.readableBytesView, as: UTF8.self))"
    }

    func testAFrameThatArrivesWholeIsMirroredExactly() {
        var framer = EchoFramer()
        XCTAssertNil(framer.frameStarted(Header(opcode: .text, fin: true, length: 5)))
        XCTAssertEqual(self.describe(framer.payload(ByteBuffer(string: "hello"))), "F text hello")
        XCTAssertNil(framer.frameStarted(Header(opcode: .binary, fin: false, length: 2)))
        XCTAssertEqual(self.describe(framer.payload(ByteBuffer(string: "ab"))), "- binary ab")
        XCTAssertNil(framer.frameStarted(Header(opcode: .continuation, fin: true, length: 1)))
        XCTAssertEqual(self.describe(framer.payload(ByteBuffer(string: "c"))), "F continuation c")
    }

    func testEmptyFramesComeBackAtOnce() {
        var framer = EchoFramer()
        let empty = framer.frameStarted(Header(opcode: .text, fin: true, length: 0))
        XCTAssertEqual(empty.map(self.describe), "F text ")
        let emptyFragment = framer.frameStarted(Header(opcode: .binary, fin: false, length: 0))
        XCTAssertEqual(emptyFragment.map(self.describe), "- binary ")
        let emptyEnd = framer.frameStarted(Header(opcode: .continuation, fin: true, length: 0))
        XCTAssertEqual(emptyEnd.map(self.describe), "F continuation ")
    }

    func testAFrameThatArrivesInPiecesComesBackAsFragmentsOfTheSameMessage() {
        var framer = EchoFramer()
        XCTAssertNil(framer.frameStarted(Header(opcode: .text, fin: true, length: 9)))
        XCTAssertEqual(self.describe(framer.payload(ByteBuffer(string: "abc"))), "- text abc")
        XCTAssertEqual(self.describe(framer.payload(ByteBuffer(string: "def"))), "- continuation def")
        XCTAssertEqual(self.describe(framer.payload(ByteBuffer(string: "ghi"))), "F continuation ghi")
        // A non-final frame in pieces: no FIN on its last piece either.
        XCTAssertNil(framer.frameStarted(Header(opcode: .binary, fin: false, length: 4)))
        XCTAssertEqual(self.describe(framer.payload(ByteBuffer(string: "12"))), "- binary 12")
        XCTAssertEqual(self.describe(framer.payload(ByteBuffer(string: "34"))), "- continuation 34")
        XCTAssertNil(framer.frameStarted(Header(opcode: .continuation, fin: true, length: 2)))
        XCTAssertEqual(self.describe(framer.payload(ByteBuffer(string: "56"))), "F continuation 56")
    }
}

/// Echo sessions through the whole client pipeline, in memory.
final class EchoSessionTests: XCTestCase {

    private let echoTable = TargetTable(mode: .tokens(["selftest": Target(name: "selftest", backend: .echo)]))

    private func openSession(configure: (inout BridgeConfiguration) -> Void = { _ in }) throws -> PipelineHarness {
        let harness = try PipelineHarness(table: self.echoTable, configure: configure)
        try harness.send(PipelineHarness.upgradeRequest(uri: "/?token=selftest"))
        let (head, rest) = PipelineHarness.splitHead(try harness.output())
        XCTAssertTrue(head.hasPrefix("HTTP/1.1 101 Switching Protocols"), head)
        XCTAssertEqual(rest, [])
        XCTAssertNil(harness.backend, "an echo target connects no backend")
        return harness
    }

    /// (FIN, opcode, payload) of each server frame, from raw bytes.
    private func frames(_ bytes: [UInt8]) -> [(Bool, UInt8, [UInt8])] {
        ServerFrame.parse(bytes).map { frame in
            XCTAssertFalse(frame.masked, "server frames are not masked")
            return (frame.fin, frame.opcode, frame.payload)
        }
    }

    private func summary(_ bytes: [UInt8]) -> [String] {
        self.frames(bytes).map { "\($0.0 ? "F" : "-") \($0.1) \(String(decoding: $0.2, as: UTF8.self))" }
    }

    func testMessagesComeBackWithTheirOpcodes() throws {
        let harness = try self.openSession()
        try harness.send(FrameBuilder.text("héllo").bytes + FrameBuilder.binary(Array("bin".utf8)).bytes)
        XCTAssertEqual(self.summary(try harness.output()), ["F 1 héllo", "F 2 bin"])

        // Empty messages, text and binary.
        try harness.send(FrameBuilder.text("").bytes + FrameBuilder.binary([]).bytes)
        XCTAssertEqual(self.summary(try harness.output()), ["F 1 ", "F 2 "])

        // A fragmented message with a ping between its fragments: mirrored as it arrives, the pong in between.
        try harness.send(FrameBuilder.text("frag", fin: false).bytes)
        try harness.send(FrameBuilder(opcode: 0x9, payload: Array("p".utf8)).bytes)
        try harness.send(FrameBuilder(opcode: 0x0, payload: Array("ment".utf8), fin: false).bytes)
        try harness.send(FrameBuilder(opcode: 0x0, payload: [], fin: true).bytes)
        XCTAssertEqual(self.summary(try harness.output()), ["- 1 frag", "F 10 p", "- 0 ment", "F 0 "])
        XCTAssertTrue(harness.client.isActive)
    }

    func testAFrameSplitAcrossReadsComesBackInPieces() throws {
        let harness = try self.openSession()
        let bytes = FrameBuilder.binary(Array("0123456789".utf8)).bytes  // 6 header bytes, then payload
        try harness.send(Array(bytes[0..<10]))
        try harness.send(Array(bytes[10...]))
        XCTAssertEqual(self.summary(try harness.output()), ["- 2 0123", "F 0 456789"])
    }

    func testCloseHandshakeAndProtocolErrorsAreTheRelays() throws {
        let harness = try self.openSession()
        try harness.send(FrameBuilder.close(4321, Array("bye".utf8)).bytes)
        let frames = self.frames(try harness.output())
        XCTAssertEqual(frames.count, 1)
        XCTAssertEqual(frames.first?.1, 0x8)
        XCTAssertEqual(frames.first?.2, [0x10, 0xE1], "the client's code, echoed")
        XCTAssertFalse(harness.client.isActive)

        let bad = try self.openSession()
        try bad.send(FrameBuilder.text("ok").bytes + FrameBuilder(opcode: 0x1, payload: [0xC0, 0xAF]).bytes)
        let badFrames = self.frames(try bad.output())
        XCTAssertEqual(badFrames.map(\.1), [0x1, 0x8])
        XCTAssertEqual(badFrames.last?.2, [0x03, 0xEF] + Array("invalid UTF-8 in text message".utf8))
        XCTAssertFalse(bad.client.isActive)
    }

    func testShutdownSends1001AndLaterDataIsNotEchoed() throws {
        let harness = try self.openSession()
        harness.client.pipeline.fireUserInboundEventTriggered(BridgeShutdownEvent())
        harness.loop.run()
        try harness.send(FrameBuilder.text("late").bytes)
        let frames = self.frames(try harness.output())
        XCTAssertEqual(frames.map(\.1), [0x8])
        XCTAssertEqual(frames.first?.2, [0x03, 0xE9] + Array("server shutting down".utf8))
        try harness.send(FrameBuilder.close(1001).bytes)
        XCTAssertFalse(harness.client.isActive)
    }

    func testClientReadsAreHeldWhileTheClientCannotTakeMore() throws {
        let harness = try self.openSession()
        harness.client.isWritable = false
        harness.client.pipeline.fireChannelWritabilityChanged()
        let before = harness.reads.reads
        harness.client.read()
        XCTAssertEqual(harness.reads.reads, before, "an echo reads no more than the client takes")
        harness.client.isWritable = true
        harness.client.pipeline.fireChannelWritabilityChanged()
        XCTAssertEqual(harness.reads.reads, before + 1, "the held read is issued once the client drains")

        // After our Close a held read is issued anyway: the client's Close must be read.
        harness.client.isWritable = false
        harness.client.pipeline.fireChannelWritabilityChanged()
        harness.client.read()
        XCTAssertEqual(harness.reads.reads, before + 1)
        harness.client.pipeline.fireUserInboundEventTriggered(BridgeShutdownEvent())
        harness.loop.run()
        XCTAssertEqual(harness.reads.reads, before + 2)
    }

    func testKeepalivePingsAndDeadPeerDetectionWorkAsInARelay() throws {
        let harness = try self.openSession {
            $0.pingInterval = .seconds(5)
            $0.pongTimeout = .seconds(3)
        }
        harness.loop.advanceTime(by: .seconds(5))
        XCTAssertEqual(self.frames(try harness.output()).map(\.1), [0x9], "a keepalive ping")
        harness.loop.advanceTime(by: .seconds(3))
        XCTAssertFalse(harness.client.isActive, "no answer: dropped")
    }
}
