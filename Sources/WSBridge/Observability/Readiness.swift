import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// What `/readyz` reports: the listener is bound and not draining, and a real WebSocket upgrade through it
/// succeeds (a self-check through the accept → HTTP → upgrade path, so a listener that accepts and drops
/// connections is not reported ready).
public final class Readiness: Sendable {
    /// The request path of the self-check upgrade; answered only with the matching secret header.
    static let selfCheckPath = "/.well-known/wsbridge-selfcheck"
    static let selfCheckHeader = "X-WSBridge-Selfcheck"

    private struct State {
        var address: SocketAddress?
        var draining = false
        /// Bytes the probe sends before its request (a PROXY protocol LOCAL header under `--proxy-protocol`).
        var probePrefix: [UInt8] = []
    }

    private let state = NIOLockedValueBox(State())
    /// A per-process secret, so that clients cannot reach the self-check target.
    let secret: String
    let timeout: TimeAmount

    public init(timeout: TimeAmount = .seconds(2)) {
        self.secret = (0..<4).map { _ in String(UInt64.random(in: .min ... .max), radix: 36) }.joined()
        self.timeout = timeout
    }

    func listening(on address: SocketAddress) {
        self.state.withLockedValue { $0.address = address }
    }

    func draining() {
        self.state.withLockedValue { $0.draining = true }
    }

    /// The listener expects a PROXY protocol header first: the probe sends a LOCAL one.
    func expectProxyHeader() {
        self.state.withLockedValue { $0.probePrefix = ProxyHeader(version: .v2, addresses: .unknown).encoded() }
    }

    /// Whether `buffer` (the first bytes of a plain connection) is this process's self-check request: the only
    /// plain request a TLS-only listener lets through.
    func isSelfCheck(_ buffer: ByteBuffer) -> Bool {
        let text = String(decoding: buffer.readableBytesView, as: UTF8.self)
        return text.hasPrefix("GET \(Self.selfCheckPath) ")
            && text.contains("\r\n\(Self.selfCheckHeader): \(self.secret)\r\n")
    }

    /// Runs the checks; succeeds with "ready" or fails with the reason.
    public func check(on eventLoop: EventLoop) -> EventLoopFuture<Result<String, ReadinessError>> {
        let state = self.state.withLockedValue { $0 }
        guard !state.draining else { return eventLoop.makeSucceededFuture(.failure(.init("draining: shutting down"))) }
        guard var address = state.address else {
            return eventLoop.makeSucceededFuture(.failure(.init("not listening yet")))
        }
        // A wildcard listener is checked through loopback.
        if address.ipAddress == "::" { address = try! SocketAddress(ipAddress: "::1", port: address.port!) }
        if address.ipAddress == "0.0.0.0" { address = try! SocketAddress(ipAddress: "127.0.0.1", port: address.port!) }
        return Self.probe(
            address: address,
            secret: self.secret,
            prefix: state.probePrefix,
            timeout: self.timeout,
            on: eventLoop
        ).map { result in
            // A shutdown that began while the probe ran explains its failure better than the probe does.
            if case .failure = result, self.state.withLockedValue({ $0.draining }) {
                return .failure(.init("draining: shutting down"))
            }
            return result
        }
    }

    public struct ReadinessError: Error, Sendable, Equatable, CustomStringConvertible {
        public var reason: String
        init(_ reason: String) { self.reason = reason }
        public var description: String { self.reason }
    }

    /// Connects to `address`, asks for the self-check upgrade, and expects `101`.
    static func probe(
        address: SocketAddress,
        secret: String,
        prefix: [UInt8] = [],
        timeout: TimeAmount,
        on eventLoop: EventLoop
    ) -> EventLoopFuture<Result<String, ReadinessError>> {
        // The first answer wins (NIO ignores later completions): the timeout, the connection and the response race.
        let answer = eventLoop.makePromise(of: Result<String, ReadinessError>.self)
        let deadline = eventLoop.scheduleTask(in: timeout) {
            answer.succeed(.failure(.init("self-check: no upgrade within \(timeout.nanoseconds / 1_000_000) ms")))
        }
        let host = address.ipAddress.map { $0.contains(":" as Character) ? "[\($0)]" : $0 } ?? "localhost"
        let request =
            "GET \(selfCheckPath) HTTP/1.1\r\nHost: \(host)\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            + "Sec-WebSocket-Key: d3NicmlkZ2Ugc2VsZmNoZWNrAA==\r\nSec-WebSocket-Version: 13\r\n"
            + "\(selfCheckHeader): \(secret)\r\n\r\n"
        ClientBootstrap(group: eventLoop)
            .connectTimeout(timeout)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(ProbeHandler(answer: answer))
                }
            }
            .connect(to: address)
            .whenComplete { result in
                switch result {
                case .success(let channel):
                    var bytes = channel.allocator.buffer(bytes: prefix)
                    bytes.writeString(request)
                    channel.writeAndFlush(bytes, promise: nil)
                    answer.futureResult.whenComplete { _ in channel.close(promise: nil) }
                case .failure(let error):
                    answer.succeed(.failure(.init("self-check: cannot connect: \(error)")))
                }
            }
        answer.futureResult.whenComplete { _ in deadline.cancel() }
        return answer.futureResult
    }

    private final class ProbeHandler: ChannelInboundHandler {
        typealias InboundIn = ByteBuffer
        let answer: EventLoopPromise<Result<String, ReadinessError>>
        var received = ""
        init(answer: EventLoopPromise<Result<String, ReadinessError>>) { self.answer = answer }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            var buffer = self.unwrapInboundIn(data)
            self.received += buffer.readString(length: buffer.readableBytes) ?? ""
            guard let end = self.received.range(of: "\r\n\r\n") else { return }
            let statusLine = self.received[..<end.lowerBound].split(separator: "\r\n").first ?? ""
            if statusLine.hasPrefix("HTTP/1.1 101") {
                self.answer.succeed(.success("ready"))
            } else {
                self.answer.succeed(.failure(.init("self-check: upgrade answered '\(statusLine)'")))
            }
        }

        func channelInactive(context: ChannelHandlerContext) {
            self.answer.succeed(.failure(.init("self-check: connection closed before the upgrade")))
        }

        func errorCaught(context: ChannelHandlerContext, error: Error) {
            context.close(promise: nil)
        }
    }
}
