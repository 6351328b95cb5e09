import NIOCore
import NIOPosix
import NIOSSL

/// The NIO TCP echo backend of the loopback tests, listening on 127.0.0.1 port 0: echoes every byte and shuts its
/// write side when the peer does (half-close), like a well-behaved TCP service.
enum EchoServer {
    /// Binds the echo server on `group`, over TLS with `tls` when given. Close the returned channel to stop it.
    static func start(group: EventLoopGroup, tls: NIOSSLContext? = nil) async throws -> Channel {
        try await ServerBootstrap(group: group)
            .childChannelOption(.allowRemoteHalfClosure, value: true)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    if let tls {
                        try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: tls))
                    }
                    try channel.pipeline.syncOperations.addHandler(EchoHandler())
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
    }

    private final class EchoHandler: ChannelInboundHandler, Sendable {
        typealias InboundIn = ByteBuffer
        typealias OutboundOut = ByteBuffer

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            context.write(data, promise: nil)
        }

        func channelReadComplete(context: ChannelHandlerContext) { context.flush() }

        func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
            if let event = event as? ChannelEvent, event == .inputClosed {
                context.close(mode: .output, promise: nil)
            }
        }
    }
}
