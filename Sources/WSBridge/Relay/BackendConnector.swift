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
            return .init(
                kind: tlsError.certificateNotTrusted ? .tlsVerification : .tlsHandshake,
                detail: tlsError.detail
            )
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
    /// The backend's certificate failed verification (its chain, or its name), as opposed to any other failure.
    var certificateNotTrusted = false
    var detail: String
    var description: String { self.detail }

    /// Tells a certificate that is not trusted from other failures by the error's type and by what the
    /// certificate verification itself reported (`verificationFailed`), never by message text: BoringSSL's error
    /// codes are not public in NIOSSL.
    init(_ error: Error, verificationFailed: Bool) {
        var notTrusted = verificationFailed
        if let extra = error as? NIOSSLExtraError,
            extra == .failedToValidateHostname || extra == .serverHostnameImpossibleToMatch
        {
            notTrusted = true
        }
        if let sslError = error as? NIOSSLError, case .unableToValidateCertificate = sslError { notTrusted = true }
        self.certificateNotTrusted = notTrusted
        self.detail = "\(error)"
    }

    init(detail: String) {
        self.detail = detail
    }
}

/// What the certificate verification of one backend handshake reported; written and read on the channel's event
/// loop only (during the handshake, by `NIOSSLClientHandler`'s verification callback, then by the handshake handler).
final class BackendTLSVerification: @unchecked Sendable {
    private(set) var failed = false

    /// NIOSSL's verification callback: BoringSSL's own verdict for each certificate, passed through unchanged
    /// and noted.
    func note(_ result: NIOSSLVerificationResult) -> NIOSSLVerificationResult {
        if result == .failed { self.failed = true }
        return result
    }
}

/// Opens backend connections on a given event loop (the client channel's), each with a `BackendHandler` whose reads
/// are held until a session attaches. Tests substitute in-memory channels.
struct BackendConnector: Sendable {
    var connect: @Sendable (BackendRequest, EventLoop) -> EventLoopFuture<BackendHandler>

    /// Real sockets: TCP (with TCP_NODELAY) or Unix, half-closure allowed, the session's water marks; TLS when the
    /// target asks for it (the handshake completes before the connection counts as made).
    /// The TLS client handler of a backend connection, with BoringSSL's own verification noted in `verification`.
    static func tlsClientHandler(
        context: NIOSSLContext,
        serverHostname: String?,
        verification: BackendTLSVerification
    ) throws -> NIOSSLClientHandler {
        // NIOSSL's only way to see the default verification's verdict is its verification callback, deprecated in
        // favour of callbacks that replace the verification; it is called through a protocol so that this file
        // builds without a warning.
        try (NotingVerification.self as any TLSClientHandlerMaking.Type).make(
            context: context,
            serverHostname: serverHostname,
            verification: verification
        )
    }

    static func sockets(
        connectTimeout: TimeAmount,
        writeBufferWaterMark: ChannelOptions.Types.WriteBufferWaterMark,
        readBufferSize: Int = 64 << 10,
        maxReadsPerCycle: Int = 4,
        tcpUserTimeoutMilliseconds: Int = 0
    ) -> BackendConnector {
        BackendConnector { request, eventLoop in
            let handshake: EventLoopPromise<Void>? = request.tls != nil ? eventLoop.makePromise() : nil
            // The channel's options are set synchronously in the initializer (before the connect), not as the
            // bootstrap's: see `BridgeConfiguration.setSessionOptions`. TCP_NODELAY is the one the bootstrap keeps:
            // NIO's ClientBootstrap sets it by default on TCP (and leaves it out for Unix sockets).
            let bootstrap = ClientBootstrap(group: eventLoop)
                .connectTimeout(connectTimeout)
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.syncOptions?.setOption(.allowRemoteHalfClosure, value: true)
                        try BridgeConfiguration.setSessionOptions(
                            channel,
                            writeBufferWaterMark: writeBufferWaterMark,
                            readBufferSize: readBufferSize,
                            maxReadsPerCycle: maxReadsPerCycle,
                            tcpUserTimeoutMilliseconds: tcpUserTimeoutMilliseconds,
                            isTCP: { if case .tcp = request.address { true } else { false } }()
                        )
                        let sync = channel.pipeline.syncOperations
                        if let header = request.proxyHeader {
                            try sync.addHandler(ProxyHeaderWriter(header: header))
                        }
                        guard let tls = request.tls, let handshake, case .tcp(let host, _) = request.address else {
                            try sync.addHandler(BackendHandler())
                            return
                        }
                        guard let context = tls.context else {
                            throw BackendTLSHandshakeError(detail: "TLS context not loaded")
                        }
                        let verification = BackendTLSVerification()
                        try sync.addHandler(
                            Self.tlsClientHandler(
                                context: context,
                                serverHostname: tls.serverHostname(for: host),
                                verification: verification
                            )
                        )
                        // The BackendHandler (which holds reads) joins once the handshake is done: the handshake
                        // needs reads.
                        try sync.addHandler(BackendTLSHandshakeHandler(promise: handshake, verification: verification))
                    }
                }
            let connected: EventLoopFuture<Channel>
            switch request.address {
            case .tcp(let host, let port):
                // An address literal (most backends: 127.0.0.1:5900, 10.0.0.5:5900) is connected to directly; only a
                // name goes through the resolver and Happy Eyeballs, which cost more than the rest of the handshake.
                if let address = try? SocketAddress(ipAddress: host, port: port) {
                    connected = bootstrap.connect(to: address)
                } else {
                    connected = bootstrap.connect(host: host, port: port)
                }
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
    private let verification: BackendTLSVerification

    init(promise: EventLoopPromise<Void>, verification: BackendTLSVerification) {
        self.promise = promise
        self.verification = verification
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
            promise.fail(BackendTLSHandshakeError(error, verificationFailed: self.verification.failed))
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

private protocol TLSClientHandlerMaking {
    static func make(context: NIOSSLContext, serverHostname: String?, verification: BackendTLSVerification) throws
        -> NIOSSLClientHandler
}

private enum NotingVerification: TLSClientHandlerMaking {
    @available(*, deprecated)
    static func make(context: NIOSSLContext, serverHostname: String?, verification: BackendTLSVerification) throws
        -> NIOSSLClientHandler
    {
        try NIOSSLClientHandler(
            context: context,
            serverHostname: serverHostname,
            verificationCallback: { result, _ in verification.note(result) }
        )
    }
}
