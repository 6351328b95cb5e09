import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import NIOWebSocket
import ServiceLifecycle

/// The WebSocket-to-TCP bridge as a `Service`: listens, admits upgrades with `UpgradePolicy`, connects backends
/// on the client's event loop and relays. On graceful shutdown it closes the listener, sends Close 1001 to every
/// session and waits for them up to `shutdownTimeout`.
public final class BridgeServer: Service, Sendable {
    public let configuration: BridgeConfiguration
    public let targets: TargetsStore
    private let group: EventLoopGroup
    private let logger: Logger
    private let onServerRunning: (@Sendable (SocketAddress) -> Void)?
    private let connector: BackendConnector
    /// Counters, gauges and histograms of this server.
    public let metrics: BridgeMetrics
    /// What `/readyz` checks.
    public let readiness: Readiness
    /// Session limits and handshake rate, shared by every event loop.
    public let limiter: AdmissionLimiter
    private let clients = ChannelRegistry()
    /// Live sessions with the token and target they were admitted with, for revocation on reload.
    private let sessions = NIOLockedValueBox<[ObjectIdentifier: (token: String, target: Target, channel: Channel, resolved: Bool)]>([:])
    private let backends = ChannelRegistry()
    /// Asked for tokens the targets table does not know (Redis, …); nil when tokens come from files only.
    public let resolver: (any TokenResolver)?

    /// - Parameter onServerRunning: called with the bound address once the server listens (the real port when
    ///   the configuration asked for port 0).
    public convenience init(
        configuration: BridgeConfiguration,
        targets: TargetsStore,
        group: EventLoopGroup,
        logger: Logger,
        metrics: BridgeMetrics = BridgeMetrics(),
        readiness: Readiness = Readiness(),
        resolver: (any TokenResolver)? = nil,
        onServerRunning: (@Sendable (SocketAddress) -> Void)? = nil
    ) {
        self.init(
            configuration: configuration,
            targets: targets,
            group: group,
            logger: logger,
            metrics: metrics,
            readiness: readiness,
            connector: .sockets(
                connectTimeout: configuration.connectTimeout,
                writeBufferWaterMark: configuration.writeBufferWaterMark,
                readBufferSize: configuration.readBufferSize,
                maxReadsPerCycle: configuration.maxReadsPerCycle
            ),
            resolver: resolver,
            onServerRunning: onServerRunning
        )
    }

    init(
        configuration: BridgeConfiguration,
        targets: TargetsStore,
        group: EventLoopGroup,
        logger: Logger,
        metrics: BridgeMetrics = BridgeMetrics(),
        readiness: Readiness = Readiness(),
        connector: BackendConnector,
        resolver: (any TokenResolver)? = nil,
        onServerRunning: (@Sendable (SocketAddress) -> Void)? = nil
    ) {
        self.resolver = resolver
        self.configuration = configuration
        self.targets = targets
        self.group = group
        self.logger = logger
        self.metrics = metrics
        self.readiness = readiness
        self.limiter = AdmissionLimiter(limits: configuration.limits)
        self.connector = connector
        if configuration.proxyProtocol { readiness.expectProxyHeader() }
        self.onServerRunning = onServerRunning
        targets.onReload { [weak self] table in self?.revokeSessions(against: table) }
    }

    /// Closes (1008) the live sessions whose token is gone or now leads to another backend, unless their target
    /// says `on_revoke: keep`.
    func revokeSessions(against table: TargetTable) {
        guard case .tokens(let map) = table.mode else { return }
        let live = self.sessions.withLockedValue { Array($0.values) }
        var revoked = 0
        for session in live where !session.target.keepOnRevoke && !session.resolved {
            let reason: String
            if let now = map[session.token] {
                guard now.backend != session.target.backend else { continue }
                reason = "target changed"
            } else {
                reason = "token revoked"
            }
            revoked += 1
            session.channel.pipeline.fireUserInboundEventTriggered(BridgeRevocationEvent(reason: reason))
        }
        if revoked > 0 {
            self.logger.info("closing sessions whose target was removed or changed", metadata: ["sessions": "\(revoked)"])
        }
    }

    /// Closes (1008 `token revoked`) the live sessions admitted with `token`, unless their target says
    /// `on_revoke: keep` (a revocation published by a token service). Returns how many were closed.
    @discardableResult
    public func revokeSessions(token: String, reason: String = "token revoked") -> Int {
        let live = self.sessions.withLockedValue { $0.values.filter { $0.token == token && !$0.target.keepOnRevoke } }
        for session in live {
            session.channel.pipeline.fireUserInboundEventTriggered(BridgeRevocationEvent(reason: reason))
        }
        if !live.isEmpty {
            self.logger.info(
                "closing sessions of a revoked token",
                metadata: ["sessions": "\(live.count)", "target": "\(Target.redact(token))"]
            )
        }
        return live.count
    }

    /// Number of open client connections (handshaking or in session).
    public var connectionCount: Int { self.clients.count }

    public func run() async throws {
        let channel = try await self.bind()
        guard let address = channel.localAddress else { throw ChannelError.inappropriateOperationForState }
        self.logger.info("listening on \(Self.describe(address))")
        self.readiness.listening(on: address)
        self.onServerRunning?(address)
        await withTaskCancellationHandler {
            await withGracefulShutdownHandler {
                try? await channel.closeFuture.get()
            } onGracefulShutdown: {
                self.readiness.draining()
                channel.close(promise: nil)
            }
        } onCancel: {
            self.readiness.draining()
            channel.close(promise: nil)
        }
        await self.drain()
    }

    /// Sends Close 1001 to every session and waits until every connection, client and backend, is closed, or
    /// until `shutdownTimeout`, after which the rest are closed.
    private func drain() async {
        let clients = self.clients.all
        guard !clients.isEmpty || self.backends.count > 0 else {
            self.logger.info("stopped")
            return
        }
        self.logger.info("shutting down", metadata: ["connections": "\(clients.count)"])
        for client in clients {
            client.pipeline.fireUserInboundEventTriggered(BridgeShutdownEvent())
        }
        let eventLoop = self.group.next()
        let deadline = eventLoop.scheduleTask(in: self.configuration.shutdownTimeout) {
            for channel in self.clients.all + self.backends.all {
                channel.close(promise: nil)
            }
        }
        try? await EventLoopFuture.andAllComplete(clients.map(\.closeFuture), on: eventLoop).get()
        // Backends finish their closing steps (bounded by closeTimeout) once their clients are gone.
        try? await EventLoopFuture.andAllComplete(self.backends.all.map(\.closeFuture), on: eventLoop).get()
        deadline.cancel()
        self.logger.info("stopped")
    }

    private func bind() async throws -> Channel {
        let bootstrap = ServerBootstrap(group: self.group)
            .serverChannelOption(.backlog, value: self.configuration.backlog)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.tcpOption(.tcp_nodelay), value: 1)
            .childChannelOption(.writeBufferWaterMark, value: self.configuration.writeBufferWaterMark)
            .childChannelOption(.maxMessagesPerRead, value: UInt(max(1, self.configuration.maxReadsPerCycle)))
            .childChannelOption(.recvAllocator, value: BridgeConfiguration.recvAllocator(maximum: self.configuration.readBufferSize))
            .childChannelInitializer { [self] channel in
                channel.eventLoop.makeCompletedFuture {
                    try self.initializeConnection(channel)
                }
            }
        if let descriptor = self.configuration.inheritedListener {
            return try await bootstrap.withBoundSocket(descriptor: descriptor).get()
        }
        if let path = self.configuration.unixListenPath {
            let channel = try await bootstrap.bind(unixDomainSocketPath: path, cleanupExistingSocketFile: true).get()
            guard chmod(path, self.configuration.unixListenMode) == 0 else {
                channel.close(promise: nil)
                throw IOError(errnoCode: errno, reason: "chmod \(path)")
            }
            return channel
        }
        if let host = self.configuration.host {
            return try await bootstrap.bind(host: host, port: self.configuration.port).get()
        }
        do {
            // A dual-stack socket: `::` accepts IPv4 too (IPV6_V6ONLY is off by default on Linux).
            return try await bootstrap.bind(host: "::", port: self.configuration.port).get()
        } catch {
            return try await bootstrap.bind(host: "0.0.0.0", port: self.configuration.port).get()
        }
    }

    /// Sets up an accepted connection's pipeline (internal for in-memory tests).
    func initializeConnection(_ channel: Channel) throws {
        self.clients.add(channel)
        var logger = self.logger
        logger[metadataKey: "client"] = "\(Self.describe(channel.remoteAddress))"
        let metrics = self.metrics
        let guardHandler = ConnectionGuard(timeout: self.configuration.handshakeTimeout) {
            metrics.rejected(.timeout)
        }
        let connection = ConnectionState(guardHandler: guardHandler, logger: logger)
        connection.clientIP = channel.remoteAddress.flatMap { $0.ipAddress.map(Self.unmapped) }
        connection.clientPort = channel.remoteAddress?.port ?? 0
        connection.destinationIP = channel.localAddress.flatMap { $0.ipAddress.map(Self.unmapped) }
        connection.destinationPort = channel.localAddress?.port ?? 0
        connection.clientKey = Self.clientKey(channel.remoteAddress)
        let policy = UpgradePolicy(
            requireOrigin: self.configuration.requireOrigin,
            tokenSources: self.configuration.tokenSources,
            clientCertNames: self.configuration.clientCertNames
        )
        let targets = self.targets

        let upgrader = NIOWebSocketServerUpgrader(
            maxFrameSize: 1 << 14,  // unused: our streaming decoder replaces NIO's
            automaticErrorHandling: false,
            shouldUpgrade: { [self] channel, head in
                self.shouldUpgrade(channel: channel, head: head, connection: connection, policy: policy)
            },
            upgradePipelineHandler: { [self] channel, _ in
                self.installSession(channel: channel, connection: connection)
            }
        )

        var limits = NIOHTTPDecoderLimitConfiguration()
        limits.maxHeaderListSize = self.configuration.maxRequestHeadBytes
        limits.maxHeaderFieldSize = self.configuration.maxRequestHeadBytes
        limits.maxHeaderFieldCount = 256

        let sync = channel.pipeline.syncOperations
        if self.configuration.proxyProtocol {
            // Addresses in PROXY headers are only believed from the load balancers in --trusted-proxy; other peers
            // may only send LOCAL headers (the readiness probe does), which keep their own address.
            let trusted = self.configuration.trustedProxies
            let peerTrusted = trusted.isEmpty || (connection.clientIP.map(trusted.contains) ?? false)
            try sync.addHandler(
                ProxyProtocolDecoder(
                    onHeader: { header in
                        if !peerTrusted, header.addresses != .unknown {
                            connection.logger.info("connection refused: PROXY protocol peer is not a trusted proxy")
                            metrics.rejected(.proxyProtocol)
                            return false
                        }
                        switch header.addresses {
                        case .tcp4(let source, let sourcePort, let destination, let destinationPort),
                            .tcp6(let source, let sourcePort, let destination, let destinationPort):
                            connection.setProxied(
                                source: source, sourcePort: Int(sourcePort), destination: destination,
                                destinationPort: Int(destinationPort)
                            )
                        case .unknown:
                            break  // LOCAL or UNKNOWN: the peer's own address stands
                        }
                        return true
                    },
                    onInvalid: { reason in
                        connection.logger.info("connection refused: invalid PROXY protocol header", metadata: ["reason": "\(reason)"])
                        metrics.rejected(.proxyProtocol)
                    }
                )
            )
        }
        if let tls = self.configuration.tls {
            try sync.addHandler(
                TLSDetector(
                    store: tls,
                    onDecision: { isTLS in connection.tls = isTLS },
                    onRefused: {
                        connection.logger.debug("plain connection refused: TLS only")
                        metrics.rejected(.tlsRequired)
                    },
                    allowPlain: { [readiness = self.readiness] buffer in readiness.isSelfCheck(buffer) }
                )
            )
        }
        try sync.addHandler(guardHandler)
        try sync.configureHTTPServerPipeline(
            withPipeliningAssistance: false,
            withServerUpgrade: (upgraders: [upgrader], completionHandler: { _ in }),
            withErrorHandling: false,
            withOutboundHeaderValidation: true,
            withEncoderConfiguration: .init(),
            withDecoderLimitConfiguration: limits
        )
        let endpoints = HTTPEndpoints(
            readiness: self.readiness,
            metrics: self.configuration.metricsOnMainPort ? self.metrics : nil,
            staticFiles: self.configuration.staticFiles,
            staticFilesAccess: self.staticFilesAccess(policy: policy),
            tokenSources: policy.tokenSources
        )
        let limiter = self.limiter
        let fallback = HTTPFallbackHandler(connection: connection, endpoints: endpoints, metrics: metrics) { head in
            // An upgrade request that NIO refused before `shouldUpgrade` (bad version or key) still counts
            // against the client's handshake rate.
            if !connection.rateCharged, !head.headers["upgrade"].isEmpty {
                connection.rateCharged = true
                if let rejection = limiter.takeHandshake(client: connection.clientKey) {
                    return .reject(rejection)
                }
            }
            return policy.decide(head, targets: targets.current, client: connection.clientKey, identity: connection.identity)
        }
        connection.fallbackHandler = fallback
        try sync.addHandler(fallback)

        // A backend connected for an upgrade that never completed must not outlive its client.
        channel.closeFuture.whenComplete { _ in
            if !connection.sessionInstalled, case .success(let backend) = connection.backend {
                backend.channel?.close(promise: nil)
            }
            // The fallback handler and the connection state refer to each other; a session breaks the cycle when
            // it is installed, a refused request here (it leaked about 5 KiB per refused connection).
            connection.fallbackHandler = nil
        }
    }

    /// The `--web-auth` rules for static files, or nil when files are served to everyone.
    private func staticFilesAccess(
        policy: UpgradePolicy
    ) -> (@Sendable (HTTPRequestHead, EventLoop) -> EventLoopFuture<HTTPRejection?>)? {
        guard self.configuration.staticFilesUseAccessRules else { return nil }
        let targets = self.targets
        let authenticator = self.configuration.authenticator
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
                }
            }
        }
    }

    private func shouldUpgrade(
        channel: Channel,
        head: HTTPRequestHead,
        connection: ConnectionState,
        policy: UpgradePolicy
    ) -> EventLoopFuture<HTTPHeaders?> {
        connection.guardHandler.requestHeadReceived()
        if head.uri == Readiness.selfCheckPath,
            head.headers.first(name: Readiness.selfCheckHeader) == self.readiness.secret
        {
            connection.selfCheck = true
            return channel.eventLoop.makeSucceededFuture(HTTPHeaders())
        }
        self.identifyClient(head: head, connection: connection)
        connection.rateCharged = true
        if let rejection = self.limiter.takeHandshake(client: connection.clientKey) {
            connection.rejection = rejection
            return channel.eventLoop.makeSucceededFuture(nil)
        }
        if connection.tls, let handler = try? channel.pipeline.syncOperations.handler(type: NIOSSLServerHandler.self),
            let certificate = handler.peerCertificate
        {
            connection.identity.certificateNames = CertificateNames.identities(of: certificate)
            connection.logger[metadataKey: "client_cert"] = "\(CertificateNames.commonName(of: certificate) ?? connection.identity.certificateNames?.first ?? "?")"
        }
        guard let authenticator = self.configuration.authenticator else {
            return self.admit(channel: channel, head: head, connection: connection, policy: policy)
        }
        return authenticator.check(head.headers, on: channel.eventLoop).flatMap { result in
            connection.identity.authentication = result
            if case .authenticated(let user) = result { connection.logger[metadataKey: "user"] = "\(user)" }
            return self.admit(channel: channel, head: head, connection: connection, policy: policy)
        }
    }

    /// The client's address for logs, limits and PROXY headers: a trusted proxy's `Forwarded`/`X-Forwarded-For`
    /// replaces the peer's.
    private func identifyClient(head: HTTPRequestHead, connection: ConnectionState) {
        let trusted = self.configuration.trustedProxies
        guard !trusted.isEmpty, let peer = connection.clientIP else { return }
        let client = trusted.clientAddress(peer: peer, headers: head.headers)
        guard client != peer else { return }
        connection.logger[metadataKey: "peer"] = connection.logger[metadataKey: "client"]
        connection.logger[metadataKey: "client"] = "\(client)"
        connection.clientIP = client
        connection.clientPort = 0
        connection.clientKey = client
    }

    private func admit(
        channel: Channel,
        head: HTTPRequestHead,
        connection: ConnectionState,
        policy: UpgradePolicy
    ) -> EventLoopFuture<HTTPHeaders?> {
        let table = self.targets.current
        let client = connection.clientKey
        let decision = policy.decide(head, targets: table, client: client, identity: connection.identity)
        if let resolver = self.resolver, case .reject(let rejection) = decision, rejection.kind == .unknownToken,
            let token = policy.token(in: head)
        {
            // Not in the loaded table: ask the token service, without blocking the event loop.
            return resolver.resolve(token, on: channel.eventLoop).flatMap { resolution in
                switch resolution {
                case .found(let target):
                    connection.resolvedByService = true
                    let resolved = TargetTable(mode: .tokens([token: target]), origins: table.origins)
                    return self.admit(
                        policy.decide(head, targets: resolved, client: client, identity: connection.identity),
                        channel: channel,
                        client: client,
                        connection: connection
                    )
                case .notFound:
                    connection.rejection = rejection
                case .invalid(let reason):
                    connection.rejection = HTTPRejection(.invalidToken, .forbidden, reason)
                case .unavailable(let reason):
                    connection.rejection = HTTPRejection(
                        .tokenService,
                        .serviceUnavailable,
                        reason,
                        headers: [("Retry-After", "5")]
                    )
                }
                return channel.eventLoop.makeSucceededFuture(nil)
            }
        }
        return self.admit(decision, channel: channel, client: client, connection: connection)
    }

    /// Applies the session limits to an admission decision, then connects the backend.
    private func admit(
        _ decision: UpgradePolicy.Decision,
        channel: Channel,
        client: String,
        connection: ConnectionState
    ) -> EventLoopFuture<HTTPHeaders?> {
        switch decision {
        case .reject(let rejection):
            connection.rejection = rejection
            return channel.eventLoop.makeSucceededFuture(nil)
        case .accept(let admission):
            switch self.limiter.acquire(client: connection.clientKey, target: admission.target) {
            case .failure(let rejection):
                connection.rejection = rejection
                return channel.eventLoop.makeSucceededFuture(nil)
            case .success(let lease):
                let limiter = self.limiter
                channel.closeFuture.whenComplete { _ in limiter.release(lease) }
            }
            connection.admission = admission
            connection.logger[metadataKey: "target"] = "\(admission.target.name)"
            var headers = HTTPHeaders()
            if let subprotocol = admission.subprotocol {
                headers.add(name: "Sec-WebSocket-Protocol", value: subprotocol)
            }
            if admission.target.backend == .echo {
                // An echo target has no backend to connect: the session mirrors the client (SessionHandler).
                return channel.eventLoop.makeSucceededFuture(headers)
            }
            let backends = self.backends
            let started = NIODeadline.now()
            let targetMetrics = self.metrics.target(admission.target.metricLabel)
            let metrics = self.metrics
            let target = admission.target
            let request = BackendRequest(
                address: target.backend,
                tls: target.tls,
                proxyHeader: target.proxyProtocol.map { version in
                    ProxyHeader.forConnection(
                        version: version,
                        source: connection.clientIP.map { ($0, connection.clientPort) },
                        destination: connection.destinationIP.map { ($0, connection.destinationPort) }
                    ).encoded()
                }
            )
            return self.connector.connect(request, channel.eventLoop)
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
                .map { result -> HTTPHeaders? in
                    connection.backend = result
                    if !channel.isActive, case .success(let handler) = result {
                        handler.channel?.close(promise: nil)
                    }
                    return headers
                }
        }
    }

    private func installSession(channel: Channel, connection: ConnectionState) -> EventLoopFuture<Void> {
        channel.eventLoop.makeCompletedFuture {
            let sync = channel.pipeline.syncOperations
            let nioDecoder = try sync.handler(type: ByteToMessageHandler<WebSocketFrameDecoder>.self)
            sync.removeHandler(nioDecoder, promise: nil)
            sync.removeHandler(connection.guardHandler, promise: nil)
            if let fallback = connection.fallbackHandler {
                sync.removeHandler(fallback, promise: nil)
                connection.fallbackHandler = nil
            }
            if connection.selfCheck {
                // The readiness probe got its 101: say goodbye without a backend or a session log line.
                try sync.addHandler(SelfCheckHandler())
                return
            }
            guard let admission = connection.admission else { throw ChannelError.inappropriateOperationForState }
            if let token = admission.token {
                let id = ObjectIdentifier(channel)
                let sessions = self.sessions
                let resolved = connection.resolvedByService
                sessions.withLockedValue { $0[id] = (token, admission.target, channel, resolved) }
                channel.closeFuture.whenComplete { _ in sessions.withLockedValue { _ = $0.removeValue(forKey: id) } }
            }
            if let deadline = admission.target.sessionDeadline {
                let close = channel.eventLoop.scheduleTask(in: .nanoseconds(Int64(max(0, deadline.timeIntervalSinceNow) * 1e9))) {
                    channel.pipeline.fireUserInboundEventTriggered(BridgeRevocationEvent(reason: "token expired"))
                }
                channel.closeFuture.whenComplete { _ in close.cancel() }
            }
            let echoes = admission.target.backend == .echo
            let session: SessionHandler
            if echoes {
                session = SessionHandler(
                    echoing: admission.target,
                    configuration: self.configuration,
                    logger: connection.logger,
                    metrics: self.metrics
                )
            } else {
                guard let backend = connection.backend else { throw ChannelError.inappropriateOperationForState }
                session = SessionHandler(
                    configuration: self.configuration,
                    target: admission.target,
                    backend: backend,
                    logger: connection.logger,
                    metrics: self.metrics
                )
            }
            // An echo mirrors frames, so its decoder reports their headers; the relay's does not need them.
            let frameDecoder = FrameDecoderHandler(
                maxFrameSize: self.configuration.maxFrameSize,
                reportsDataFrames: echoes
            )
            // Both go in front of NIO's frame decoder, not behind it. NIO's decoder (a ByteToMessageHandler) leaves
            // the pipeline only on a later event loop turn, and bytes that came with or right after the request are
            // replayed by the upgrade handlers before that: behind it, they were decoded by NIO into WebSocketFrames,
            // which our decoder cannot take (the process crashed; found by the FuzzUpgradePolicy harness). In front,
            // our decoder gets them as bytes, and NIO's sees nothing, since the session never passes reads on.
            try sync.addHandler(frameDecoder, position: .before(nioDecoder))
            try sync.addHandler(session, position: .after(frameDecoder))
            connection.sessionInstalled = true
        }
    }

    /// An IP address as logged: IPv4-mapped IPv6 as IPv4.
    static func unmapped(_ ip: String) -> String {
        if ip.hasPrefix("::ffff:"), ip.contains(".") { return String(ip.dropFirst(7)) }
        return ip
    }

    /// The client's address without its port, the key of per-client limits (IPv4-mapped IPv6 as IPv4).
    static func clientKey(_ address: SocketAddress?) -> String {
        guard let ip = address?.ipAddress else { return address?.pathname ?? "unknown" }
        if ip.hasPrefix("::ffff:"), ip.contains(".") { return String(ip.dropFirst(7)) }
        return ip
    }

    /// `ip:port`, `[v6]:port` (IPv4-mapped IPv6 shown as IPv4), or a Unix path.
    static func describe(_ address: SocketAddress?) -> String {
        guard let address else { return "unknown" }
        guard let ip = address.ipAddress, let port = address.port else {
            let path = address.pathname ?? ""
            return path.isEmpty ? "unix" : "unix:\(path)"
        }
        if ip.hasPrefix("::ffff:"), ip.contains(".") { return "\(ip.dropFirst(7)):\(port)" }
        return ip.contains(":") ? "[\(ip)]:\(port)" : "\(ip):\(port)"
    }
}
