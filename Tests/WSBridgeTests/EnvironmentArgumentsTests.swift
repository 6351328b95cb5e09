import XCTest

@testable import WSBridge

final class EnvironmentArgumentsTests: XCTestCase {
    let options: [(String, EnvironmentArguments.Kind)] = [
        ("targets", .option), ("origin", .repeatable), ("require-origin", .flag), ("connect-timeout", .option),
    ]

    func testVariablesBecomeOptionsUnlessTheCommandLineGivesThem() throws {
        let merged = try EnvironmentArguments.merge(
            arguments: ["--connect-timeout", "7", "6080"],
            environment: [
                "WSBRIDGE_TARGETS": "/etc/t.yaml", "WSBRIDGE_CONNECT_TIMEOUT": "3",
                "WSBRIDGE_ORIGIN": "https://a.example, https://b.example", "WSBRIDGE_REQUIRE_ORIGIN": "yes",
                "WSBRIDGE_LISTEN": "9999",
            ],
            options: self.options
        )
        XCTAssertEqual(
            merged,
            [
                "--targets", "/etc/t.yaml", "--origin", "https://a.example", "--origin", "https://b.example",
                "--require-origin", "--connect-timeout", "7", "6080",
            ]
        )
    }

    /// Wrap mode: what follows `--` is the wrapped command's, so its `--connect-timeout` does not hide the variable
    /// and its words are not positional arguments of the bridge.
    func testNothingAfterTheDoubleDashIsScanned() throws {
        let merged = try EnvironmentArguments.merge(
            arguments: ["--", "prog", "--connect-timeout", "1"],
            environment: ["WSBRIDGE_CONNECT_TIMEOUT": "3", "WSBRIDGE_LISTEN": "6080"],
            options: self.options
        )
        XCTAssertEqual(merged, ["--connect-timeout", "3", "6080", "--", "prog", "--connect-timeout", "1"])
    }

    func testPositionalsFromTheEnvironment() throws {
        let merged = try EnvironmentArguments.merge(
            arguments: ["--connect-timeout", "7"],
            environment: ["WSBRIDGE_LISTEN": "6080", "WSBRIDGE_TARGET": "vnc:5900", "WSBRIDGE_REQUIRE_ORIGIN": "0"],
            options: self.options
        )
        XCTAssertEqual(merged, ["6080", "vnc:5900", "--connect-timeout", "7"])
        XCTAssertThrowsError(
            try EnvironmentArguments.merge(
                arguments: [],
                environment: ["WSBRIDGE_TARGET": "x:1"],
                options: self.options
            )
        )
        XCTAssertThrowsError(
            try EnvironmentArguments.merge(
                arguments: [],
                environment: ["WSBRIDGE_REQUIRE_ORIGIN": "maybe"],
                options: self.options
            )
        ) { error in
            XCTAssertEqual("\(error)", "WSBRIDGE_REQUIRE_ORIGIN=maybe: expected 1/true/yes/on or 0/false/no/off")
        }
        XCTAssertEqual(
            EnvironmentArguments.variable(for: "max-connections-per-client"),
            "WSBRIDGE_MAX_CONNECTIONS_PER_CLIENT"
        )
    }
}
