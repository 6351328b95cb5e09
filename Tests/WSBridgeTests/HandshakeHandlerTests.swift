import NIOCore
import NIOEmbedded
import XCTest

@testable import WSBridge

/// The handshake owner in memory: what it keeps before the 101, when it stops reading, and what a revocation
/// between the decision and the 101 does.
final class HandshakeHandlerTests: XCTestCase {

    /// A connector whose connect completes when the test says so.
    private final class PendingConnect: @unchecked Sendable {  // only touched on the embedded loop
        var promise: EventLoopPromise<BackendHandler>?
        var backend: EmbeddedChannel?

        var connector: BackendConnector {
            BackendConnector { _, eventLoop in
                let promise = eventLoop.makePromise(of: BackendHandler.self)
                self.promise = promise
                return promise.futureResult
            }
        }

        func complete(loop: EmbeddedEventLoop) throws {
            let (channel, handler) = try PipelineHarness.connectedBackend(on: loop)
            self.backend = channel
            self.promise?.succeed(handler)
        }
    }

    func testEarlyBytesAreBoundedThenReadsStopUntilThe101() throws {
        let pending = PendingConnect()
        let harness = try PipelineHarness(connector: pending.connector) { $0.maxEarlyBytes = 100 }
        let frame = FrameBuilder.binary(Array(repeating: 7, count: 150)).bytes
        try harness.send(Array(PipelineHarness.upgradeRequest().utf8) + frame)
        XCTAssertEqual(try harness.output(), [], "no 101 while the backend connects")
        let reads = harness.reads.reads
        harness.client.read()
        XCTAssertEqual(harness.reads.reads, reads, "over the early-bytes bound: the client is not read")

        try pending.complete(loop: harness.loop)
        harness.loop.run()
        let (head, _) = PipelineHarness.splitHead(try harness.output())
        XCTAssertTrue(head.hasPrefix("HTTP/1.1 101"), head)
        XCTAssertEqual(harness.reads.reads, reads + 1, "the held read is issued after the 101")
        var delivered: [UInt8] = []
        while let buffer = try pending.backend?.readOutbound(as: ByteBuffer.self) {
            delivered += buffer.readableBytesView
        }
        XCTAssertEqual(delivered, Array(repeating: 7, count: 150), "the kept frame reaches the backend")
        XCTAssertNil(
            try? harness.client.pipeline.syncOperations.handler(type: HandshakeHandler.self),
            "the owner is gone"
        )
    }

    func testReadsContinueBelowTheBound() throws {
        let pending = PendingConnect()
        let harness = try PipelineHarness(connector: pending.connector)
        try harness.send(PipelineHarness.upgradeRequest())
        let reads = harness.reads.reads
        harness.client.read()
        XCTAssertEqual(harness.reads.reads, reads + 1)
    }

    func testATokenRevokedBeforeThe101IsRefusedAsUnknown() throws {
        let pending = PendingConnect()
        let table = TargetTable(mode: .tokens(["echo": Target(name: "e", backend: .tcp(host: "127.0.0.1", port: 1))]))
        let harness = try PipelineHarness(table: table, connector: pending.connector)
        try harness.send(PipelineHarness.upgradeRequest())
        XCTAssertEqual(harness.server.revokeSessions(token: "echo"), 1, "registered from the decision on")
        harness.loop.run()
        let (head, _) = PipelineHarness.splitHead(try harness.output())
        XCTAssertTrue(head.hasPrefix("HTTP/1.1 404 "), head)
        XCTAssertFalse(harness.client.isActive)
        try pending.complete(loop: harness.loop)
        harness.loop.run()
        XCTAssertEqual(pending.backend?.isActive, false, "a connect that ends after the refusal is closed")
    }

    func testTheHandshakeDeadlineDoesNotCoverTheBackendConnect() throws {
        let pending = PendingConnect()
        let harness = try PipelineHarness(connector: pending.connector) { $0.handshakeTimeout = .seconds(2) }
        try harness.send(PipelineHarness.upgradeRequest())
        harness.loop.advanceTime(by: .seconds(5))
        XCTAssertEqual(try harness.output(), [])
        XCTAssertTrue(harness.client.isActive)
        try pending.complete(loop: harness.loop)
        harness.loop.run()
        XCTAssertTrue(PipelineHarness.splitHead(try harness.output()).0.hasPrefix("HTTP/1.1 101"))
    }

    func testHandshakeCapsCloseAtAcceptAndFreeTheirSlots() throws {
        let limiter = HandshakeLimiter(limits: .init(total: 3, perClient: 2))
        let a1 = try XCTUnwrap(limiter.acquire(client: "a"))
        _ = try XCTUnwrap(limiter.acquire(client: "a"))
        XCTAssertNil(limiter.acquire(client: "a"), "per client")
        var later = try XCTUnwrap(limiter.acquire(client: nil))
        XCTAssertNil(limiter.acquire(client: "b"), "total")
        XCTAssertFalse(limiter.assign(&later, to: "a"), "a PROXY header naming a full client")
        XCTAssertEqual(limiter.inProgress, 2)
        limiter.release(a1)
        XCTAssertNotNil(limiter.acquire(client: "b"))
    }
}
