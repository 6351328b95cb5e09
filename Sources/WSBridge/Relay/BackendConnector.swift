import NIOCore
import NIOPosix
import NIOSSL
import NIOTLS

/// Why a backend connection could not be made, in words a page's JavaScript can read from the close reason.
public struct BackendConnectError: Error, Sendable, Equatable {
    public enum Kind: String, Sendable, CaseIterable {
        case refused
        case timeout
        case unresolvable
        case unreachable
        /// The backend's certificate was not trusted (unknown CA, wrong name, expired).
        case tlsVerification = "tls_verification"
        /// Any other TLS handshake failure.
        case tlsHandshake = "tls_handshake"
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
        case .tlsVerification: return "backend TLS certificate not trusted"
        case .tlsHandshake: return "backend TLS handshake failed"
        }
    }

    static func classify(_ error: Error) -> BackendConnectError {
        let detail = "\(error)"
        if let tlsError = error as? BackendTLSHandshakeError {
            let verification = ["CERTIFICATE_VERIFY_FAILED", "failedToValidateHostname", "serverHostnameImpossibleToMatch", "unableToValidateCertificate"]
            let kind: Kind = verification.contains(where: tlsError.detail.contains) ? .tlsVerification : .tlsHandshake
            return .init(kind: kind, detail: tlsError.detail)
        }
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

/// What a backend connection needs: where, over TLS or not, and the PROXY protocol header to send first.
struct BackendRequest: Sendable {
    var address: BackendAddress
    var tls: BackendTLS?
    var proxyHeader: [UInt8]?

    init(address: BackendAddress, tls: BackendTLS? = nil, proxyHeader: [UInt8]? = nil) {
        self.address = address
        self.tls = tls
        self.proxyHeader = proxyHeader
    }
}

/// A TLS handshake with a backend that did not complete.
struct BackendTLSHandshakeError: Error, CustomStringConvertible {
    var detail: String
    var description: String { self.detail }
}

/// Opens backend connections on a given event loop (the client channel's), each with a `BackendHandler` whose reads
/// are held until a session attaches. Tests substitute in-memory channels.
struct BackendConnector: Sendable {
    var connect: @Sendable (BackendRequest, EventLoop) -> EventLoopFuture<BackendHandler>

    /// Real sockets: TCP (with TCP_NODELAY) or Unix, half-closure allowed, the session's water marks; TLS when the
    /// target asks for it (the handshake completes before the connection counts as made).
    static func sockets(
        connectTimeout: TimeAmount,
        writeBufferWaterMark: ChannelOptions.Types.WriteBufferWaterMark,
        readBufferSize: Int = 64 << 10,
        maxReadsPerCycle: Int = 4,
        tcpUserTimeoutMilliseconds: Int = 0
    ) -> BackendConnector {
        BackendConnector { request, eventLoop in
            let handshake: EventLoopPromise<Void>? = request.tls != nil ? eventLoop.makePromise() : nil
            let bootstrap = ClientBootstrap(group: eventLoop)
                .connectTimeout(connectTimeout)
                .channelOption(.allowRemoteHalfClosure, value: true)
                .channelOption(.writeBufferWaterMark, value: writeBufferWaterMark)
                .channelOption(.recvAllocator, value: BridgeConfiguration.recvAllocator(maximum: readBufferSize))
                .channelOption(.maxMessagesPerRead, value: UInt(max(1, maxReadsPerCycle)))
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        let sync = channel.pipeline.syncOperations
                        if let header = request.proxyHeader {
                            try sync.addHandler(ProxyHeaderWriter(header: header))
                        }
                        guard let tls = request.tls, let handshake, case .tcp(let host, _) = request.address else {
                            try sync.addHandler(BackendHandler())
                            return
                        }
                        guard let context = tls.context else { throw BackendTLSHandshakeError(detail: "TLS context not loaded") }
                        try sync.addHandler(NIOSSLClientHandler(context: context, serverHostname: tls.serverHostname(for: host)))
                        // The BackendHandler (which holds reads) joins once the handshake is done: the handshake
                        // needs reads.
                        try sync.addHandler(BackendTLSHandshakeHandler(promise: handshake))
                    }
                }
            let connected: EventLoopFuture<Channel>
            switch request.address {
            case .tcp(let host, let port):
                connected = bootstrap.channelOption(.tcpOption(.tcp_nodelay), value: 1)
                    .channelOption(.socketOption(.so_keepalive), value: 1)
                    .channelOption(BridgeConfiguration.tcpUserTimeoutOption, value: tcpUserTimeoutMilliseconds)
                    .connect(host: host, port: port)
            case .unix(let path):
                connected = bootstrap.connect(unixDomainSocketPath: path)
            case .echo:
                // Echo sessions are made without a backend (HandshakeHandler); never connected.
                return eventLoop.makeFailedFuture(ChannelError.operationUnsupported)
            }
            guard let handshake else {
                return connected.flatMapThrowing { channel in
                    try channel.pipeline.syncOperations.handler(type: BackendHandler.self)
                }
            }
            connected.whenFailure { handshake.fail($0) }
            return connected.flatMap { channel in
                // The connect timeout covers the handshake too.
                let timer = eventLoop.scheduleTask(in: connectTimeout) {
                    handshake.fail(ChannelError.connectTimeout(connectTimeout))
                    channel.close(promise: nil)
                }
                return handshake.futureResult.always { _ in timer.cancel() }.flatMapThrowing {
                    try channel.pipeline.syncOperations.handler(type: BackendHandler.self)
                }.flatMapErrorThrowing { error in
                    channel.close(promise: nil)
                    throw error
                }
            }
        }
    }
}

/// Waits for the TLS handshake with a backend: on success installs the `BackendHandler` behind itself (before any
/// application data is passed on), on failure fails the promise with what BoringSSL said.
final class BackendTLSHandshakeHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    private var promise: EventLoopPromise<Void>?

    init(promise: EventLoopPromise<Void>) {
        self.promise = promise
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case TLSUserEvent.handshakeCompleted = event, let promise = self.promise {
            self.promise = nil
            do {
                try context.pipeline.syncOperations.addHandler(BackendHandler(), position: .after(self))
                promise.succeed(())
            } catch {
                promise.fail(error)
            }
        }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        if let promise = self.promise {
            self.promise = nil
            promise.fail(BackendTLSHandshakeError(detail: "\(error)"))
            context.close(promise: nil)
            return
        }
        context.fireErrorCaught(error)
    }

    func channelInactive(context: ChannelHandlerContext) {
        if let promise = self.promise {
            self.promise = nil
            promise.fail(BackendTLSHandshakeError(detail: "connection closed during the TLS handshake"))
        }
        context.fireChannelInactive()
    }
}
