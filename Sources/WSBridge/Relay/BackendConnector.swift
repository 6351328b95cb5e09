import NIOCore
import NIOPosix

/// Why a backend connection could not be made, in words a page's JavaScript can read from the close reason.
public struct BackendConnectError: Error, Sendable, Equatable {
    public enum Kind: String, Sendable, CaseIterable {
        case refused
        case timeout
        case unresolvable
        case unreachable
    }

    public var kind: Kind
    /// The underlying error, for logs.
    public var detail: String

    public init(kind: Kind, detail: String) {
        self.kind = kind
        self.detail = detail
    }

    /// The close reason sent with 1014.
    public var reason: String {
        switch self.kind {
        case .refused: return "backend refused"
        case .timeout: return "backend connect timeout"
        case .unresolvable: return "backend unresolvable"
        case .unreachable: return "backend unreachable"
        }
    }

    static func classify(_ error: Error) -> BackendConnectError {
        let detail = "\(error)"
        // ChannelError.connectTimeout carries the timeout, so it is matched by case: comparing it with
        // `.connectTimeout(.zero)` or looking for "connectTimeout" in its description ("Connect timeout (1 s)")
        // missed it, and a timeout was reported as `backend unreachable`.
        if Self.isConnectTimeout(error) {
            return .init(kind: .timeout, detail: detail)
        }
        if let connectionError = error as? NIOConnectionError {
            if connectionError.dnsAError != nil || connectionError.dnsAAAAError != nil,
                connectionError.connectionErrors.isEmpty
            {
                return .init(kind: .unresolvable, detail: detail)
            }
            let inner = connectionError.connectionErrors.map(\.error)
            if inner.contains(where: { Self.errno(of: $0) == ECONNREFUSED }) {
                return .init(kind: .refused, detail: detail)
            }
            if inner.contains(where: Self.isConnectTimeout) {
                return .init(kind: .timeout, detail: detail)
            }
            if inner.isEmpty { return .init(kind: .unresolvable, detail: detail) }
            return .init(kind: .unreachable, detail: detail)
        }
        if detail.contains("connectTimeout") { return .init(kind: .timeout, detail: detail) }
        if Self.errno(of: error) == ECONNREFUSED || Self.errno(of: error) == ENOENT {
            return .init(kind: .refused, detail: detail)
        }
        if error is SocketAddressError { return .init(kind: .unresolvable, detail: detail) }
        return .init(kind: .unreachable, detail: detail)
    }

    private static func isConnectTimeout(_ error: Error) -> Bool {
        if let channelError = error as? ChannelError, case .connectTimeout = channelError { return true }
        return false
    }

    private static func errno(of error: Error) -> Int32? {
        (error as? IOError)?.errnoCode
    }
}

/// Opens backend connections on a given event loop (the client channel's), each with a `BackendHandler` whose reads
/// are held until a session attaches. Tests substitute in-memory channels.
struct BackendConnector: Sendable {
    var connect: @Sendable (BackendAddress, EventLoop) -> EventLoopFuture<BackendHandler>

    /// Real sockets: TCP (with TCP_NODELAY) or Unix, half-closure allowed, the session's water marks.
    static func sockets(
        connectTimeout: TimeAmount,
        writeBufferWaterMark: ChannelOptions.Types.WriteBufferWaterMark,
        readBufferSize: Int = 64 << 10,
        maxReadsPerCycle: Int = 4
    ) -> BackendConnector {
        BackendConnector { address, eventLoop in
            let bootstrap = ClientBootstrap(group: eventLoop)
                .connectTimeout(connectTimeout)
                .channelOption(.allowRemoteHalfClosure, value: true)
                .channelOption(.writeBufferWaterMark, value: writeBufferWaterMark)
                .channelOption(.recvAllocator, value: BridgeConfiguration.recvAllocator(maximum: readBufferSize))
                .channelOption(.maxMessagesPerRead, value: UInt(max(1, maxReadsPerCycle)))
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(BackendHandler())
                    }
                }
            let connected: EventLoopFuture<Channel>
            switch address {
            case .tcp(let host, let port):
                connected = bootstrap.channelOption(.tcpOption(.tcp_nodelay), value: 1).connect(host: host, port: port)
            case .unix(let path):
                connected = bootstrap.connect(unixDomainSocketPath: path)
            case .echo:
                // Echo sessions are made without a backend (BridgeServer.shouldUpgrade); never connected.
                return eventLoop.makeFailedFuture(ChannelError.operationUnsupported)
            }
            return connected.flatMapThrowing { channel in
                try channel.pipeline.syncOperations.handler(type: BackendHandler.self)
            }
        }
    }
}
