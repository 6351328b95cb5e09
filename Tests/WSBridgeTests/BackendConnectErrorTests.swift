import NIOCore
import XCTest

@testable import WSBridge

final class BackendConnectErrorTests: XCTestCase {
    /// Regression (found by Tests/integration/test_faults.py): a connect timeout of any length was reported as
    /// `backend unreachable`, because the check compared with `.connectTimeout(.zero)` only.
    func testAConnectTimeoutOfAnyLengthIsATimeout() {
        for timeout: TimeAmount in [.zero, .milliseconds(500), .seconds(1), .seconds(10)] {
            let classified = BackendConnectError.classify(ChannelError.connectTimeout(timeout))
            XCTAssertEqual(classified.kind, .timeout, "\(timeout)")
            XCTAssertEqual(classified.reason, "backend connect timeout")
        }
    }

    func testOtherErrors() {
        XCTAssertEqual(BackendConnectError.classify(IOError(errnoCode: ECONNREFUSED, reason: "connect")).kind, .refused)
        XCTAssertEqual(BackendConnectError.classify(IOError(errnoCode: ENOENT, reason: "connect")).kind, .refused)
        XCTAssertEqual(
            BackendConnectError.classify(IOError(errnoCode: EHOSTUNREACH, reason: "connect")).kind,
            .unreachable
        )
        XCTAssertEqual(BackendConnectError.classify(ChannelError.ioOnClosedChannel).kind, .unreachable)
    }
}
