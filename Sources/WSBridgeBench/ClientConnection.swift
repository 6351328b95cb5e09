import NIOCore
import NIOPosix

/// Streaming parser for the frames a server sends (unmasked): payload slices are handed out as they arrive.
struct ServerFrameParser {
    enum Event {
        case data(ByteBuffer)
        case ping(ByteBuffer)
        case pong
        case close
    }

    struct ProtocolError: Error, CustomStringConvertible {
        var description: String
    }

    private var remaining: UInt64 = 0
    private var inPayload = false
    private var pending: ByteBuffer?

    mutating func feed(_ input: ByteBuffer, _ emit: (Event) -> Void) throws {
        var buffer = input
        if var pending = self.pending {
            self.pending = nil
            pending.writeBuffer(&buffer)
            buffer = pending
        }
        while buffer.readableBytes > 0 {
            if self.inPayload {
                let count = Int(min(UInt64(buffer.readableBytes), self.remaining))
                emit(.data(buffer.readSlice(length: count)!))
                self.remaining -= UInt64(count)
                if self.remaining == 0 { self.inPayload = false }
                continue
            }
            guard buffer.readableBytes >= 2 else { break }
            let first = buffer.getInteger(at: buffer.readerIndex, as: UInt8.self)!
            let second = buffer.getInteger(at: buffer.readerIndex + 1, as: UInt8.self)!
            if second & 0x80 != 0 { throw ProtocolError(description: "masked server frame") }
            var length = UInt64(second & 0x7F)
            var headerLength = 2
            if length == 126 {
                guard buffer.readableBytes >= 4 else { break }
                length = UInt64(buffer.getInteger(at: buffer.readerIndex + 2, as: UInt16.self)!)
                headerLength = 4
            } else if length == 127 {
                guard buffer.readableBytes >= 10 else { break }
                length = buffer.getInteger(at: buffer.readerIndex + 2, as: UInt64.self)!
                headerLength = 10
            }
            let opcode = first & 0x0F
            if opcode & 0x8 != 0 {
                guard buffer.readableBytes >= headerLength + Int(length) else { break }
                buffer.moveReaderIndex(forwardBy: headerLength)
                let payload = buffer.readSlice(length: Int(length))!
                switch opcode {
                case 0x9: emit(.ping(payload))
                case 0xA: emit(.pong)
                case 0x8: emit(.close)
                default: throw ProtocolError(description: "reserved opcode \(opcode)")
                }
                continue
            }
            buffer.moveReaderIndex(forwardBy: headerLength)
            if length > 0 {
                self.inPayload = true
                self.remaining = length
            }
        }
        if buffer.readableBytes > 0 {
            // Only an incomplete header or control frame is kept (a few bytes).
            var rest = ByteBufferAllocator().buffer(capacity: buffer.readableBytes)
            rest.writeBuffer(&buffer)
            self.pending = rest
        }
    }
}

/// What a scenario does with a connection's events. Every call happens on the client's single event loop.
protocol ConnectionDriver: AnyObject {
    /// The WebSocket upgrade completed (or, in raw TCP mode, the connection is up).
    func opened(_ connection: ClientConnection)
    /// Payload bytes (WebSocket data frames' payload, or raw TCP bytes).
    func payload(_ connection: ClientConnection, _ buffer: ByteBuffer)
    func readComplete(_ connection: ClientConnection)
    func writable(_ connection: ClientConnection)
    func closeReceived(_ connection: ClientConnection)
    func closed(_ connection: ClientConnection, error: Error?)
}

extension ConnectionDriver {
    func readComplete(_ connection: ClientConnection) {}
    func writable(_ connection: ClientConnection) {}
    func closeReceived(_ connection: ClientConnection) { connection.channel?.close(promise: nil) }
}

/// Where the load generator connects, and how it speaks.
struct Endpoint {
    enum Kind { case webSocket, rawTCP }
    var kind: Kind
    var host: String
    var port: Int
    var path: String

    /// `ws://HOST:PORT/PATH` or `tcp://HOST:PORT`.
    static func parse(_ text: String) -> Endpoint? {
        let kind: Kind
        var rest: Substring
        if text.hasPrefix("ws://") {
            kind = .webSocket
            rest = text.dropFirst(5)
        } else if text.hasPrefix("tcp://") {
            kind = .rawTCP
            rest = text.dropFirst(6)
        } else {
            return nil
        }
        var path = "/"
        if let slash = rest.firstIndex(of: "/") {
            path = String(rest[slash...])
            rest = rest[..<slash]
        }
        guard let colon = rest.lastIndex(of: ":"), let port = Int(rest[rest.index(after: colon)...]) else { return nil }
        return Endpoint(kind: kind, host: String(rest[..<colon]), port: port, path: path)
    }
}

/// One client connection: performs the upgrade (in WebSocket mode), parses server frames, answers pings, and
/// reports payload and events to its driver.
final class ClientConnection: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    let endpoint: Endpoint
    unowned let driver: ConnectionDriver
    let id: Int
    private(set) var context: ChannelHandlerContext?
    private var responseHead: ByteBuffer?
    private var parser = ServerFrameParser()
    private(set) var isOpen = false
    private var reportedClose = false
    private var error: Error?
    /// Scenario state kept per connection.
    var verifier = StreamVerifier()
    var counter: UInt64 = 0
    var mark: UInt64 = 0
    var sentAt: UInt64 = 0

    init(endpoint: Endpoint, driver: ConnectionDriver, id: Int) {
        self.endpoint = endpoint
        self.driver = driver
        self.id = id
    }

    var channel: Channel? { self.context?.channel }
    var isWritable: Bool { self.context?.channel.isWritable ?? false }
    var allocator: ByteBufferAllocator { self.context?.channel.allocator ?? ByteBufferAllocator() }

    func write(_ buffer: ByteBuffer, promise: EventLoopPromise<Void>? = nil) {
        self.context?.write(self.wrapOutboundOut(buffer), promise: promise)
    }

    func flush() {
        self.context?.flush()
    }

    /// Sends a Close frame (WebSocket) and, for raw TCP, closes.
    func sendClose() {
        guard let context = self.context else { return }
        switch self.endpoint.kind {
        case .webSocket:
            context.writeAndFlush(
                self.wrapOutboundOut(Frames.close(allocator: context.channel.allocator)),
                promise: nil
            )
        case .rawTCP:
            context.close(promise: nil)
        }
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
    }

    func channelActive(context: ChannelHandlerContext) {
        switch self.endpoint.kind {
        case .rawTCP:
            self.isOpen = true
            self.driver.opened(self)
        case .webSocket:
            let request =
                "GET \(self.endpoint.path) HTTP/1.1\r\nHost: \(self.endpoint.host):\(self.endpoint.port)\r\n"
                + "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                + "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: binary\r\n\r\n"
            var buffer = context.channel.allocator.buffer(capacity: request.utf8.count)
            buffer.writeString(request)
            self.responseHead = context.channel.allocator.buffer(capacity: 256)
            context.writeAndFlush(self.wrapOutboundOut(buffer), promise: nil)
        }
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var buffer = self.unwrapInboundIn(data)
        if self.endpoint.kind == .rawTCP {
            self.driver.payload(self, buffer)
            return
        }
        if !self.isOpen {
            guard var head = self.responseHead else { return }
            head.writeBuffer(&buffer)
            let view = head.readableBytesView
            guard let end = Self.endOfHead(view) else {
                self.responseHead = head
                return
            }
            let statusLine = String(decoding: view.prefix(12), as: UTF8.self)
            guard statusLine == "HTTP/1.1 101" else {
                self.fail(
                    context: context,
                    ServerFrameParser.ProtocolError(description: "upgrade refused: \(statusLine)")
                )
                return
            }
            head.moveReaderIndex(to: end)
            self.responseHead = nil
            self.isOpen = true
            self.driver.opened(self)
            buffer = head
            if buffer.readableBytes == 0 { return }
        }
        do {
            try self.parser.feed(buffer) { event in
                switch event {
                case .data(let payload):
                    self.driver.payload(self, payload)
                case .ping(let payload):
                    var pong = context.channel.allocator.buffer(capacity: payload.readableBytes + 6)
                    payload.withUnsafeReadableBytes {
                        Frames.appendMasked(&pong, opcode: 0xA, payload: $0, mask: 0x1234_5678)
                    }
                    context.writeAndFlush(self.wrapOutboundOut(pong), promise: nil)
                case .pong:
                    break
                case .close:
                    self.driver.closeReceived(self)
                }
            }
        } catch {
            self.fail(context: context, error)
        }
    }

    private static func endOfHead(_ view: ByteBufferView) -> Int? {
        var index = view.startIndex
        let crlfcrlf: [UInt8] = [13, 10, 13, 10]
        while index + 4 <= view.endIndex {
            if view[index] == 13, view[index + 1] == 10, view[index + 2] == 13, view[index + 3] == 10 {
                return index + crlfcrlf.count
            }
            index += 1
        }
        return nil
    }

    private func fail(context: ChannelHandlerContext, _ error: Error) {
        if self.error == nil { self.error = error }
        context.close(promise: nil)
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        self.driver.readComplete(self)
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable { self.driver.writable(self) }
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        self.fail(context: context, error)
    }

    func channelInactive(context: ChannelHandlerContext) {
        guard !self.reportedClose else { return }
        self.reportedClose = true
        self.driver.closed(self, error: self.error)
    }
}

/// Client sockets for all scenarios: TCP_NODELAY, large reads, the scenario's water marks.
func makeClientBootstrap(
    group: EventLoopGroup,
    endpoint: Endpoint,
    driver: ConnectionDriver,
    nextID: @escaping () -> Int,
    highWaterMark: Int = 4 << 20
) -> (ClientBootstrap, (Channel) -> ClientConnection?) {
    let bootstrap = ClientBootstrap(group: group)
        .channelOption(.socketOption(.tcp_nodelay), value: 1)
        .channelOption(
            .recvAllocator,
            value: AdaptiveRecvByteBufferAllocator(minimum: 1024, initial: 64 << 10, maximum: 1 << 20)
        )
        .channelOption(.maxMessagesPerRead, value: 8)
        .channelOption(.writeBufferWaterMark, value: .init(low: highWaterMark / 2, high: highWaterMark))
        .connectTimeout(.seconds(10))
        .channelInitializer { channel in
            channel.eventLoop.makeCompletedFuture {
                try channel.pipeline.syncOperations.addHandler(
                    ClientConnection(endpoint: endpoint, driver: driver, id: nextID())
                )
            }
        }
    let lookup: (Channel) -> ClientConnection? = { channel in
        try? channel.pipeline.syncOperations.handler(type: ClientConnection.self)
    }
    return (bootstrap, lookup)
}
