import NIOCore
import XCTest

@testable import WSBridge

/// What a connection sets up is freed when it closes, whatever its ending.
///
/// Regression (found by churning refused requests at the binary, RSS growing about 5 KiB per connection): the
/// HTTP fallback handler and the connection state held each other, so every refused or malformed request leaked
/// both (and what they hold: the logger, the guard handler, the admission closure).
final class ConnectionLifetimeTests: XCTestCase {
    private func fallbackIsFreed(after request: String, file: StaticString = #filePath, line: UInt = #line) throws {
        weak var fallback: HandshakeHandler?
        try autoreleasepool {
            let harness = try PipelineHarness(
                table: TargetTable(mode: .tokens(["echo": Target(name: "e", backend: .echo)]))
            )
            fallback = try harness.client.pipeline.syncOperations.handler(type: HandshakeHandler.self)
            XCTAssertNotNil(fallback, file: file, line: line)
            try harness.send(request)
            _ = try harness.output()
            if harness.client.isActive { try harness.client.close().wait() }
            harness.loop.run()
        }
        XCTAssertNil(
            fallback,
            "the handshake handler outlived its connection: \(request.prefix(30))",
            file: file,
            line: line
        )
    }

    func testARefusedRequestFreesItsHandlers() throws {
        try self.fallbackIsFreed(after: PipelineHarness.upgradeRequest(uri: "/?token=nope"))  // 404
        try self.fallbackIsFreed(after: "GET / HTTP/1.1\r\nHost: x\r\n\r\n")  // 404, not a WebSocket request
        try self.fallbackIsFreed(after: "GARBAGE\r\n\r\n")  // 400 from the parser
    }

    func testAnUpgradedSessionFreesItsHandlers() throws {
        try self.fallbackIsFreed(after: PipelineHarness.upgradeRequest(uri: "/?token=echo"))
    }
}

#if !canImport(ObjectiveC)
    private func autoreleasepool<T>(_ body: () throws -> T) rethrows -> T { try body() }
#endif
