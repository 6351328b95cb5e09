import Logging
import NIOConcurrencyHelpers
import XCTest

@testable import WSBridge

/// `StderrLogHandler` writes what swift-log's `StreamLogHandler` writes, byte for byte but the time (which may tick
/// between the two), for the lines wsbridge logs.
final class StderrLogHandlerTests: XCTestCase {
    struct Collect: TextOutputStream, Sendable {
        let lines: NIOLockedValueBox<[String]>
        mutating func write(_ string: String) { self.lines.withLockedValue { $0.append(string) } }
    }

    struct Failure: Error, CustomStringConvertible {
        var description: String { "backend refused" }
    }

    func testLinesAreStreamLogHandlersLines() throws {
        let lines = NIOLockedValueBox<[String]>([])
        var reference = StreamLogHandler(label: "wsbridge", stream: Collect(lines: lines), metadataProvider: nil)
        var ours = StderrLogHandler(label: "wsbridge")
        reference.logLevel = .debug
        ours.logLevel = .debug
        reference[metadataKey: "client"] = "127.0.0.1:4242"
        ours[metadataKey: "client"] = "127.0.0.1:4242"
        let events: [LogEvent] = [
            LogEvent(
                level: .info,
                message: "listening on 127.0.0.1:6080",
                metadata: nil,
                source: "WSBridge",
                file: #file,
                function: #function,
                line: #line
            ),
            LogEvent(
                level: .info,
                message: "session closed",
                metadata: [
                    "up": .stringConvertible(UInt64(14)), "down": "14", "code": .stringConvertible(1000),
                    "target": "e…", "list": .array(["a", .stringConvertible(2)]),
                    "nested": .dictionary(["k": "v"]),
                ],
                source: "WSBridge",
                file: #file,
                function: #function,
                line: #line
            ),
            LogEvent(
                level: .warning,
                message: "no --origin allow-list",
                error: Failure(),
                metadata: [:],
                source: "WSBridge",
                file: #file,
                function: #function,
                line: #line
            ),
        ]
        for event in events {
            reference.log(event: event)
            let line = String(decoding: ours.line(for: event), as: UTF8.self)
            let expected = try XCTUnwrap(lines.withLockedValue { $0.last })
            // TIME LEVEL ...: the time is compared by its shape, the rest byte for byte.
            XCTAssertEqual(line.drop { $0 != " " }, expected.drop { $0 != " " })
            let time = String(line.prefix { $0 != " " })
            XCTAssertNotNil(
                try time.wholeMatch(of: Regex(#"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d{4}"#)),
                "\(time) is not %Y-%m-%dT%H:%M:%S%z"
            )
        }
    }
}
