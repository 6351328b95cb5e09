import XCTest

@testable import WSBridge

final class WrappedCommandTests: XCTestCase {
    /// websockify's throttle: a fourth start waits until the last three starts are 10 s old on average.
    func testRespawnIsThrottledAsWebsockifyDoes() {
        let now = ContinuousClock.now
        XCTAssertEqual(WrappedCommand.respawnDelay(starts: [now - .seconds(1), now], now: now), .zero)
        XCTAssertEqual(
            WrappedCommand.respawnDelay(starts: [now - .seconds(3), now - .seconds(2), now - .seconds(1)], now: now),
            .seconds(8)
        )
        XCTAssertEqual(
            WrappedCommand.respawnDelay(starts: [now - .seconds(30), now - .seconds(20), now - .seconds(1)], now: now),
            .zero
        )
    }
}
