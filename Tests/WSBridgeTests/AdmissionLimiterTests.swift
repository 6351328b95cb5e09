import Dispatch
import NIOConcurrencyHelpers
import NIOCore
import XCTest

@testable import WSBridge

final class AdmissionLimiterTests: XCTestCase {
    let target = Target(name: "t", backend: .tcp(host: "127.0.0.1", port: 1))

    func testGlobalPerClientAndPerTargetLimits() {
        let limiter = AdmissionLimiter(limits: .init(maxSessions: 3, maxSessionsPerClient: 2))
        var limited = self.target
        limited.name = "limited"
        limited.maxSessions = 1
        let a1 = limiter.acquire(client: "a", target: self.target)
        XCTAssertNoThrow(try a1.get())
        XCTAssertNoThrow(try limiter.acquire(client: "a", target: self.target).get())
        guard case .failure(let perClient) = limiter.acquire(client: "a", target: self.target) else { return XCTFail() }
        XCTAssertEqual(perClient.status, .serviceUnavailable)
        XCTAssertEqual(perClient.reason, "too many sessions from this address")
        XCTAssertEqual(perClient.headers.first?.0, "Retry-After")

        XCTAssertNoThrow(try limiter.acquire(client: "b", target: self.target).get())
        guard case .failure(let global) = limiter.acquire(client: "c", target: self.target) else { return XCTFail() }
        XCTAssertEqual(global.reason, "server is at its session limit")

        limiter.release(try! a1.get())
        var other = limited
        other.name = "u"
        XCTAssertNoThrow(try limiter.acquire(client: "c", target: limited).get())
        XCTAssertEqual(limiter.sessions, 3)
        let perTargetLimiter = AdmissionLimiter(limits: .init())
        XCTAssertNoThrow(try perTargetLimiter.acquire(client: "x", target: limited).get())
        guard case .failure(let perTarget) = perTargetLimiter.acquire(client: "y", target: limited) else {
            return XCTFail()
        }
        XCTAssertEqual(perTarget.reason, "target is at its session limit")
        XCTAssertNoThrow(try perTargetLimiter.acquire(client: "y", target: other).get())
    }

    func testAConcurrentBurstAdmitsExactlyTheLimit() {
        let limiter = AdmissionLimiter(limits: .init(maxSessions: 100))
        let admitted = NIOLockedCounter()
        DispatchQueue.concurrentPerform(iterations: 2000) { index in
            if case .success = limiter.acquire(client: "c\(index % 50)", target: self.target) { admitted.add() }
        }
        XCTAssertEqual(admitted.value, 100)
        XCTAssertEqual(limiter.sessions, 100)
    }

    func testHandshakeRateIsATokenBucket() {
        let limiter = AdmissionLimiter(limits: .init(handshakeRate: 2, handshakeBurst: 3))
        let start = NIODeadline.uptimeNanoseconds(1_000_000_000)
        for _ in 0..<3 { XCTAssertNil(limiter.takeHandshake(client: "a", now: start)) }
        let refused = limiter.takeHandshake(client: "a", now: start)
        XCTAssertEqual(refused?.status, .tooManyRequests)
        XCTAssertEqual(refused?.headers.first?.0, "Retry-After")
        XCTAssertEqual(refused?.headers.first?.1, "1")
        XCTAssertNil(limiter.takeHandshake(client: "b", now: start), "buckets are per address")
        XCTAssertNil(limiter.takeHandshake(client: "a", now: start + .milliseconds(500)), "refilled at 2/s")
        XCTAssertNotNil(limiter.takeHandshake(client: "a", now: start + .milliseconds(500)))
    }
}

final class NIOLockedCounter: Sendable {
    private let box = NIOLockedValueBox(0)
    func add() { self.box.withLockedValue { $0 += 1 } }
    var value: Int { self.box.withLockedValue { $0 } }
}
