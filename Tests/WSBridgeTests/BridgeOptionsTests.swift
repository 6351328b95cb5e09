import ArgumentParser
import NIOCore
import XCTest

@testable import WSBridge

/// The command line as the executable maps it: BridgeOptions → Configuration, without a process.
final class BridgeOptionsTests: XCTestCase {
    private func configuration(
        _ arguments: [String],
        environment: [String: String] = [:],
        wrap: [String] = [],
        files: Set<String> = []
    ) throws -> Configuration {
        let options = try BridgeOptions.parse(arguments)
        return try options.configuration(
            .init(environment: environment, processID: 4242, wrapCommand: wrap, fileExists: { files.contains($0) })
        )
    }

    private func refusal(_ arguments: [String], environment: [String: String] = [:], wrap: [String] = []) -> String? {
        do {
            _ = try self.configuration(arguments, environment: environment, wrap: wrap)
            return nil
        } catch {
            return BridgeOptions.message(for: error)
        }
    }

    /// Every option is read from the environment, derived from the declarations: the list the CLI wrote by hand
    /// before (82 entries on 2026-12-02) is contained in it, with the same kinds.
    func testTheEnvironmentListCoversEveryDeclaredOption() {
        let derived = Dictionary(
            BridgeOptions.environmentOptions.map { ($0.0, "\($0.1)") },
            uniquingKeysWith: { a, _ in a }
        )
        let handWritten: [(String, EnvironmentArguments.Kind)] = [
            ("targets", .option),
            ("token-plugin", .option),
            ("token-source", .option),
            ("token-path", .option),
            ("token-reread-interval", .option),
            ("token-cache-ttl", .option),
            ("token-cache-negative-ttl", .option),
            ("token-stale-for", .option),
            ("redis-username", .option),
            ("redis-revoke-channel", .option),
            ("redis-timeout", .option),
            ("token-api-timeout", .option),
            ("jwt-leeway", .option),
            ("jwt-audience", .option),
            ("jwt-issuer", .option),
            ("jwt-close-at-exp", .flag),
            ("host-token", .flag),
            ("unix-target", .option),
            ("origin", .repeatable),
            ("require-origin", .flag),
            ("handshake-timeout", .option),
            ("connect-timeout", .option),
            ("idle-timeout", .option),
            ("session-idle-timeout", .option),
            ("timeout", .option),
            ("run-once", .flag),
            ("daemon", .flag),
            ("pid-file", .option),
            ("wrap-mode", .option),
            ("log-file", .option),
            ("syslog", .option),
            ("legacy-syslog", .flag),
            ("traffic", .flag),
            ("prefer-ipv6", .flag),
            ("libserver", .flag),
            ("ping-interval", .option),
            ("pong-timeout", .option),
            ("max-frame-size", .option),
            ("close-timeout", .option),
            ("stall-timeout", .option),
            ("shutdown-timeout", .option),
            ("max-connections", .option),
            ("max-connections-per-client", .option),
            ("handshake-rate", .option),
            ("handshake-burst", .option),
            ("max-handshakes", .option),
            ("max-handshakes-per-ip", .option),
            ("tcp-user-timeout", .option),
            ("web", .option),
            ("web-listing", .flag),
            ("web-auth", .flag),
            ("file-only", .flag),
            ("record", .option),
            ("record-limit", .option),
            ("metrics-listen", .option),
            ("metrics-on-main-port", .flag),
            ("unix-listen", .option),
            ("unix-listen-mode", .option),
            ("inetd", .flag),
            ("log-format", .option),
            ("log-level", .option),
            ("verbose", .flag),
            ("read-buffer", .option),
            ("reads-per-cycle", .option),
            ("write-buffer-high", .option),
            ("write-buffer-low", .option),
            ("threads", .option),
            ("cert", .repeatable),
            ("key", .repeatable),
            ("key-password-file", .option),
            ("ssl-only", .flag),
            ("ssl-version", .option),
            ("ssl-ciphers", .option),
            ("verify-client", .flag),
            ("cafile", .option),
            ("ssl-target", .flag),
            ("auth-plugin", .option),
            ("auth-source", .option),
            ("auth-file", .option),
            ("trusted-proxy", .repeatable),
            ("trusted-proxy-header", .option),
            ("proxy-protocol", .flag),
        ]
        for (name, kind) in handWritten {
            XCTAssertEqual(derived[name], "\(kind)", name)
        }
        XCTAssertNil(derived["help"])
        XCTAssertNil(derived["version"])
        XCTAssertNil(derived["target-config"], "aliases are not variables of their own")
    }

    func testWebsockifyPositionalArguments() throws {
        let single = try self.configuration(["127.0.0.1:6080", "vnc.internal:5900"])
        XCTAssertEqual(single.listener, .tcp(host: "127.0.0.1", port: 6080))
        guard case .single(let backend) = single.routing else { return XCTFail("\(single.routing)") }
        XCTAssertEqual(backend, try BackendAddress.parseHostPort("vnc.internal:5900").get())

        // With --unix-listen (or inetd, or systemd), a single positional argument is the target.
        let unix = try self.configuration(["--unix-listen", "/run/ws.sock", "localhost:5900"])
        XCTAssertEqual(unix.listener, .unix(path: "/run/ws.sock", mode: 0o600))
        let systemd = try self.configuration(
            ["localhost:5900"],
            environment: ["LISTEN_PID": "4242", "LISTEN_FDS": "1"]
        )
        XCTAssertEqual(systemd.listener, .inherited(descriptor: 3))
        let otherProcess = self.refusal(["localhost:5900"], environment: ["LISTEN_PID": "1", "LISTEN_FDS": "1"])
        XCTAssertEqual(otherProcess, "no backend: give TARGET_HOST:TARGET_PORT, --targets FILE or --unix-target PATH")
    }

    func testTokenPluginsBecomeRoutings() throws {
        let readOnly = try self.configuration([
            "6080", "--token-plugin", "websockify.token_plugins.ReadOnlyTokenFile", "--token-source", "/etc/tokens",
        ])
        guard case .targetsFiles("/etc/tokens", .targetsFiles, reloads: false) = readOnly.routing else {
            return XCTFail("\(readOnly.routing)")
        }
        XCTAssertNil(readOnly.tokens.rereadInterval, "ReadOnlyTokenFile reads once")

        let redis = try self.configuration([
            "6080", "--token-plugin", "TokenRedis", "--token-source", "redis.local:6380:2", "--redis-revoke-channel",
            "off",
        ])
        guard case .redis(let source, revokeChannel: nil, timeout: .seconds(1)) = redis.routing else {
            return XCTFail("\(redis.routing)")
        }
        XCTAssertEqual(source.endpoint.host, "redis.local")
        XCTAssertEqual(source.endpoint.port, 6380)
        XCTAssertEqual(source.endpoint.database, 2)

        let api = try self.configuration([
            "6080", "--token-plugin", "JSONTokenApi", "--token-source", "https://api/t?token=%s", "--token-api-timeout",
            "0.5",
        ])
        guard case .httpAPI("https://api/t?token=%s", .json, timeout: .milliseconds(500)) = api.routing else {
            return XCTFail("\(api.routing)")
        }

        XCTAssertEqual(
            self.refusal(["6080", "--token-plugin", "mymodule.TokenFile", "--token-source", "x"]),
            "--token-plugin mymodule.TokenFile: wsbridge cannot load Python plugins; its built-in plugins are named as websockify names them (websockify.token_plugins.TokenFile, or TokenFile)"
        )
        XCTAssertEqual(
            self.refusal(["6080", "--targets", "a", "--token-plugin", "TokenFile", "--token-source", "b"]),
            "give --targets or --token-plugin, not both (except JWTTokenApi, whose 'target' claim names a target of --targets)"
        )
    }

    func testEachWrongValueHasItsOwnMessage() {
        let cases: [([String], String)] = [
            (["6080", "x:1", "--connect-timeout", "0"], "--connect-timeout must be a positive number of seconds"),
            (["6080", "x:1", "--ping-interval=-1"], "--ping-interval must be 0 (off) or a positive number of seconds"),
            (["6080", "x:1", "--redis-timeout", "0"], "--redis-timeout must be a positive number of seconds"),
            (
                ["6080", "x:1", "--write-buffer-high", "10", "--write-buffer-low", "10"],
                "--write-buffer-high must be larger than --write-buffer-low (and that at least 0)"
            ),
            (
                ["6080", "x:1", "--ssl-only"],
                "--ssl-only needs --cert FILE (or self.pem in the working directory, as websockify)"
            ),
            (
                ["6080", "x:1", "--metrics-listen", "nowhere"],
                "--metrics-listen: expected [SOURCE_ADDR:]SOURCE_PORT, got 'nowhere'"
            ),
            (
                ["6080", "x:1", "--daemon", "--inetd"],
                "give --daemon or --inetd, not both (inetd starts the server itself)"
            ),
            (
                ["6080", "x:1", "--token-reread-interval", "20"],
                "--token-reread-interval must be shorter than --handshake-timeout (unknown tokens wait for the next re-read)"
            ),
        ]
        for (arguments, message) in cases {
            XCTAssertEqual(self.refusal(arguments), message, "\(arguments)")
        }
    }

    func testWebsockifysSelfPemIsTheDefaultCertificate() throws {
        let plain = try self.configuration(["6080", "x:1"])
        XCTAssertNil(plain.tls)
        let tls = try self.configuration(["6080", "x:1", "--ssl-only"], files: ["self.pem"])
        XCTAssertEqual(tls.tls?.settings.certificates, [.init(certificate: "self.pem")])
        XCTAssertEqual(tls.tls?.isDefaultCertificate, true)
        XCTAssertEqual(tls.tls?.settings.sslOnly, true)
    }

    func testWrapModeAndTheServersLifetime() throws {
        let wrapped = try self.configuration(
            [
                "6080", "--unix-target", "/tmp/vnc.sock", "--wrap-mode", "respawn", "--idle-timeout", "120",
                "--timeout", "60", "--run-once",
            ],
            wrap: ["Xvnc", ":1"]
        )
        XCTAssertEqual(wrapped.wrap?.command, ["Xvnc", ":1"])
        XCTAssertEqual(wrapped.wrap?.mode, .respawn)
        XCTAssertEqual(
            wrapped.lifetime,
            .init(stopAfter: .seconds(60), stopWhenIdleFor: .seconds(120), stopAfterFirstSession: true)
        )
        // Without a target the program's bind() to SOURCE_PORT is moved to a loopback port (websockify's rebind).
        let rebound = try self.configuration(["5901"], wrap: ["Xvnc", "-rfbport", "5901"])
        guard case .wrappedProgram = rebound.routing else { return XCTFail("\(rebound.routing)") }
        for arguments in [["0"], ["--unix-listen", "/run/ws.sock"]] {
            XCTAssertEqual(
                self.refusal(arguments, wrap: ["Xvnc"]),
                "wrap mode without a target needs a SOURCE_PORT other than 0 (the port the program binds), or --unix-target PATH or TARGET_HOST:TARGET_PORT",
                "\(arguments)"
            )
        }
    }

    func testADaemonsPathsBecomeAbsolute() throws {
        let configuration = try self.configuration([
            "6080", "--targets", "tokens.cfg", "--web", "www", "--log-file", "/var/log/ws.log", "--pid-file", "ws.pid",
        ])
        let absolute = configuration.withAbsolutePaths()
        let cwd = FileManager.default.currentDirectoryPath
        guard case .targetsFiles(let path, _, _) = absolute.routing else { return XCTFail() }
        XCTAssertEqual(path, cwd + "/tokens.cfg")
        XCTAssertEqual(absolute.web?.root, cwd + "/www")
        XCTAssertEqual(absolute.logging.file, "/var/log/ws.log")
        XCTAssertEqual(absolute.pidFile, cwd + "/ws.pid")
    }
}
