import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// Where a Redis server is and how to log in (websockify's `TokenRedis` source, plus an ACL user name).
public struct RedisEndpoint: Sendable, Equatable {
    public var host: String
    public var port: Int
    public var database: Int
    public var username: String?
    public var password: String?

    public init(host: String, port: Int = 6379, database: Int = 0, username: String? = nil, password: String? = nil) {
        self.host = host
        self.port = port
        self.database = database
        self.username = username
        self.password = password
    }
}

/// A failed Redis exchange: unreachable, closed, timed out, or an error reply.
public struct RedisError: Error, Sendable, Equatable, CustomStringConvertible {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { self.message }
}

/// One connection to Redis: commands are pipelined and answered in order; in subscriber mode, pushed `message`
/// arrays go to `onMessage` instead. TLS to Redis is not implemented yet (it would be a NIOSSL handler first in
/// this pipeline).
final class RedisConnection: Sendable {
    let channel: Channel

    private init(channel: Channel) { self.channel = channel }

    /// Connects, then AUTH (with the user name when given) and SELECT when the endpoint asks for them.
    static func connect(
        to endpoint: RedisEndpoint,
        on eventLoop: EventLoop,
        timeout: TimeAmount,
        onMessage: (@Sendable (_ channel: String, _ message: [UInt8]) -> Void)? = nil
    ) -> EventLoopFuture<RedisConnection> {
        ClientBootstrap(group: eventLoop)
            .connectTimeout(timeout)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(RESPDecoder()))
                    try channel.pipeline.syncOperations.addHandler(RedisCommandHandler(onMessage: onMessage))
                }
            }
            .connect(host: endpoint.host, port: endpoint.port)
            .flatMap { channel in
                let connection = RedisConnection(channel: channel)
                var setup = channel.eventLoop.makeSucceededFuture(RESPValue.simpleString("OK"))
                if let password = endpoint.password {
                    let auth = endpoint.username.map { ["AUTH", $0, password] } ?? ["AUTH", password]
                    setup = setup.flatMap { _ in connection.command(auth) }
                }
                if endpoint.database != 0 {
                    setup = setup.flatMap { _ in connection.command(["SELECT", "\(endpoint.database)"]) }
                }
                return setup.map { _ in connection }.flatMapErrorThrowing { error in
                    channel.close(promise: nil)
                    throw error
                }
            }
    }

    /// Sends one command; an error reply fails the future with `RedisError`.
    func command(_ arguments: [String]) -> EventLoopFuture<RESPValue> {
        let promise = self.channel.eventLoop.makePromise(of: RESPValue.self)
        self.channel.writeAndFlush(RedisCommandHandler.Request(arguments: arguments, promise: promise)).cascadeFailure(
            to: promise
        )
        return promise.futureResult.flatMapThrowing { value in
            if case .error(let message) = value { throw RedisError("redis: \(message)") }
            return value
        }
    }

    var isActive: Bool { self.channel.isActive }

    func close() { self.channel.close(promise: nil) }
}

/// Bytes → `RESPValue`, with `RESPParser`'s limits.
struct RESPDecoder: ByteToMessageDecoder {
    typealias InboundOut = RESPValue
    let parser = RESPParser()

    mutating func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        guard let (value, consumed) = try self.parser.parse(buffer.readableBytesView) else { return .needMoreData }
        buffer.moveReaderIndex(forwardBy: consumed)
        context.fireChannelRead(NIOAny(value))
        return .continue
    }
}

/// Matches replies to requests in order; hands pub/sub messages to `onMessage`.
final class RedisCommandHandler: ChannelDuplexHandler {
    typealias InboundIn = RESPValue
    typealias OutboundIn = Request
    typealias OutboundOut = ByteBuffer

    struct Request {
        var arguments: [String]
        var promise: EventLoopPromise<RESPValue>
    }

    private var pending = CircularBuffer<EventLoopPromise<RESPValue>>()
    private let onMessage: (@Sendable (String, [UInt8]) -> Void)?

    init(onMessage: (@Sendable (String, [UInt8]) -> Void)?) { self.onMessage = onMessage }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let request = self.unwrapOutboundIn(data)
        self.pending.append(request.promise)
        let bytes = RESPValue.encodeCommand(request.arguments)
        context.write(self.wrapOutboundOut(context.channel.allocator.buffer(bytes: bytes)), promise: promise)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let value = self.unwrapInboundIn(data)
        if let onMessage = self.onMessage, case .array(let items?) = value, items.count == 3,
            items[0].string == "message", let channel = items[1].string, case .bulkString(let payload?) = items[2]
        {
            onMessage(channel, payload)
            return
        }
        guard let promise = self.pending.popFirst() else {
            // A reply nobody asked for: the stream cannot be trusted any more.
            context.close(promise: nil)
            return
        }
        promise.succeed(value)
    }

    func channelInactive(context: ChannelHandlerContext) {
        self.failAll(RedisError("redis connection closed"))
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        self.failAll(RedisError("redis: \(error)"))
        context.close(promise: nil)
    }

    private func failAll(_ error: Error) {
        while let promise = self.pending.popFirst() { promise.fail(error) }
    }
}
