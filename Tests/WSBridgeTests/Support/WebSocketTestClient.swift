import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import NIOWebSocket

/// A WebSocket client built on NIO's own client upgrader and frame codec: an implementation independent of the
/// bridge's decoder, used to talk to it over real sockets.
final class WebSocketTestClient: Sendable {
    enum Failure: Error { case upgradeRefused(String) }

    private final class Inbox: ChannelInboundHandler, Sendable {
        typealias InboundIn = WebSocketFrame
        let continuation: AsyncStream<WebSocketFrame>.Continuation
        init(_ continuation: AsyncStream<WebSocketFrame>.Continuation) { self.continuation = continuation }
        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            self.continuation.yield(self.unwrapInboundIn(data))
        }
        func channelInactive(context: ChannelHandlerContext) {
            self.continuation.finish()
        }
    }

    /// Records the response head when the server refuses to upgrade.
    private final class RefusalCatcher: ChannelInboundHandler, RemovableChannelHandler, Sendable {
        typealias InboundIn = HTTPClientResponsePart
        let refused: EventLoopPromise<String>
        init(_ refused: EventLoopPromise<String>) { self.refused = refused }
        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            if case .head(let head) = self.unwrapInboundIn(data) {
                self.refused.succeed("\(head.status.code)")
            }
        }
        func channelInactive(context: ChannelHandlerContext) {
            // After a head, this is a no-op: the status already won.
            self.refused.completeWith(.success("closed"))
        }
        func errorCaught(context: ChannelHandlerContext, error: Error) {}
    }

    let channel: Channel
    let frames: AsyncStream<WebSocketFrame>
    let selectedProtocol: String?
    private let iterator: NIOLockedIterator

    private init(channel: Channel, frames: AsyncStream<WebSocketFrame>, selectedProtocol: String?) {
        self.channel = channel
        self.frames = frames
        self.selectedProtocol = selectedProtocol
        self.iterator = NIOLockedIterator(frames)
    }

    /// Connects and upgrades; throws `Failure.upgradeRefused(status)` when the server answers with an HTTP error.
    static func connect(
        port: Int,
        path: String = "/",
        headers extra: [(String, String)] = [],
        group: EventLoopGroup,
        tls: NIOSSLContext? = nil,
        serverHostname: String? = nil
    ) async throws -> WebSocketTestClient {
        let (stream, continuation) = AsyncStream<WebSocketFrame>.makeStream()
        // The channel and both promises on one event loop: a refusal's response head is read before the
        // connection closes, so its callback runs first. (On different loops the close could win the race and
        // report "closed" instead of the status: it did, once the server set TCP_NODELAY for real.)
        let loop = group.next()
        let upgraded = loop.makePromise(of: String?.self)
        let refused = loop.makePromise(of: String.self)
        let channel = try await ClientBootstrap(group: loop)
            .channelInitializer { channel in
                if let tls {
                    do {
                        try channel.pipeline.syncOperations.addHandler(
                            NIOSSLClientHandler(context: tls, serverHostname: serverHostname)
                        )
                    } catch {
                        return channel.eventLoop.makeFailedFuture(error)
                    }
                }
                let catcher = RefusalCatcher(refused)
                let upgrader = NIOWebSocketClientUpgrader(maxFrameSize: 1 << 24, automaticErrorHandling: false) {
                    channel,
                    response in
                    upgraded.succeed(response.headers.first(name: "sec-websocket-protocol"))
                    return channel.pipeline.removeHandler(catcher).flatMap {
                        channel.pipeline.addHandler(Inbox(continuation))
                    }
                }
                return channel.pipeline.addHTTPClientHandlers(
                    leftOverBytesStrategy: .forwardBytes,
                    withClientUpgrade: (upgraders: [upgrader], completionHandler: { _ in })
                ).flatMap {
                    channel.pipeline.addHandler(catcher)
                }
            }
            .connect(host: "127.0.0.1", port: port).get()
        var headers = HTTPHeaders([("Host", "127.0.0.1:\(port)"), ("Content-Length", "0")])
        for (name, value) in extra { headers.add(name: name, value: value) }
        channel.write(
            HTTPClientRequestPart.head(.init(version: .http1_1, method: .GET, uri: path, headers: headers)),
            promise: nil
        )
        channel.writeAndFlush(HTTPClientRequestPart.end(nil), promise: nil)
        refused.futureResult.whenSuccess { status in upgraded.fail(Failure.upgradeRefused(status)) }
        let selected = try await upgraded.futureResult.get()
        return WebSocketTestClient(channel: channel, frames: stream, selectedProtocol: selected)
    }

    func send(_ opcode: WebSocketOpcode, _ bytes: [UInt8], fin: Bool = true) {
        let frame = WebSocketFrame(fin: fin, opcode: opcode, maskKey: .random(), data: ByteBuffer(bytes: bytes))
        self.channel.writeAndFlush(frame, promise: nil)
    }

    func close(code: UInt16, reason: String = "") {
        var payload = ByteBuffer()
        payload.writeInteger(code)
        payload.writeString(reason)
        self.channel.writeAndFlush(
            WebSocketFrame(fin: true, opcode: .connectionClose, maskKey: .random(), data: payload),
            promise: nil
        )
    }

    /// The next frame, or nil once the connection is closed.
    func next() async -> WebSocketFrame? { await self.iterator.next() }

    /// Collects binary payload until `count` bytes arrived (or the stream ended).
    func receive(count: Int) async -> [UInt8] {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(count)
        while bytes.count < count, let frame = await self.next() {
            if frame.opcode == .binary || frame.opcode == .continuation {
                bytes += frame.unmaskedData.readableBytesView
            }
        }
        return bytes
    }

    /// Skips data frames until a Close arrives; returns its code and reason.
    func receiveClose() async -> (UInt16, String)? {
        while let frame = await self.next() {
            if frame.opcode == .connectionClose {
                var data = frame.unmaskedData
                let code = data.readInteger(as: UInt16.self) ?? 1005
                return (code, data.readString(length: data.readableBytes) ?? "")
            }
        }
        return nil
    }
}

/// Lets a Sendable client share one iterator of its frame stream.
final class NIOLockedIterator: @unchecked Sendable {
    private var iterator: AsyncStream<WebSocketFrame>.AsyncIterator
    init(_ stream: AsyncStream<WebSocketFrame>) { self.iterator = stream.makeAsyncIterator() }
    func next() async -> WebSocketFrame? { await self.iterator.next() }
}
