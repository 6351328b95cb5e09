import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import ServiceLifecycle

/// The WebSocket-to-TCP bridge as a `Service`: listens, admits upgrades with `UpgradePolicy`, connects backends
/// on the client's event loop and relays. On graceful shutdown it closes the listener, sends Close 1001 to every
/// session and waits for them up to `shutdownTimeout`.
public final class BridgeServer: Service, Sendable {
    public let configuration: BridgeConfiguration
    public let targets: TargetsStore
    private let group: EventLoopGroup
    private let logger: Logger
    let onServerRunning: (@Sendable (SocketAddress) -> Void)?
    let connector: BackendConnector
    /// Counters, gauges and histograms of this server.
    public let metrics: BridgeMetrics
    /// What `/readyz` checks.
    public let readiness: Readiness
    /// Session limits and handshake rate, shared by every event loop.
    public let limiter: AdmissionLimiter
    /// Caps on connections still in their handshake.
    let handshakeLimiter: HandshakeLimiter
    private let clients = ChannelRegistry()
    /// Live sessions with the token and target they were admitted with, for revocation on reload.
    private let sessions = NIOLockedValueBox<[ObjectIdentifier: (token: String, target: Target, channel: Channel, resolved: Bool)]>([:])
    private let backends = ChannelRegistry()
    /// Asked for tokens the targets table does not know (Redis, …); nil when tokens come from files only.
    public let resolver: (any TokenResolver)?
    /// Re-reads changed targets files for an unknown token; nil for a fixed table or when turned off.
    let rereader: TargetsRereader?
    /// When the server stops listening by itself (`BridgeConfiguration.lifetime`).
    private let lifetime: NIOLockedValueBox<ServerLifetime>
    private let listener = NIOLockedValueBox<Channel?>(nil)

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
                maxReadsPerCycle: configuration.maxReadsPerCycle,
                tcpUserTimeoutMilliseconds: configuration.tcpUserTimeoutMilliseconds
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
        self.handshakeLimiter = HandshakeLimiter(
            limits: .init(total: configuration.maxHandshakes, perClient: configuration.maxHandshakesPerClient)
        )
        self.connector = connector
        self.rereader = TargetsRereader(
            store: targets,
            interval: configuration.unknownTokenRereadInterval,
            logger: logger,
            metrics: metrics
        )
        self.lifetime = NIOLockedValueBox(ServerLifetime(policy: configuration.lifetime))
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
        self.listener.withLockedValue { $0 = channel }
        if self.configuration.lifetime.isEnabled {
            for action in self.lifetime.withLockedValue({ $0.started() }) { self.perform(action) }
        }
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
        if self.lifetime.withLockedValue({ $0.stopped }) != nil {
            await self.awaitLiveConnections()
        }
        await self.drain()
    }

    // MARK: lifetime (--timeout, --idle-timeout, --run-once)

    /// An admitted WebSocket session (not the readiness self-check) counts for the server's lifetime until it closes.
    func sessionAdmitted(channel: Channel) {
        guard self.configuration.lifetime.isEnabled else { return }
        self.lifetime.withLockedValue { $0.sessionOpened() }
        channel.closeFuture.whenComplete { _ in
            self.perform(self.lifetime.withLockedValue { $0.sessionClosed() })
        }
    }

    private func perform(_ action: ServerLifetime.Action) {
        switch action {
        case .none:
            return
        case .scheduleIdleCheck(let generation):
            guard let idle = self.configuration.lifetime.stopWhenIdleFor else { return }
            self.group.next().scheduleTask(in: idle) {
                self.perform(self.lifetime.withLockedValue { $0.idleTimerFired(generation: generation) })
            }
        case .scheduleTimeout(let after):
            self.group.next().scheduleTask(in: after) {
                self.perform(self.lifetime.withLockedValue { $0.timeoutFired() })
            }
        case .stop(let reason):
            self.readiness.draining()
            let logger = self.logger
            // websockify's own words, which launchers may wait for, once nothing is accepted any more.
            self.listener.withLockedValue { $0 }?.close().whenComplete { _ in
                logger.info("listener exit due to \(reason.rawValue)")
            }
        }
    }

    /// After the listener stopped by itself: the live connections end by themselves (websockify lets them finish),
    /// unless a graceful shutdown (SIGTERM) comes first, which drains them.
    private func awaitLiveConnections() async {
        let clients = self.clients.all
        guard !clients.isEmpty else { return }
        self.logger.info("waiting for the live connections to end", metadata: ["connections": "\(clients.count)"])
        let eventLoop = self.group.next()
        let done = eventLoop.makePromise(of: Void.self)
        let finished = NIOLockedValueBox(false)
        let finish: @Sendable () -> Void = {
            let first = finished.withLockedValue { already in
                defer { already = true }
                return !already
            }
            if first { done.succeed(()) }
        }
        EventLoopFuture.andAllComplete(clients.map(\.closeFuture), on: eventLoop).whenComplete { _ in finish() }
        await withGracefulShutdownHandler {
            try? await done.futureResult.get()
        } onGracefulShutdown: {
            finish()
        }
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
            if self.configuration.preferIPv6, let address = Self.ipv6Address(host: host, port: self.configuration.port) {
                return try await bootstrap.bind(to: address).get()
            }
            return try await bootstrap.bind(host: host, port: self.configuration.port).get()
        }
        do {
            // A dual-stack socket: `::` accepts IPv4 too (IPV6_V6ONLY is off by default on Linux).
            return try await bootstrap.bind(host: "::", port: self.configuration.port).get()
        } catch {
            return try await bootstrap.bind(host: "0.0.0.0", port: self.configuration.port).get()
        }
    }

    /// `host`'s first IPv6 address (`-6`), nil when it has none (the usual resolution applies then).
    static func ipv6Address(host: String, port: Int) -> SocketAddress? {
        var hints = addrinfo()
        hints.ai_family = AF_INET6
        hints.ai_socktype = CInt(SOCK_STREAM.rawValue)
        var result: UnsafeMutablePointer<addrinfo>?
        guard getaddrinfo(host, String(port), &hints, &result) == 0, let info = result else { return nil }
        defer { freeaddrinfo(result) }
        guard let address = info.pointee.ai_addr else { return nil }
        return address.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { SocketAddress($0.pointee, host: host) }
    }

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
        if channel.remoteAddress?.ipAddress != nil, let options = channel.syncOptions {
            // websockify's default keepalive, and a bound on unacknowledged data (dead peers, both legs).
            try? options.setOption(.socketOption(.so_keepalive), value: 1)
            try? options.setOption(BridgeConfiguration.tcpUserTimeoutOption, value: self.configuration.tcpUserTimeoutMilliseconds)
        }
        var logger = self.logger
        logger[metadataKey: "client"] = "\(Self.describe(channel.remoteAddress))"
        let metrics = self.metrics
        let policy = UpgradePolicy(
            requireOrigin: self.configuration.requireOrigin,
            tokenSources: self.configuration.tokenSources,
            clientCertNames: self.configuration.clientCertNames
        )
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
                        logger.info("connection refused: invalid PROXY protocol header", metadata: ["reason": "\(reason)"])
                        metrics.rejected(.proxyProtocol)
                    }
                )
            )
        }
        if let tls = self.configuration.tls {
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
        let endpoints = HTTPEndpoints(
            readiness: self.readiness,
            metrics: self.configuration.metricsOnMainPort ? self.metrics : nil,
            staticFiles: self.configuration.staticFiles,
            staticFilesAccess: self.staticFilesAccess(policy: policy),
            tokenSources: policy.tokenSources
        )
        let encoder = HTTPResponseEncoder()
        try sync.addHandler(encoder)
        try sync.addHandler(
            HandshakeHandler(server: self, policy: policy, endpoints: endpoints, encoder: encoder, slot: slot, logger: logger)
        )
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
                case .busy: return UpgradePolicy.authenticationBusy
                }
            }
        }
    }

    /// Adds an admitted connection to the revocation registry (from the admission decision on, before the 101).
    func registerSession(channel: Channel, token: String, target: Target, resolved: Bool) {
        let id = ObjectIdentifier(channel)
        let sessions = self.sessions
        sessions.withLockedValue { $0[id] = (token, target, channel, resolved) }
        channel.closeFuture.whenComplete { _ in sessions.withLockedValue { _ = $0.removeValue(forKey: id) } }
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
        logger: Logger
    ) throws -> [ChannelHandler] {
        if let deadline = admission.target.sessionDeadline {
            let close = channel.eventLoop.scheduleTask(in: .nanoseconds(Int64(max(0, deadline.timeIntervalSinceNow) * 1e9))) {
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
        let session = SessionHandler(
            configuration: self.configuration,
            target: admission.target,
            partner: partner,
            logger: logger,
            metrics: self.metrics
        )
        // An echo mirrors frames, so its decoder reports their headers; the relay's does not need them.
        let frameDecoder = FrameDecoderHandler(maxFrameSize: self.configuration.maxFrameSize, reportsDataFrames: echoes)
        return [frameDecoder, session]
    }

    /// An IP address as logged: IPv4-mapped IPv6 as IPv4.
    static func unmapped(_ ip: String) -> String { ClientEndpoint.unmapped(ip) }

    /// The client's address without its port, the key of per-client limits (IPv4-mapped IPv6 as IPv4).
    static func clientKey(_ address: SocketAddress?) -> String { ClientEndpoint.key(address) }

    /// `ip:port`, `[v6]:port` (IPv4-mapped IPv6 shown as IPv4), or a Unix path.
    static func describe(_ address: SocketAddress?) -> String { ClientEndpoint.describe(address) }
}
