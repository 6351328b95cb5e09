import Foundation
import Logging
import NIOCore
import NIOPosix
import XCTest

@testable import WSBridge

final class TargetsRereadTests: XCTestCase {
    func testOneLookAtATimeAndAtMostOnePerInterval() {
        var throttle = RereadThrottle(interval: .milliseconds(250))
        let start = NIODeadline.uptimeNanoseconds(1_000_000_000)
        XCTAssertEqual(throttle.unknownToken(now: start), .look)
        throttle.lookStarted(now: start)
        // Concurrent unknown tokens wait for the same look.
        XCTAssertEqual(throttle.unknownToken(now: start + .milliseconds(1)), .join)
        XCTAssertEqual(throttle.unknownToken(now: start + .milliseconds(40)), .join)
        throttle.lookFinished()
        // Within the interval (counted from the start of the last look) the next look waits for its end; the
        // tokens that come meanwhile join it.
        XCTAssertEqual(throttle.unknownToken(now: start + .milliseconds(100)), .lookAfter(.milliseconds(150)))
        XCTAssertEqual(throttle.unknownToken(now: start + .milliseconds(200)), .join)
        throttle.lookStarted(now: start + .milliseconds(250))
        throttle.lookFinished()
        XCTAssertEqual(throttle.unknownToken(now: start + .milliseconds(600)), .look)
    }

    /// A token written after the table was loaded is found at once; an unchanged file is not read again.
    func testAnUnknownTokenRereadsChangedFilesOnly() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent(
            "wsbridge-reread-\(UUID().uuidString)"
        ).path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try "a: 127.0.0.1:1\n".write(toFile: directory + "/one", atomically: true, encoding: .utf8)
        let store = try TargetsStore(loader: TargetsLoader(path: directory))
        let metrics = BridgeMetrics()
        let rereader = try XCTUnwrap(
            TargetsRereader(store: store, interval: .nanoseconds(1), logger: Logger(label: "test"), metrics: metrics)
        )
        let loop = MultiThreadedEventLoopGroup.singleton.next()

        XCTAssertEqual(try rereader.tableForUnknownToken(on: loop).wait().targetCount, 1)
        XCTAssertFalse(Self.render(metrics).contains("wsbridge_targets_rereads_total 1"), "an unchanged file was read")

        try "b: 127.0.0.1:2\n".write(toFile: directory + "/two", atomically: true, encoding: .utf8)
        let table = try rereader.tableForUnknownToken(on: loop).wait()
        XCTAssertEqual(table.targetCount, 2)
        XCTAssertEqual(store.current.targetCount, 2, "a stable read replaces the table in force")
        XCTAssertTrue(Self.render(metrics).contains("wsbridge_targets_rereads_total 1"), Self.render(metrics))
    }

    private static func render(_ metrics: BridgeMetrics) -> String {
        String(decoding: metrics.render(), as: UTF8.self)
    }
}
