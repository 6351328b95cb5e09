import NIOCore
import NIOPosix

#if canImport(Glibc)
    import Glibc
#endif

/// The TCP backend behind the relay under test.
///
/// - `echo`: sends every byte back (reads are held while its output is full).
/// - `sink`: verifies that the bytes continue the pattern stream, counts them and, every `ackEvery` bytes, sends
///   the count back as 8 bytes big-endian (the client measures upload throughput from these acks; a count with
///   the top bit set reports a mismatch).
/// - `source`: writes the pattern stream in writes of `chunk` bytes as fast as the connection takes them.
/// - `hold`: accepts and never reads (a backend that does not read).
enum BackendMode: String {
    case echo, sink, source, hold
}

struct BackendOptions {
    var mode: BackendMode = .echo
    var host = "127.0.0.1"
    var port = 0
    var chunk = 64 << 10
    var ackEvery: UInt64 = 4 << 20
    var threads = 1
}

final class EchoBackendHandler: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer
    private var pendingRead = false

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        context.write(data, promise: nil)
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        context.flush()
    }

    func read(context: ChannelHandlerContext) {
        if context.channel.isWritable { context.read() } else { self.pendingRead = true }
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable && self.pendingRead {
            self.pendingRead = false
            context.read()
        }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? ChannelEvent, event == .inputClosed {
            context.close(promise: nil)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        context.close(promise: nil)
    }
}

final class SinkBackendHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer
    private var verifier = StreamVerifier()
    private let ackEvery: UInt64
    private var nextAck: UInt64
    private var reported = false

    init(ackEvery: UInt64) {
        self.ackEvery = ackEvery
        self.nextAck = ackEvery
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let buffer = self.unwrapInboundIn(data)
        if !self.verifier.consume(buffer), !self.reported {
            self.reported = true
            printErr("sink: bytes differ from the pattern near offset \(self.verifier.offset)")
            self.ack(context: context, self.verifier.offset | (1 << 63))
        }
        while self.ackEvery > 0 && self.verifier.offset >= self.nextAck {
            self.ack(context: context, self.verifier.offset)
            self.nextAck += self.ackEvery
        }
    }

    private func ack(context: ChannelHandlerContext, _ value: UInt64) {
        var buffer = context.channel.allocator.buffer(capacity: 8)
        buffer.writeInteger(value)
        context.writeAndFlush(self.wrapOutboundOut(buffer), promise: nil)
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? ChannelEvent, event == .inputClosed {
            context.close(promise: nil)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        context.close(promise: nil)
    }
}

final class SourceBackendHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer
    private let chunk: Int
    private var pattern: ByteBuffer?
    private var offset: UInt64 = 0

    init(chunk: Int) {
        precondition(chunk <= Pattern.period, "--chunk must be at most \(Pattern.period)")
        self.chunk = chunk
    }

    func channelActive(context: ChannelHandlerContext) {
        self.pattern = Pattern.buffer(allocator: context.channel.allocator)
        self.pump(context: context)
        context.fireChannelActive()
    }

    private func pump(context: ChannelHandlerContext) {
        guard let pattern = self.pattern else { return }
        // Writes until the water mark is passed, then one flush: NIO gathers them into writev calls. The next
        // round starts when the channel is writable again.
        var wrote = false
        while context.channel.isWritable && context.channel.isActive {
            let start = Int(self.offset % UInt64(Pattern.period))
            context.write(self.wrapOutboundOut(pattern.getSlice(at: start, length: self.chunk)!), promise: nil)
            self.offset += UInt64(self.chunk)
            wrote = true
        }
        if wrote { context.flush() }
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable { self.pump(context: context) }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {}

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? ChannelEvent, event == .inputClosed {
            context.close(promise: nil)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        context.close(promise: nil)
    }
}

/// Runs the backend until the process is killed. Prints `listening on HOST:PORT` once ready.
func runBackend(_ options: BackendOptions) throws -> Never {
    let group = MultiThreadedEventLoopGroup(numberOfThreads: options.threads)
    let mode = options.mode
    var bootstrap = ServerBootstrap(group: group)
        .serverChannelOption(.backlog, value: 4096)
        .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
        .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
        .childChannelOption(.allowRemoteHalfClosure, value: true)
        .childChannelOption(
            .recvAllocator,
            value: AdaptiveRecvByteBufferAllocator(minimum: 1024, initial: 64 << 10, maximum: 1 << 20)
        )
        .childChannelOption(.maxMessagesPerRead, value: 8)
        .childChannelOption(.writeBufferWaterMark, value: .init(low: 1 << 20, high: 4 << 20))
        .childChannelInitializer { channel in
            channel.eventLoop.makeCompletedFuture {
                let sync = channel.pipeline.syncOperations
                switch mode {
                case .echo: try sync.addHandler(EchoBackendHandler())
                case .sink: try sync.addHandler(SinkBackendHandler(ackEvery: options.ackEvery))
                case .source: try sync.addHandler(SourceBackendHandler(chunk: options.chunk))
                case .hold: break
                }
            }
        }
    if mode == .hold {
        bootstrap = bootstrap.childChannelOption(.autoRead, value: false)
    }
    let channel = try bootstrap.bind(host: options.host, port: options.port).wait()
    print("listening on \(options.host):\(channel.localAddress?.port ?? 0)")
    fflush(stdout)
    try channel.closeFuture.wait()
    exit(0)
}
