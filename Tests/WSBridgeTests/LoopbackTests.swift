import NIOCore
import NIOPosix
import NIOWebSocket
import XCTest

@testable import WSBridge

/// Real sockets on loopback, port 0: the bridge, a NIO TCP echo backend, and NIO's WebSocket client.
final class LoopbackTests: XCTestCase {
    var group: MultiThreadedEventLoopGroup!
    var echo: Channel!

    override func setUp() async throws {
        self.group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
        self.echo = try await EchoServer.start(group: self.group)
    }

    override func tearDown() async throws {
        try await self.echo.close()
        try await self.group.shutdownGracefully()
    }

    /// Runs a bridge with the token `echo` for `backend` (the echo backend by default) for the duration of `body`.
    func withBridge(
        backend: BackendAddress? = nil,
        metrics: BridgeMetrics = BridgeMetrics(),
        configure: (inout BridgeConfiguration) -> Void = { _ in },
        _ body: @escaping @Sendable (Int) async throws -> Void
    ) async throws {
        var configuration = BridgeConfiguration()
        configure(&configuration)
        let target = Target(
            name: "echo",
            backend: backend ?? .tcp(host: "127.0.0.1", port: self.echo.localAddress!.port!)
        )
        try await LoopbackBridge.run(
            configuration: configuration,
            services: .init(metrics: metrics),
            targets: TargetTable(mode: .tokens(["echo": target])),
            group: self.group
        ) { bridge in try await body(bridge.port) }
    }

    func testByteExactRoundTripsOfRandomSizes() async throws {
        let group = self.group!
        try await self.withBridge { port in
            let client = try await WebSocketTestClient.connect(port: port, path: "/?token=echo", group: group)
            for size in [1, 125, 126, 65535, 65536, 1 << 20, 4 << 20] {
                let payload = (0..<size).map { _ in UInt8.random(in: 0...255) }
                client.send(.binary, payload)
                let received = await client.receive(count: size)
                XCTAssertEqual(received.count, size)
                XCTAssertTrue(received == payload, "payload of \(size) bytes differs")
            }
            client.close(code: 1000)
            let close = await client.receiveClose()
            XCTAssertEqual(close?.0, 1000)
        }
    }

    func testManyConcurrentSessions() async throws {
        let group = self.group!
        try await self.withBridge { port in
            try await withThrowingTaskGroup(of: Void.self) { sessions in
                for index in 0..<40 {
                    sessions.addTask {
                        let client = try await WebSocketTestClient.connect(
                            port: port,
                            path: "/?token=echo",
                            group: group
                        )
                        let payload = (0..<(1000 + index * 997)).map { _ in UInt8.random(in: 0...255) }
                        // Fragmented: three frames of one message.
                        let third = payload.count / 3
                        client.send(.binary, Array(payload[..<third]), fin: false)
                        client.send(.continuation, Array(payload[third..<(2 * third)]), fin: false)
                        client.send(.continuation, Array(payload[(2 * third)...]), fin: true)
                        let received = await client.receive(count: payload.count)
                        XCTAssertTrue(received == payload, "session \(index)")
                        client.close(code: 4000 + UInt16(index))
                        let close = await client.receiveClose()
                        XCTAssertEqual(close?.0, 4000 + UInt16(index), "the client's code is echoed")
                    }
                }
                try await sessions.waitForAll()
            }
        }
    }

    func testBackendRefusedIsReadableAsClose1014() async throws {
        // A port that was just free: bind, read the port, close.
        let probe = try await ServerBootstrap(group: self.group).bind(host: "127.0.0.1", port: 0).get()
        let closedPort = probe.localAddress!.port!
        try await probe.close()
        let group = self.group!
        try await self.withBridge(backend: .tcp(host: "127.0.0.1", port: closedPort)) { port in
            let client = try await WebSocketTestClient.connect(port: port, path: "/?token=echo", group: group)
            let close = await client.receiveClose()
            XCTAssertEqual(close?.0, 1014)
            XCTAssertEqual(close?.1, "backend refused")
            client.close(code: 1014)
        }
    }

    func testRefusedUpgradesGetTheirStatus() async throws {
        let group = self.group!
        try await self.withBridge { port in
            do {
                _ = try await WebSocketTestClient.connect(port: port, path: "/?token=wrong", group: group)
                XCTFail("upgraded with a wrong token")
            } catch WebSocketTestClient.Failure.upgradeRefused(let status) {
                XCTAssertEqual(status, "404")
            }
            do {
                _ = try await WebSocketTestClient.connect(port: port, path: "/", group: group)
                XCTFail("upgraded without a token")
            } catch WebSocketTestClient.Failure.upgradeRefused(let status) {
                XCTAssertEqual(status, "400")
            }
            let binary = try await WebSocketTestClient.connect(
                port: port,
                path: "/websockify?token=echo",
                headers: [("Sec-WebSocket-Protocol", "binary")],
                group: group
            )
            XCTAssertEqual(binary.selectedProtocol, "binary")
            binary.close(code: 1000)
            _ = await binary.receiveClose()
        }
    }

    func testGracefulShutdownSendsGoingAway() async throws {
        var configuration = BridgeConfiguration()
        configuration.shutdownTimeout = .seconds(5)
        let target = Target(name: "echo", backend: .tcp(host: "127.0.0.1", port: self.echo.localAddress!.port!))
        let group = self.group!
        let server = try await LoopbackBridge.run(
            configuration: configuration,
            targets: TargetTable(mode: .single(target)),
            group: group
        ) { bridge in
            let client = try await WebSocketTestClient.connect(port: bridge.port, group: group)
            client.send(.binary, [1, 2, 3])
            let echoed = await client.receive(count: 3)
            XCTAssertEqual(echoed, [1, 2, 3])
            await bridge.shutdown()
            let close = await client.receiveClose()
            XCTAssertEqual(close?.0, 1001)
            XCTAssertEqual(close?.1, "server shutting down")
            client.close(code: 1001)
        }
        XCTAssertEqual(server.connectionCount, 0)
    }

    func testABurstAgainstASessionLimitAdmitsExactlyTheLimit() async throws {
        let group = self.group!
        let metrics = BridgeMetrics()
        let limit: (inout BridgeConfiguration) -> Void = { $0.limits.maxSessions = 100 }
        try await self.withBridge(metrics: metrics, configure: limit) { port in
            let outcomes = try await withThrowingTaskGroup(of: (WebSocketTestClient?, String).self) { attempts in
                for _ in 0..<400 {
                    attempts.addTask {
                        do {
                            let client = try await WebSocketTestClient.connect(
                                port: port,
                                path: "/?token=echo",
                                group: group
                            )
                            return (client, "101")
                        } catch WebSocketTestClient.Failure.upgradeRefused(let status) {
                            return (nil, status)
                        }
                    }
                }
                var all: [(WebSocketTestClient?, String)] = []
                for try await outcome in attempts { all.append(outcome) }
                return all
            }
            XCTAssertEqual(outcomes.filter { $0.1 == "101" }.count, 100)
            XCTAssertEqual(outcomes.filter { $0.1 == "503" }.count, 300)
            let text = String(decoding: metrics.render(), as: UTF8.self)
            XCTAssertTrue(text.contains("wsbridge_handshake_rejections_total{reason=\"limit\"} 300"), text)
            XCTAssertTrue(text.contains("wsbridge_sessions_active{target=\"echo\"} 100"), text)
            for client in outcomes.compactMap(\.0) {
                client.close(code: 1000)
                _ = await client.receiveClose()
            }
        }
        let text = String(decoding: metrics.render(), as: UTF8.self)
        XCTAssertTrue(text.contains("wsbridge_sessions_closed_total{target=\"echo\",code=\"1000\"} 100"), text)
        XCTAssertTrue(text.contains("wsbridge_sessions_active{target=\"echo\"} 0"), text)
    }

    func testMetricsCountBytesExactly() async throws {
        let group = self.group!
        let metrics = BridgeMetrics()
        try await self.withBridge(metrics: metrics) { port in
            let client = try await WebSocketTestClient.connect(port: port, path: "/?token=echo", group: group)
            client.send(.binary, Array(repeating: 7, count: 12345))
            _ = await client.receive(count: 12345)
            client.close(code: 1000)
            _ = await client.receiveClose()
            _ = try? await WebSocketTestClient.connect(port: port, path: "/?token=nope", group: group)
        }
        let text = String(decoding: metrics.render(), as: UTF8.self)
        XCTAssertTrue(text.contains("wsbridge_bytes_to_backend_total{target=\"echo\"} 12345"), text)
        XCTAssertTrue(text.contains("wsbridge_bytes_to_client_total{target=\"echo\"} 12345"), text)
        XCTAssertTrue(text.contains("wsbridge_sessions_opened_total{target=\"echo\"} 1"), text)
        XCTAssertTrue(text.contains("wsbridge_handshake_rejections_total{reason=\"unknown_token\"} 1"), text)
        XCTAssertTrue(text.contains("wsbridge_backend_connect_seconds_count{target=\"echo\"} 1"), text)
    }

    func testReadinessSelfCheckGoesThroughTheListener() async throws {
        let group = self.group!
        let readiness = Readiness(timeout: .seconds(2))
        let eventLoop = group.next()
        let before = try await readiness.check(on: eventLoop).get()
        XCTAssertEqual(before, .failure(.init("not listening yet")))
        var configuration = BridgeConfiguration()
        configuration.pingInterval = nil
        try await LoopbackBridge.run(
            configuration: configuration,
            services: .init(readiness: readiness),
            targets: TargetTable(mode: .tokens([:])),
            group: group
        ) { bridge in
            let port = bridge.port
            let ready = try await readiness.check(on: eventLoop).get()
            XCTAssertEqual(ready, .success("ready"))
            // A listener that accepts and drops connections is not ready.
            let dropper = try await ServerBootstrap(group: group)
                .childChannelInitializer { $0.close() }
                .bind(host: "127.0.0.1", port: 0).get()
            let dropped = try await Readiness.probe(
                address: dropper.localAddress!,
                secret: readiness.secret,
                timeout: .seconds(2),
                on: eventLoop
            ).get()
            XCTAssertEqual(dropped, .failure(.init("self-check: connection closed before the upgrade")))
            try await dropper.close()
            // The wrong secret is an ordinary request: no token, 400.
            let wrongSecret = try await Readiness.probe(
                address: try SocketAddress(ipAddress: "127.0.0.1", port: port),
                secret: "guess",
                timeout: .seconds(2),
                on: eventLoop
            ).get()
            XCTAssertEqual(wrongSecret, .failure(.init("self-check: upgrade answered 'HTTP/1.1 400 Bad Request'")))
        }
        let after = try await readiness.check(on: eventLoop).get()
        XCTAssertEqual(after, .failure(.init("draining: shutting down")))
    }
}
