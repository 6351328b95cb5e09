import Logging
import NIOCore
import NIOEmbedded
import NIOHTTP1
import NIOPosix
import XCTest

@testable import WSBridge

/// The whole client pipeline in memory: raw upgrade bytes in, raw response and frame bytes out, with backends that
/// are `EmbeddedChannel`s on the same loop.
final class PipelineTests: XCTestCase {
    func testUpgradeAnswers101WithTheRFCSampleAcceptAndRelays() throws {
        let harness = try PipelineHarness()
        try harness.send(PipelineHarness.upgradeRequest(extra: "Sec-WebSocket-Protocol: chat, binary\r\n"))
        let (head, rest) = PipelineHarness.splitHead(try harness.output())
        XCTAssertTrue(head.hasPrefix("HTTP/1.1 101 Switching Protocols"), head)
        XCTAssertTrue(head.lowercased().contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="), head)
        XCTAssertTrue(head.contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="), head)
        XCTAssertTrue(head.lowercased().contains("sec-websocket-protocol: binary"), head)
        XCTAssertEqual(rest, [])

        // Client → backend: payload bytes only, unmasked.
        try harness.send(FrameBuilder.binary(Array("hello".utf8)).bytes + FrameBuilder.text("wörld").bytes)
        XCTAssertEqual(try harness.backendOutput(), Array("hellowörld".utf8))

        // Backend → client: one binary frame per read.
        try harness.backend!.writeInbound(ByteBuffer(string: "from backend"))
        harness.loop.run()
        let frames = ServerFrame.parse(try harness.output())
        XCTAssertEqual(frames.count, 1)
        XCTAssertEqual(frames.first?.opcode, 0x2)
        XCTAssertEqual(frames.first?.payload, Array("from backend".utf8))

        // Ping is answered with the same payload.
        try harness.send(FrameBuilder(opcode: 0x9, payload: [1, 2, 3]).bytes)
        let pong = ServerFrame.parse(try harness.output())
        XCTAssertEqual(pong.first?.opcode, 0xA)
        XCTAssertEqual(pong.first?.payload, [1, 2, 3])
    }

    func testEachRejectionIsARealHTTPResponseThatClosesTheConnection() throws {
        let table = TargetTable(
            mode: .tokens(["echo": Target(name: "e", backend: .tcp(host: "127.0.0.1", port: 1))]),
            origins: try OriginAllowList(["https://app.example.com"])
        )
        let key = "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        let cases: [(String, String)] = [
            ("GET / HTTP/1.1\r\nHost: x\r\n\r\n", "404"),
            ("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", "405"),
            (
                "GET /?token=echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\(key)Sec-WebSocket-Version: 8\r\n\r\n",
                "426"
            ),
            (
                "GET /?token=echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n",
                "400"
            ),
            (
                "GET /?token=echo HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\(key)Sec-WebSocket-Version: 13\r\n\r\n",
                "400"
            ),
            (
                "GET /?token=echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: keep-alive\r\n\(key)Sec-WebSocket-Version: 13\r\n\r\n",
                "400"
            ),
            (PipelineHarness.upgradeRequest(extra: "Origin: https://evil.example.com\r\n"), "403"),
            (PipelineHarness.upgradeRequest(uri: "/"), "400"),
            (PipelineHarness.upgradeRequest(uri: "/?token=nope"), "404"),
            ("GARBAGE\r\n\r\n", "400"),
            ("GET / HTTP/1.1\r\nHost: x\r\nX-Big: \(String(repeating: "a", count: 20000))\r\n\r\n", "431"),
        ]
        for (request, status) in cases {
            let harness = try PipelineHarness(table: table)
            try harness.send(request)
            let (head, body) = PipelineHarness.splitHead(try harness.output())
            XCTAssertTrue(head.hasPrefix("HTTP/1.1 \(status) "), "\(request.prefix(60)) → \(head)")
            XCTAssertTrue(head.lowercased().contains("connection: close"), head)
            XCTAssertFalse(body.isEmpty, "a one-line reason is in the body")
            XCTAssertFalse(harness.client.isActive, "closed after \(status)")
            if status == "426" { XCTAssertTrue(head.contains("Sec-WebSocket-Version: 13"), head) }
        }
    }

    func testBackendConnectFailureCompletesTheUpgradeThenCloses1014() throws {
        let harness = try PipelineHarness(connectError: IOError(errnoCode: ECONNREFUSED, reason: "connect"))
        try harness.send(PipelineHarness.upgradeRequest())
        let (head, rest) = PipelineHarness.splitHead(try harness.output())
        XCTAssertTrue(head.hasPrefix("HTTP/1.1 101"), head)
        let frames = ServerFrame.parse(rest)
        XCTAssertEqual(frames.count, 1)
        XCTAssertEqual(frames.first?.opcode, 0x8)
        XCTAssertEqual(frames.first?.payload, [0x03, 0xF6] + Array("backend refused".utf8))
        // The client's Close completes the handshake and the server closes the connection.
        try harness.send(FrameBuilder.close(1014).bytes)
        XCTAssertFalse(harness.client.isActive)
    }

    func testHandshakeTimeoutAnswers408() throws {
        let harness = try PipelineHarness { $0.handshakeTimeout = .seconds(3) }
        try harness.send("GET / HTTP/1.1\r\nHost: x\r\n")
        harness.loop.advanceTime(by: .seconds(2))
        XCTAssertTrue(harness.client.isActive)
        harness.loop.advanceTime(by: .seconds(2))
        let (head, _) = PipelineHarness.splitHead(try harness.output())
        XCTAssertTrue(head.hasPrefix("HTTP/1.1 408 Request Timeout"), head)
        XCTAssertFalse(harness.client.isActive)
    }

    func testBackpressureHoldsReadsOnBothSides() throws {
        let harness = try PipelineHarness()
        try harness.send(PipelineHarness.upgradeRequest())
        _ = try harness.output()
        let backend = try XCTUnwrap(harness.backend)

        // Backend cannot take more: the client is not read.
        backend.isWritable = false
        backend.pipeline.fireChannelWritabilityChanged()
        let clientReadsBefore = harness.reads.reads
        harness.client.read()
        XCTAssertEqual(harness.reads.reads, clientReadsBefore, "client read held while the backend is full")
        backend.isWritable = true
        backend.pipeline.fireChannelWritabilityChanged()
        XCTAssertEqual(harness.reads.reads, clientReadsBefore + 1, "held read issued once the backend drains")

        // Client cannot take more: the backend is not read.
        harness.client.isWritable = false
        harness.client.pipeline.fireChannelWritabilityChanged()
        let backendReadsBefore = harness.backendReads.reads
        backend.read()
        XCTAssertEqual(harness.backendReads.reads, backendReadsBefore)
        harness.client.isWritable = true
        harness.client.pipeline.fireChannelWritabilityChanged()
        XCTAssertEqual(harness.backendReads.reads, backendReadsBefore + 1)
    }

    func testProtocolErrorClosesWith1002AndItsReason() throws {
        let harness = try PipelineHarness()
        try harness.send(PipelineHarness.upgradeRequest())
        _ = try harness.output()
        var unmasked = FrameBuilder.binary([1, 2])
        unmasked.masked = false
        try harness.send(unmasked.bytes)
        let frames = ServerFrame.parse(try harness.output())
        XCTAssertEqual(frames.first?.opcode, 0x8)
        XCTAssertEqual(frames.first?.payload, [0x03, 0xEA] + Array("unmasked client frame".utf8))
        XCTAssertFalse(harness.client.isActive)
        XCTAssertEqual(try harness.backendOutput(), [], "nothing from the bad frame reached the backend")
    }

    func testIdleTimeoutCloses1001() throws {
        let harness = try PipelineHarness { $0.idleTimeout = .seconds(10) }
        try harness.send(PipelineHarness.upgradeRequest())
        _ = try harness.output()
        harness.loop.advanceTime(by: .seconds(6))
        try harness.send(FrameBuilder.binary([1]).bytes)
        harness.loop.advanceTime(by: .seconds(6))
        XCTAssertEqual(ServerFrame.parse(try harness.output()).count, 0, "activity moved the deadline")
        harness.loop.advanceTime(by: .seconds(5))
        let frames = ServerFrame.parse(try harness.output())
        XCTAssertEqual(frames.first?.opcode, 0x8)
        XCTAssertEqual(frames.first?.payload, [0x03, 0xE9] + Array("idle timeout".utf8))
    }

    func testDeadPeerIsDroppedAfterThePongDeadline() throws {
        let harness = try PipelineHarness {
            $0.pingInterval = .seconds(5)
            $0.pongTimeout = .seconds(3)
        }
        try harness.send(PipelineHarness.upgradeRequest())
        _ = try harness.output()
        harness.loop.advanceTime(by: .seconds(5))
        XCTAssertEqual(ServerFrame.parse(try harness.output()).first?.opcode, 0x9, "a ping was sent")
        try harness.send(FrameBuilder(opcode: 0xA).bytes)  // pong
        harness.loop.advanceTime(by: .seconds(3))
        XCTAssertTrue(harness.client.isActive, "answered in time")
        harness.loop.advanceTime(by: .seconds(2))  // next ping at 10 s
        _ = try harness.output()
        harness.loop.advanceTime(by: .seconds(3))
        XCTAssertFalse(harness.client.isActive, "no answer: dropped")
    }
}
