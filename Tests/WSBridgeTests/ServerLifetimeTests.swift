import NIOCore
import XCTest

@testable import WSBridge

final class ServerLifetimeTests: XCTestCase {
    func testIdleTimeoutCountsFromTheStartAndFromTheLastSession() {
        var lifetime = ServerLifetime(policy: .init(stopWhenIdleFor: .seconds(120)))
        XCTAssertEqual(lifetime.started(), [.scheduleIdleCheck(generation: 0)])
        lifetime.sessionOpened()
        // The check scheduled at the start is stale once a session opened.
        XCTAssertEqual(lifetime.idleTimerFired(generation: 0), .none)
        lifetime.sessionOpened()
        XCTAssertEqual(lifetime.sessionClosed(), .none, "one session still open")
        XCTAssertEqual(lifetime.sessionClosed(), .scheduleIdleCheck(generation: 3))
        XCTAssertEqual(lifetime.idleTimerFired(generation: 3), .stop(.idleTimeout))
        XCTAssertEqual(lifetime.stopped, .idleTimeout)
        XCTAssertEqual(lifetime.timeoutFired(), .none, "stopped once")
    }

    func testTimeoutAndRunOnce() {
        var timed = ServerLifetime(policy: .init(stopAfter: .seconds(120)))
        XCTAssertEqual(timed.started(), [.scheduleTimeout(.seconds(120))])
        timed.sessionOpened()
        XCTAssertEqual(timed.timeoutFired(), .stop(.timeout), "live sessions do not hold the timeout back")

        var once = ServerLifetime(policy: .init(stopAfterFirstSession: true))
        XCTAssertEqual(once.started(), [])
        once.sessionOpened()
        XCTAssertEqual(once.sessionClosed(), .stop(.runOnce))

        XCTAssertFalse(ServerLifetime.Policy().isEnabled)
    }
}
