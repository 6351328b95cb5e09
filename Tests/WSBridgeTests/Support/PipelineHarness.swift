import NIOCore
import NIOEmbedded
import NIOHTTP1
import NIOPosix
import XCTest

@testable import WSBridge

/// The whole client pipeline of one connection in memory: raw request bytes in, raw response and frame bytes out,
/// with backends that are `EmbeddedChannel`s on the same loop. Shared by every test of the handshake and the session
/// that needs no socket.
final class PipelineHarness {
    let loop = EmbeddedEventLoop()
    let client: EmbeddedChannel
    let reads = ReadCounter()
    var backend: EmbeddedChannel?
    var backendReads = ReadCounter()
    var configuration = BridgeConfiguration(pingInterval: nil)
    private(set) var server: BridgeServer!

    init(
        table: TargetTable = TargetTable(
            mode: .single(Target(name: "t", backend: .tcp(host: "127.0.0.1", port: 1)))
        ),
        connectError: Error? = nil,
        connector custom: BackendConnector? = nil,
        configure: (inout BridgeConfiguration) -> Void = { _ in }
    ) throws {
        configure(&self.configuration)
        self.client = EmbeddedChannel(loop: self.loop)
        let loop = self.loop
        let backendBox = NIOLoopBoundBox<EmbeddedChannel?>(nil, eventLoop: loop)
        let backendReads = self.backendReads
        let connector = BackendConnector { _, eventLoop in
            if let connectError { return eventLoop.makeFailedFuture(connectError) }
            let (channel, handler) = try! Self.connectedBackend(on: loop, reads: backendReads)
            backendBox.value = channel
            return eventLoop.makeSucceededFuture(handler)
        }
        let server = BridgeServer.forTests(
            configuration: self.configuration,
            targets: table,
            group: self.loop,
            connector: custom ?? connector
        )
        self.server = server
        try self.client.pipeline.syncOperations.addHandler(self.reads)
        try server.initializeConnection(self.client)
        try self.client.connect(to: SocketAddress(ipAddress: "10.0.0.1", port: 5555)).wait()
        self.backendBox = backendBox
    }
    private var backendBox: NIOLoopBoundBox<EmbeddedChannel?>?

    func send(_ text: String) throws {
        try self.client.writeInbound(ByteBuffer(string: text))
        self.loop.run()
        self.backend = self.backendBox?.value
    }

    func send(_ bytes: [UInt8]) throws {
        try self.client.writeInbound(ByteBuffer(bytes: bytes))
        self.loop.run()
        self.backend = self.backendBox?.value
    }

    /// Everything the client has been sent so far.
    func output() throws -> [UInt8] {
        var all: [UInt8] = []
        while let part = try self.client.readOutbound(as: IOData.self) {
            if case .byteBuffer(let buffer) = part { all += buffer.readableBytesView }
        }
        return all
    }

    func backendOutput() throws -> [UInt8] {
        var all: [UInt8] = []
        while let buffer = try self.backend?.readOutbound(as: ByteBuffer.self) { all += buffer.readableBytesView }
        return all
    }

    /// A backend as a connector hands it to the bridge: a connected `EmbeddedChannel` on `loop` with its
    /// `BackendHandler` (after `reads`, when given).
    static func connectedBackend(
        on loop: EmbeddedEventLoop,
        reads: ReadCounter? = nil
    ) throws -> (EmbeddedChannel, BackendHandler) {
        let handler = BackendHandler()
        let channel = EmbeddedChannel(loop: loop)
        if let reads { try channel.pipeline.syncOperations.addHandler(reads) }
        try channel.pipeline.syncOperations.addHandler(handler)
        _ = channel.connect(to: try SocketAddress(ipAddress: "127.0.0.1", port: 1))
        return (channel, handler)
    }

    static func upgradeRequest(uri: String = "/?token=echo", extra: String = "") -> String {
        "GET \(uri) HTTP/1.1\r\nHost: server.example.com\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            + "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\(extra)\r\n"
    }

    /// Splits a response into its head text and the bytes after it.
    static func splitHead(_ bytes: [UInt8]) -> (String, [UInt8]) {
        let marker: [UInt8] = Array("\r\n\r\n".utf8)
        guard
            let end = (0...(max(0, bytes.count - 4))).first(where: {
                bytes.count >= 4 && Array(bytes[$0..<$0 + 4]) == marker
            })
        else {
            return (String(decoding: bytes, as: UTF8.self), [])
        }
        return (String(decoding: bytes[..<end], as: UTF8.self), Array(bytes[(end + 4)...]))
    }
}

/// Counts the reads a pipeline asks for (backpressure tests).
final class ReadCounter: ChannelOutboundHandler, RemovableChannelHandler {
    typealias OutboundIn = Any
    var reads = 0
    func read(context: ChannelHandlerContext) {
        self.reads += 1
        context.read()
    }
}
