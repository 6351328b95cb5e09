import Foundation
import XCTest

@testable import WSBridge

final class TargetsParserTests: XCTestCase {
    func testWebsockifyTokenFormat() throws {
        let text = """
            # websockify token file
            vnc1: 10.0.0.5:5900
            \tvnc2:\t192.168.1.2:5901   
            v6bare: ::1:5902
            v6bracket: [fe80::1]:5903

            host: backend.internal:23
            """
        let contents = try TokenFileParser.parse(text, file: "tokens.cfg")
        XCTAssertEqual(contents.entries.map(\.token), ["vnc1", "vnc2", "v6bare", "v6bracket", "host"])
        XCTAssertEqual(
            contents.entries.map(\.target.backend),
            [
                .tcp(host: "10.0.0.5", port: 5900), .tcp(host: "192.168.1.2", port: 5901),
                .tcp(host: "::1", port: 5902), .tcp(host: "fe80::1", port: 5903),
                .tcp(host: "backend.internal", port: 23),
            ]
        )
        XCTAssertEqual(contents.entries.map(\.line), [2, 3, 4, 5, 7])
        XCTAssertEqual(contents.entries[0].target.name, "v…", "a token is never used as the logged name")
    }

    func testTokenFormatErrorsNameTheLine() {
        let cases: [(String, Int, String)] = [
            ("ok: 1.2.3.4:5\nbad 1.2.3.4:5\n", 2, "expected 'token: host:port'"),
            ("a: 1.2.3.4\n", 1, "expected host:port"),
            ("a: 1.2.3.4:70000\n", 1, "invalid port"),
            ("# c\n\na: :5900\n", 3, "missing host"),
        ]
        for (text, line, fragment) in cases {
            XCTAssertThrowsError(try TokenFileParser.parse(text, file: "t.cfg")) { error in
                let error = error as! TargetsFileError
                XCTAssertEqual(error.line, line, text)
                XCTAssertTrue(error.description.hasPrefix("t.cfg:\(line): "), error.description)
                XCTAssertTrue(error.description.contains(fragment), error.description)
            }
        }
    }

    /// Lines end as Python's universal newlines end them (LF, CRLF, lone CR); a leading BOM is dropped.
    func testTokenFileLineEndingsAndBOM() throws {
        let expected = ["a", "b", "c"]
        for text in [
            "# comment\r\na: 1.2.3.4:1\r\nb:\t1.2.3.4:2\r\n\r\nc: 1.2.3.4:3\r\n",
            "# comment\ra: 1.2.3.4:1\rb:\t1.2.3.4:2\r\rc: 1.2.3.4:3",
            "\u{FEFF}# comment\na: 1.2.3.4:1\nb: 1.2.3.4:2\n\nc: 1.2.3.4:3\n",
            "\u{FEFF}a: 1.2.3.4:1\r\nb: 1.2.3.4:2\n\rc: 1.2.3.4:3",
        ] {
            let contents = try TokenFileParser.parse(text, file: "t.cfg")
            XCTAssertEqual(contents.entries.map(\.token), expected, text.debugDescription)
            XCTAssertEqual(
                contents.entries.map(\.target.backend).last,
                .tcp(host: "1.2.3.4", port: 3),
                text.debugDescription
            )
        }
        XCTAssertEqual(try TokenFileParser.parse("# c\r\n\r\nc: 1.2.3.4:3\r\n", file: "t").entries.map(\.line), [3])
    }

    /// At run time a token file is read as websockify reads it: bad lines skipped, the last definition of a token
    /// wins, a missing file is empty; each is a warning, and `wsbridge check` still reports them as errors.
    func testTokenFilesAreReadLenientlyWithWarnings() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("wsbridge-\(UUID())")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        try "a: 1.2.3.4:1\nbroken\nb: nohost\nc: 1.2.3.4:3\n".write(
            to: dir.appendingPathComponent("one.cfg"),
            atomically: true,
            encoding: .utf8
        )
        try "c: 1.2.3.4:4\n".write(to: dir.appendingPathComponent("two.cfg"), atomically: true, encoding: .utf8)
        let table = try TargetsLoader(path: dir.path).load()
        guard case .tokens(let map) = table.mode else { return XCTFail() }
        XCTAssertEqual(Set(map.keys), ["a", "c"])
        XCTAssertEqual(map["c"]?.backend, .tcp(host: "1.2.3.4", port: 4), "the last definition read wins")
        XCTAssertEqual(
            table.warnings.map { "\(($0.file as NSString).lastPathComponent):\($0.line ?? 0)" },
            ["one.cfg:2", "one.cfg:3", "two.cfg:1"]
        )
        XCTAssertTrue(table.warnings[0].message.hasSuffix("; line skipped"), table.warnings[0].message)
        XCTAssertTrue(
            table.warnings[2].message.contains("already defined at \(dir.path)/one.cfg:4"),
            table.warnings[2].message
        )
        let (checked, errors) = TargetsLoader(path: dir.path).check()
        XCTAssertNil(checked)
        XCTAssertEqual(errors.count, 3)

        let missing = dir.appendingPathComponent("later.cfg").path
        let empty = try TargetsLoader(path: missing).load()
        XCTAssertEqual(empty.targetCount, 0)
        XCTAssertEqual(empty.warnings.map(\.file), [missing])
        XCTAssertNotNil(TargetsLoader(path: missing).check().errors.first)
        XCTAssertThrowsError(
            try TargetsLoader(path: dir.appendingPathComponent("ours.yaml").path).load(),
            "YAML stays strict"
        )
        XCTAssertEqual(
            try TargetsLoader(path: dir.appendingPathComponent("gone").path, format: .tokenFileNames).load().warnings
                .count,
            1
        )
    }

    func testYAMLForms() throws {
        let text = """
            origins: ["https://app.example.com", "https://*.example.com"]
            targets:
              vnc-lab-1: 10.0.0.5:5900
              billing-db:
                backend: db.internal:5432
                origins: ["https://admin.example.com"]
              console:
                unix: /run/console.sock
              named:
                token: s3cr3t-random-token
                backend: "[::1]:7000"
            """
        let contents = try YAMLTargetsParser.parse(text, file: "t.yaml")
        XCTAssertEqual(contents.origins, ["https://app.example.com", "https://*.example.com"])
        let byToken = Dictionary(uniqueKeysWithValues: contents.entries.map { ($0.token, $0) })
        XCTAssertEqual(byToken["vnc-lab-1"]?.target.backend, .tcp(host: "10.0.0.5", port: 5900))
        XCTAssertEqual(byToken["billing-db"]?.target.origins?.entries, ["https://admin.example.com"])
        XCTAssertEqual(byToken["console"]?.target.backend, .unix(path: "/run/console.sock"))
        XCTAssertEqual(byToken["s3cr3t-random-token"]?.target.backend, .tcp(host: "::1", port: 7000))
        XCTAssertEqual(byToken["s3cr3t-random-token"]?.target.name, "named")
        XCTAssertEqual(byToken["vnc-lab-1"]?.line, 3)
    }

    func testYAMLEchoTargets() throws {
        let text = """
            targets:
              selftest: { echo: true }
              probe:
                token: health-probe-token
                echo: true
                origins: ["https://status.example.com"]
            """
        let contents = try YAMLTargetsParser.parse(text, file: "t.yaml")
        XCTAssertEqual(contents.entries.map(\.token), ["selftest", "health-probe-token"])
        XCTAssertEqual(contents.entries.map(\.target.backend), [.echo, .echo])
        XCTAssertEqual(contents.entries.map(\.target.name), ["se…", "probe"])
        XCTAssertEqual(contents.entries[1].target.origins?.entries, ["https://status.example.com"])
        XCTAssertEqual(contents.entries.map(\.line), [2, 3])
        XCTAssertEqual(BackendAddress.echo.description, "echo")
    }

    func testYAMLErrorsNameTheLine() {
        let cases: [(String, Int, String)] = [
            ("targets:\n  a: 1.2.3.4:5\nextra: 1\n", 3, "unknown key 'extra'"),
            ("targets:\n  a:\n    backend: 1.2.3.4:5\n    colour: red\n", 4, "unknown key 'colour'"),
            ("targets:\n  a:\n    origins: [x]\n", 3, "invalid origin"),
            ("targets:\n  a:\n    backend: nope\n", 3, "expected host:port"),
            ("targets:\n  a: [1, 2\n", 3, "invalid YAML"),
            ("targets:\n  a:\n    backend: 1.2.3.4:5\n    unix: /x\n", 4, "not several"),
            ("targets:\n  a:\n    unix: relative.sock\n", 3, "absolute path"),
            ("targets:\n  a:\n    echo: false\n", 3, "'echo' must be true"),
            ("targets:\n  a:\n    echo: yes please\n", 3, "'echo' must be true"),
            ("targets:\n  a:\n    echo: true\n    backend: 1.2.3.4:5\n", 4, "not several"),
            ("targets:\n  a:\n    unix: /x\n    echo: true\n", 4, "not several"),
            ("targets:\n  a:\n    echo: true\n    echoes: 2\n", 4, "unknown key 'echoes'"),
            ("targets:\n  a:\n    token: t\n", 2, "'echo: true'"),
        ]
        for (text, line, fragment) in cases {
            XCTAssertThrowsError(try YAMLTargetsParser.parse(text, file: "t.yaml")) { error in
                guard let error = error as? TargetsFileError else { return XCTFail("\(error)") }
                XCTAssertEqual(error.line, line, "\(text) -> \(error)")
                XCTAssertTrue(error.description.contains(fragment), error.description)
            }
        }
    }

    func testLoaderReadsADirectoryAndRefusesDuplicateTokens() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("wsbridge-\(UUID())")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        try "a: 127.0.0.1:1\n".write(to: dir.appendingPathComponent("one"), atomically: true, encoding: .utf8)
        try "targets:\n  b: 127.0.0.1:2\n".write(
            to: dir.appendingPathComponent("two.yaml"),
            atomically: true,
            encoding: .utf8
        )
        try "ignored".write(to: dir.appendingPathComponent(".hidden"), atomically: true, encoding: .utf8)
        let table = try TargetsLoader(path: dir.path).load()
        guard case .tokens(let map) = table.mode else { return XCTFail() }
        XCTAssertEqual(Set(map.keys), ["a", "b"])

        try "b: 127.0.0.1:3\n".write(to: dir.appendingPathComponent("zz"), atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try TargetsLoader(path: dir.path).load()) { error in
            XCTAssertTrue(
                "\(error)".hasSuffix("zz:1: token … is already defined at \(dir.path)/two.yaml:2"),
                "\(error)"
            )
        }
    }

    /// Two tokens with the same first characters share a redacted name: they still get identities (limits) and
    /// metric labels of their own.
    func testTargetsWithAlikeNamesGetDistinctIdentitiesAndLabels() throws {
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("wsbridge-\(UUID()).cfg")
        defer { try? FileManager.default.removeItem(at: file) }
        try "abcd-one-secret: 127.0.0.1:1\nabcd-two-secret: 127.0.0.1:2\nzzzz-other-token: 127.0.0.1:3\n"
            .write(to: file, atomically: true, encoding: .utf8)
        guard case .tokens(let map) = try TargetsLoader(path: file.path).load().mode else { return XCTFail() }
        let one = try XCTUnwrap(map["abcd-one-secret"])
        let two = try XCTUnwrap(map["abcd-two-secret"])
        XCTAssertEqual(one.name, two.name)
        XCTAssertNotEqual(one.identity, two.identity)
        XCTAssertEqual(one.metricLabel, "abc…#1")
        XCTAssertEqual(two.metricLabel, "abc…#2")
        XCTAssertEqual(map["zzzz-other-token"]?.metricLabel, "zzzz…")
        for target in map.values { XCTAssertFalse(target.metricLabel.contains("secret")) }

        let limiter = AdmissionLimiter(limits: .init())
        var limitedOne = one
        var limitedTwo = two
        limitedOne.maxSessions = 1
        limitedTwo.maxSessions = 1
        XCTAssertNoThrow(try limiter.acquire(client: "a", target: limitedOne).get())
        XCTAssertNoThrow(try limiter.acquire(client: "a", target: limitedTwo).get())
        guard case .failure = limiter.acquire(client: "a", target: limitedOne) else { return XCTFail() }
    }

    func testWebsockifyDottedPluginNames() {
        XCTAssertEqual(WebsockifyPluginName.builtIn("TokenFile", kind: .token), "TokenFile")
        XCTAssertEqual(WebsockifyPluginName.builtIn("websockify.token_plugins.TokenFile", kind: .token), "TokenFile")
        XCTAssertEqual(
            WebsockifyPluginName.builtIn("websockify.auth_plugins.BasicHTTPAuth", kind: .auth),
            "BasicHTTPAuth"
        )
        for foreign in [
            "x.TokenFile", "websockify.auth_plugins.TokenFile", "websockify.token_plugins.a.TokenFile",
            "websockify.token_plugins.",
        ] {
            XCTAssertNil(WebsockifyPluginName.builtIn(foreign, kind: .token), foreign)
            XCTAssertNotNil(WebsockifyPluginName.refusal(foreign, kind: .token, option: "--token-plugin"), foreign)
        }
        XCTAssertNil(
            WebsockifyPluginName.refusal("websockify.token_plugins.TokenRedis", kind: .token, option: "--token-plugin")
        )
    }

    /// Targets of token services are measured under one label per service, not one per token.
    func testTokenServiceTargetsShareOneLabel() {
        let a = RedisTokenResolver.target("aaaa-token-1", .tcp(host: "h", port: 1))
        let b = RedisTokenResolver.target("aaaa-token-2", .tcp(host: "h", port: 1))
        XCTAssertEqual([a.metricLabel, b.metricLabel], ["redis", "redis"])
        XCTAssertNotEqual(a.identity, b.identity)
        XCTAssertEqual(RedisTokenResolver.target("x", .echo, source: "token-api").metricLabel, "token-api")
        XCTAssertEqual(BridgeMetrics.codeLabel(1000), "1000")
        XCTAssertEqual(BridgeMetrics.codeLabel(4321), "4xxx")
        XCTAssertEqual(BridgeMetrics.codeLabel(3999), "3xxx")
        XCTAssertEqual(BridgeMetrics.codeLabel(2000), "other")
    }

    func testStoreKeepsThePreviousTableWhenAReloadFails() throws {
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("wsbridge-\(UUID()).yaml")
        defer { try? FileManager.default.removeItem(at: file) }
        try "targets:\n  a: 127.0.0.1:1\n".write(to: file, atomically: true, encoding: .utf8)
        let store = try TargetsStore(loader: TargetsLoader(path: file.path))
        try "targets:\n  a: 127.0.0.1:1\n  b: nohost\n".write(to: file, atomically: true, encoding: .utf8)
        guard case .failure(let error) = store.reload(logger: .init(label: "test")) else { return XCTFail() }
        XCTAssertEqual(error.line, 3)
        guard case .tokens(let map) = store.current.mode else { return XCTFail() }
        XCTAssertEqual(map["a"]?.backend, .tcp(host: "127.0.0.1", port: 1))
        try "targets:\n  b: 127.0.0.1:2\n".write(to: file, atomically: true, encoding: .utf8)
        XCTAssertNoThrow(try store.reload(logger: .init(label: "test")).get())
        guard case .tokens(let newMap) = store.current.mode else { return XCTFail() }
        XCTAssertEqual(Set(newMap.keys), ["b"])
    }

    func testListenAndBackendAddresses() {
        XCTAssertEqual(try ListenAddress.parse("6080").get(), .init(host: nil, port: 6080))
        XCTAssertEqual(try ListenAddress.parse("127.0.0.1:6080").get(), .init(host: "127.0.0.1", port: 6080))
        XCTAssertEqual(try ListenAddress.parse("[::1]:6080").get(), .init(host: "::1", port: 6080))
        XCTAssertEqual(try ListenAddress.parse(":6080").get(), .init(host: nil, port: 6080))
        XCTAssertThrowsError(try ListenAddress.parse("::1:6080").get())
        XCTAssertThrowsError(try ListenAddress.parse("host:port").get())
        XCTAssertEqual(try BackendAddress.parseHostPort("[::1]:22").get().description, "[::1]:22")
    }

    func testYAMLPolicyKeys() throws {
        let text = """
            targets:
              lab:
                backend: 10.0.0.5:5900
                max_sessions: 2
                idle_timeout: 1.5
                allow_clients: [10.0.0.0/8, "::1"]
                on_revoke: keep
            """
        let entry = try XCTUnwrap(YAMLTargetsParser.parse(text, file: "t.yaml").entries.first)
        XCTAssertEqual(entry.target.maxSessions, 2)
        XCTAssertEqual(entry.target.idleTimeout, 1.5)
        XCTAssertEqual(entry.target.allowClients?.map(\.description), ["10.0.0.0/8", "::1"])
        XCTAssertTrue(entry.target.keepOnRevoke)
        let bad: [(String, Int, String)] = [
            ("targets:\n  a:\n    backend: 1.2.3.4:5\n    on_revoke: sometimes\n", 4, "'on_revoke' must be"),
            ("targets:\n  a:\n    backend: 1.2.3.4:5\n    allow_clients: [10.0.0.0/40]\n", 4, "invalid network"),
            ("targets:\n  a:\n    backend: 1.2.3.4:5\n    idle_timeout: -1\n", 4, "idle_timeout"),
            ("targets:\n  a:\n    backend: 1.2.3.4:5\n    max_sessions: 0\n", 4, "max_sessions"),
        ]
        for (text, line, fragment) in bad {
            XCTAssertThrowsError(try YAMLTargetsParser.parse(text, file: "t.yaml")) { error in
                let error = error as! TargetsFileError
                XCTAssertEqual(error.line, line, error.description)
                XCTAssertTrue(error.description.contains(fragment), error.description)
            }
        }
    }

    func testCheckCollectsEveryError() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("wsbridge-\(UUID())")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        try "a: 1.2.3.4:5\nbroken\nb: nohost\n".write(
            to: dir.appendingPathComponent("one.cfg"),
            atomically: true,
            encoding: .utf8
        )
        try "targets:\n  a: 1.2.3.4:6\n  c:\n    colour: red\n".write(
            to: dir.appendingPathComponent("two.yaml"),
            atomically: true,
            encoding: .utf8
        )
        let (table, errors) = TargetsLoader(path: dir.path).check()
        XCTAssertNil(table)
        XCTAssertEqual(
            errors.map { "\(($0.file as NSString).lastPathComponent):\($0.line ?? 0)" },
            ["one.cfg:2", "one.cfg:3", "two.yaml:4", "two.yaml:2"]
        )
    }

    func testTokenFileNamesAndSocketDirectories() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("wsbridge-\(UUID())")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        try "10.0.0.5:5900\n".write(to: dir.appendingPathComponent("vnc-1"), atomically: true, encoding: .utf8)
        try "[::1]:5901".write(to: dir.appendingPathComponent("vnc-2"), atomically: true, encoding: .utf8)
        let table = try TargetsLoader(path: dir.path, format: .tokenFileNames).load()
        guard case .tokens(let map) = table.mode else { return XCTFail() }
        XCTAssertEqual(map["vnc-1"]?.backend, .tcp(host: "10.0.0.5", port: 5900))
        XCTAssertEqual(map["vnc-2"]?.backend, .tcp(host: "::1", port: 5901))
        XCTAssertNil(map["../vnc-1"])
        try "nonsense".write(to: dir.appendingPathComponent("vnc-3"), atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try TargetsLoader(path: dir.path, format: .tokenFileNames).load()) { error in
            XCTAssertTrue("\(error)".hasSuffix("vnc-3:1: expected host:port, got 'nonsense'"), "\(error)")
        }

        let sockets = FileManager.default.temporaryDirectory.appendingPathComponent(
            "wsb-s-\(UUID().uuidString.prefix(8))"
        )
        try FileManager.default.createDirectory(at: sockets, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: sockets) }
        let socketPath = sockets.appendingPathComponent("console").path
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            _ = socketPath.utf8CString.withUnsafeBytes { raw.copyMemory(from: $0) }
        }
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        XCTAssertEqual(bound, 0)
        defer { close(fd) }
        try "not a socket".write(to: sockets.appendingPathComponent("plain"), atomically: true, encoding: .utf8)
        try FileManager.default.createSymbolicLink(
            atPath: sockets.appendingPathComponent("link").path,
            withDestinationPath: socketPath
        )
        let socketTable = try TargetsLoader(path: sockets.path, format: .unixSocketDirectory).load()
        guard case .tokens(let socketMap) = socketTable.mode else { return XCTFail() }
        XCTAssertEqual(Array(socketMap.keys), ["console"], "plain files and symlinks are not targets")
        XCTAssertEqual(socketMap["console"]?.backend, .unix(path: socketPath))
    }
}
