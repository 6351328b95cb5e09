import Foundation
import NIOCore
import NIOPosix
import NIOSSL
import NIOWebSocket
import XCTest

@testable import WSBridge

/// TLS over real loopback sockets with NIO's WebSocket client: wss:// and ws:// on one port, and TLS to a backend
/// with its own CA (verified, and refused when the CA is not trusted). Certificates are `TestCertificates`, made by
/// the openssl CLI; without it the tests fail (they do not skip).
final class TLSLoopbackTests: XCTestCase {
    var group: MultiThreadedEventLoopGroup!
    var certificates: TestCertificates!
    var caFile: String { self.certificates.caFile }
    var certFile: String { self.certificates.certFile }
    var keyFile: String { self.certificates.keyFile }

    override func setUp() async throws {
        self.group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
    }

    /// The CA and the server certificate, made once per test process and asked for by each test first: an error here
    /// fails that test (thrown from `setUp`, corelibs XCTest would report the test as skipped as well as failed).
    func makeCertificates() throws {
        self.certificates = try TestCertificates.shared.get()
    }

    override func tearDown() async throws {
        try await self.group.shutdownGracefully()
    }

    /// An echo server, over TLS with the test certificate when `tls` is true.
    func echoServer(tls: Bool) async throws -> Channel {
        let context =
            tls
            ? try NIOSSLContext(
                configuration: .makeServerConfiguration(
                    certificateChain: try NIOSSLCertificate.fromPEMFile(self.certFile).map { .certificate($0) },
                    privateKey: .privateKey(try NIOSSLPrivateKey(file: self.keyFile, format: .pem))
                )
            ) : nil
        return try await EchoServer.start(group: self.group, tls: context)
    }

    func withBridge(
        targets: [String: Target],
        configure: (inout BridgeConfiguration) throws -> Void = { _ in },
        services: BridgeServer.Services = .init(),
        _ body: @escaping @Sendable (Int) async throws -> Void
    ) async throws {
        var configuration = BridgeConfiguration()
        try configure(&configuration)
        try await LoopbackBridge.run(
            configuration: configuration,
            services: services,
            targets: TargetTable(mode: .tokens(targets)),
            group: self.group
        ) { bridge in try await body(bridge.port) }
    }

    func clientContext() throws -> NIOSSLContext {
        var configuration = TLSConfiguration.makeClientConfiguration()
        configuration.trustRoots = .certificates(try NIOSSLCertificate.fromPEMFile(self.caFile))
        return try NIOSSLContext(configuration: configuration)
    }

    func testWSSAndWSOnOnePortByteExact() async throws {
        try self.makeCertificates()
        let echo = try await self.echoServer(tls: false)
        let target = Target(name: "echo", backend: .tcp(host: "127.0.0.1", port: echo.localAddress!.port!))
        let group = self.group!
        let tls = try self.clientContext()
        let settings = ServerTLSSettings(certificates: [.init(certificate: self.certFile, key: self.keyFile)])
        let services = BridgeServer.Services(tls: try ServerTLSStore(settings: settings))
        try await self.withBridge(targets: ["echo": target], services: services) { port in
            let secure = try await WebSocketTestClient.connect(
                port: port,
                path: "/?token=echo",
                group: group,
                tls: tls,
                serverHostname: "localhost"
            )
            for size in [1, 65536, 1 << 20] {
                let payload = (0..<size).map { _ in UInt8.random(in: 0...255) }
                secure.send(.binary, payload)
                let received = await secure.receive(count: size)
                XCTAssertTrue(received == payload, "TLS payload of \(size) bytes differs")
            }
            secure.close(code: 1000)
            let close = await secure.receiveClose()
            XCTAssertEqual(close?.0, 1000)

            let plain = try await WebSocketTestClient.connect(port: port, path: "/?token=echo", group: group)
            plain.send(.binary, [1, 2, 3])
            let received = await plain.receive(count: 3)
            XCTAssertEqual(received, [1, 2, 3])
            plain.close(code: 1000)
            _ = await plain.receiveClose()
        }
        try await echo.close()
    }

    func testBackendTLSWithItsOwnCAAndAnUntrustedOne() async throws {
        try self.makeCertificates()
        let echo = try await self.echoServer(tls: true)
        let port = echo.localAddress!.port!
        let trusted = Target(
            name: "trusted",
            backend: .tcp(host: "127.0.0.1", port: port),
            tls: try BackendTLS(ca: self.caFile, serverName: "localhost").load()
        )
        let untrusted = Target(
            name: "untrusted",
            backend: .tcp(host: "127.0.0.1", port: port),
            tls: try BackendTLS(serverName: "localhost").load()
        )
        let group = self.group!
        try await self.withBridge(targets: ["trusted": trusted, "untrusted": untrusted]) { bridgePort in
            let client = try await WebSocketTestClient.connect(port: bridgePort, path: "/?token=trusted", group: group)
            let payload = (0..<300_000).map { _ in UInt8.random(in: 0...255) }
            client.send(.binary, payload)
            let received = await client.receive(count: payload.count)
            XCTAssertTrue(received == payload, "payload through a TLS backend differs")
            client.close(code: 1000)
            _ = await client.receiveClose()

            let refused = try await WebSocketTestClient.connect(
                port: bridgePort,
                path: "/?token=untrusted",
                group: group
            )
            let close = await refused.receiveClose()
            XCTAssertEqual(close?.0, 1014)
            XCTAssertEqual(close?.1, "backend TLS certificate not trusted")
            refused.close(code: 1014)
        }
        try await echo.close()
    }
}
