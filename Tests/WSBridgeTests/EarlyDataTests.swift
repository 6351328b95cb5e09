import NIOCore
import XCTest

@testable import WSBridge

/// Bytes a client sends with its upgrade request, or before the 101 (a client must not, but any can), reach the
/// session as frames.
///
/// Regression (found by the FuzzUpgradePolicy fuzz harness): they went through NIO's WebSocketFrameDecoder, which
/// leaves the pipeline one event loop turn after it is asked to. For an echo target (upgraded at once) the decoded
/// WebSocketFrame reached our FrameDecoderHandler, which takes bytes, and the process crashed; for a relay target
/// the frames fell off the end of the pipeline and were lost.
final class EarlyDataTests: XCTestCase {

    func testFramesInTheSameReadAsTheRequestAreEchoed() throws {
        let table = TargetTable(mode: .tokens(["selftest": Target(name: "selftest", backend: .echo)]))
        let harness = try PipelineHarness(table: table)
        let request = Array(PipelineHarness.upgradeRequest(uri: "/?token=selftest").utf8)
        try harness.send(request + FrameBuilder.text("early").bytes + FrameBuilder(opcode: 0x9, payload: [1]).bytes)
        let (head, rest) = PipelineHarness.splitHead(try harness.output())
        XCTAssertTrue(head.hasPrefix("HTTP/1.1 101"), head)
        let frames = ServerFrame.parse(rest)
        XCTAssertEqual(frames.map(\.opcode), [0x1, 0xA])
        XCTAssertEqual(frames.first?.payload, Array("early".utf8))
        XCTAssertTrue(harness.client.isActive)
    }

    func testFramesInTheSameReadAsTheRequestReachTheBackend() throws {
        let harness = try PipelineHarness()
        let request = Array(PipelineHarness.upgradeRequest().utf8)
        try harness.send(request + FrameBuilder.binary(Array("early".utf8)).bytes + FrameBuilder.text(" bird").bytes)
        let (head, _) = PipelineHarness.splitHead(try harness.output())
        XCTAssertTrue(head.hasPrefix("HTTP/1.1 101"), head)
        XCTAssertEqual(try harness.backendOutput(), Array("early bird".utf8))
    }

    func testFramesSentInSeparateReadsBeforeThe101AreKept() throws {
        let table = TargetTable(mode: .tokens(["selftest": Target(name: "selftest", backend: .echo)]))
        let harness = try PipelineHarness(table: table)
        let request = Array(PipelineHarness.upgradeRequest(uri: "/?token=selftest").utf8)
        // Pieces written before the event loop runs: the upgrade and the frames are handled in one go.
        try harness.client.writeInbound(ByteBuffer(bytes: request.prefix(40)))
        try harness.client.writeInbound(ByteBuffer(bytes: request.dropFirst(40) + FrameBuilder.binary([1, 2]).bytes))
        try harness.client.writeInbound(ByteBuffer(bytes: FrameBuilder.binary([3]).bytes))
        harness.loop.run()
        let (head, rest) = PipelineHarness.splitHead(try harness.output())
        XCTAssertTrue(head.hasPrefix("HTTP/1.1 101"), head)
        XCTAssertEqual(ServerFrame.parse(rest).map(\.payload), [[1, 2], [3]])
    }
}
