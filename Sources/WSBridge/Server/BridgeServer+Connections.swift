import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL

/// A connection's way through the server: its pipeline at accept, the revocation registry from admission on, the
/// backend connect, and the session handlers installed at the 101.
extension BridgeServer {
    /// Refuses a connection over the handshake caps (the child channel is closed by the bootstrap).
    struct HandshakeCapReached: Error {}

    /// Sets up an accepted connection's pipeline (internal for in-memory tests): the PROXY decoder and the TLS
    /// detector where configured, then the handshake owner behind the HTTP encoder of its answers.
    func initializeConnection(_ channel: Channel) throws {
        let peerKey = self.configuration.proxyProtocol ? nil : Self.clientKey(channel.remoteAddress)
        guard let slot = self.handshakeLimiter.acquire(client: peerKey) else {
            self.metrics.rejected(.handshakeLimit)
            throw HandshakeCapReached()
        }
        do {
            try self.setUpConnection(channel, slot: slot)
        } catch {
            self.handshakeLimiter.release(slot)
            throw error
        }
    }

    private func setUpConnection(_ channel: Channel, slot: HandshakeLimiter.Slot) throws {
        self.clients.add(channel)
        let remote = channel.remoteAddress
        let isTCP: Bool
        switch remote {
        case .v4?, .v6?: isTCP = true
        case .unixDomainSocket?, nil: isTCP = false
        }
        try BridgeConfiguration.setSessionOptions(
            channel,
            writeBufferWaterMark: self.configuration.writeBufferWaterMark,
            readBufferSize: self.configuration.readBufferSize,
            maxReadsPerCycle: self.configuration.maxReadsPerCycle,
            tcpUserTimeoutMilliseconds: self.configuration.tcpUserTimeoutMilliseconds,
            isTCP: isTCP
        )
        if isTCP {
            // The backend leg has TCP_NODELAY from NIO's ClientBootstrap; an accepted socket is given it here.
            try? channel.syncOptions?.setOption(.tcpOption(.tcp_nodelay), value: 1)
        }
        var logger = self.logger
        logger[metadataKey: "client"] = "\(Self.describe(remote))"
        let metrics = self.metrics
        let sync = channel.pipeline.syncOperations
        if self.configuration.proxyProtocol {
            // Addresses in PROXY headers are only believed from the load balancers in --trusted-proxy; other peers
            // may only send LOCAL headers (the readiness probe does), which keep their own address.
            let trusted = self.configuration.trustedProxies
            let peerIP = channel.remoteAddress.flatMap { $0.ipAddress.map(Self.unmapped) }
            let peerTrusted = trusted.isEmpty || (peerIP.map(trusted.contains) ?? false)
            try sync.addHandler(
                ProxyProtocolDecoder(
                    onHeader: { header in
                        if !peerTrusted, header.addresses != .unknown {
                            logger.info("connection refused: PROXY protocol peer is not a trusted proxy")
                            metrics.rejected(.proxyProtocol)
                            return false
                        }
                        return true
                    },
                    onInvalid: { reason in
                        logger.info(
                            "connection refused: invalid PROXY protocol header",
                            metadata: ["reason": "\(reason)"]
                        )
                        metrics.rejected(.proxyProtocol)
                    }
                )
            )
        }
        if let tls = self.services.tls {
            try sync.addHandler(
                TLSDetector(
                    store: tls,
                    onRefused: {
                        logger.debug("plain connection refused: TLS only")
                        metrics.rejected(.tlsRequired)
                    },
                    allowPlain: { [readiness = self.readiness] buffer in readiness.isSelfCheck(buffer) }
                )
            )
        }
        let encoder = HTTPResponseEncoder()
        try sync.addHandler(encoder)
        try sync.addHandler(HandshakeHandler(server: self, encoder: encoder, slot: slot, logger: logger))
    }

    /// The `--web-auth` rules for static files, or nil when files are served to everyone.
    static func staticFilesAccess(
        _ configuration: BridgeConfiguration,
        authenticator: BasicAuthenticator?,
        policy: UpgradePolicy,
        targets: TargetsStore
    ) -> (@Sendable (HTTPRequestHead, EventLoop) -> EventLoopFuture<HTTPRejection?>)? {
        guard configuration.staticFilesUseAccessRules else { return nil }
        return { head, eventLoop in
            if let refusal = policy.checkOrigin(head, allowed: targets.current.origins) {
                return eventLoop.makeSucceededFuture(refusal)
            }
            guard let authenticator else { return eventLoop.makeSucceededFuture(nil) }
            return authenticator.check(head.headers, on: eventLoop).map { result in
                switch result {
                case .authenticated: return nil
                case .missing: return UpgradePolicy.unauthorized("authentication required")
                case .invalid: return UpgradePolicy.unauthorized("invalid credentials")
                case .busy: return UpgradePolicy.authenticationBusy
                }
            }
        }
    }

    /// Takes the session slots of an admitted connection (released when its channel closes) and counts it for the
    /// server's lifetime; an admission by token joins the revocation registry, so that from the decision on a reload
    /// that removes the token refuses this connection (404 before the 101, Close 1008 after). Returns the refusal
    /// when a session limit is reached.
    func admitSession(_ admission: UpgradePolicy.Admission, channel: Channel, client: String?) -> HTTPRejection? {
        switch self.limiter.acquire(client: client ?? "unknown", target: admission.target) {
        case .failure(let rejection):
            return rejection
        case .success(let lease):
            let limiter = self.limiter
            channel.closeFuture.whenComplete { _ in limiter.release(lease) }
        }
        self.sessionAdmitted(channel: channel)
        if let token = admission.token {
            let id = ObjectIdentifier(channel)
            let sessions = self.sessions
            let entry = (token, admission.target, channel, admission.resolvedByService)
            sessions.withLockedValue { $0[id] = entry }
            channel.closeFuture.whenComplete { _ in sessions.withLockedValue { _ = $0.removeValue(forKey: id) } }
        }
        return nil
    }

    /// Connects the backend of an admitted connection on its event loop; a failure is a value (reported to the
    /// page after the 101 as Close 1014).
    func connectBackend(
        _ target: Target,
        client: ClientEndpoint?,
        on eventLoop: EventLoop
    ) -> EventLoopFuture<Result<BackendHandler, BackendConnectError>> {
        let backends = self.backends
        let started = NIODeadline.now()
        let targetMetrics = self.metrics.target(target.metricLabel)
        let metrics = self.metrics
        let request = BackendRequest(
            address: target.backend,
            tls: target.tls,
            proxyHeader: target.proxyProtocol.map { version in
                ProxyHeader.forConnection(
                    version: version,
                    source: client?.ip.map { ($0, client?.port ?? 0) },
                    destination: client?.destinationIP.map { ($0, client?.destinationPort ?? 0) }
                ).encoded()
            }
        )
        return self.connector.connect(request, eventLoop)
            .map { handler -> Result<BackendHandler, BackendConnectError> in
                if let backendChannel = handler.channel { backends.add(backendChannel) }
                targetMetrics.connectLatency.recordNanoseconds((NIODeadline.now() - started).nanoseconds)
                return .success(handler)
            }
            .recover { error in
                let failure = BackendConnectError.classify(error)
                metrics.connectFailed(failure.kind)
                return .failure(failure)
            }
    }

    /// The frame decoder and session of an upgraded connection (the handshake owner installs them after its 101).
    func makeSession(
        channel: Channel,
        admission: UpgradePolicy.Admission,
        backend: Result<BackendHandler, BackendConnectError>?,
        compression: DeflateParameters? = nil,
        logger: Logger
    ) throws -> [ChannelHandler] {
        if let deadline = admission.target.sessionDeadline {
            let close = channel.eventLoop.scheduleTask(
                in: .nanoseconds(Int64(max(0, deadline.timeIntervalSinceNow) * 1e9))
            ) {
                channel.pipeline.fireUserInboundEventTriggered(BridgeRevocationEvent(reason: "token expired"))
            }
            channel.closeFuture.whenComplete { _ in close.cancel() }
        }
        let echoes = admission.target.backend == .echo
        let partner: Result<RelayPartner, BackendConnectError>
        if echoes {
            partner = .success(EchoPartner())
        } else {
            guard let backend else { throw ChannelError.inappropriateOperationForState }
            partner = backend.map { $0 as RelayPartner }
        }
        var logger = logger
        if let compression { logger[metadataKey: "compression"] = "\(compression.response)" }
        let session = SessionHandler(
            configuration: self.configuration,
            recording: self.services.recording,
            target: admission.target,
            partner: partner,
            logger: logger,
            metrics: self.metrics
        )
        // An echo mirrors frames, so its decoder reports their headers; the relay's does not need them. A compressed
        // session inflates at most one read cycle's worth of socket reads per cycle, as much as it could read plain.
        let frameDecoder = FrameDecoderHandler(
            maxFrameSize: self.configuration.maxFrameSize,
            maxMessageSize: self.configuration.maxMessageSize,
            reportsDataFrames: echoes,
            compression: compression,
            inflateBudget: self.configuration.readBufferSize * max(1, self.configuration.maxReadsPerCycle)
        )
        guard let compression else { return [frameDecoder, session] }
        return [DeflateFrameEncoder(parameters: compression), frameDecoder, session]
    }
}
