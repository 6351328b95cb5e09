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
    /// The live objects a server works with besides its settings, built by `BridgeApplication` from a
    /// `Configuration` (or by a test) and shared with the watchers that reload them.
    public struct Services: Sendable {
        /// Counters, gauges and histograms of this server.
        public var metrics: BridgeMetrics
        /// What `/readyz` checks.
        public var readiness: Readiness
        /// Terminate TLS (`--cert`): TLS and plain connections are told apart by their first byte.
        public var tls: ServerTLSStore?
        /// HTTP Basic authentication for upgrades (and static files with `--web-auth`); nil requires none.
        public var authenticator: BasicAuthenticator?
        /// Record every session in websockify's format (`--record PREFIX`); nil records nothing.
        public var recording: RecordingPolicy?
        /// Asked for tokens the targets table does not know (Redis, …); nil when tokens come from files only.
        public var resolver: (any TokenResolver)?

        public init(
            metrics: BridgeMetrics = BridgeMetrics(),
            readiness: Readiness = Readiness(),
            tls: ServerTLSStore? = nil,
            authenticator: BasicAuthenticator? = nil,
            recording: RecordingPolicy? = nil,
            resolver: (any TokenResolver)? = nil
        ) {
            self.metrics = metrics
            self.readiness = readiness
            self.tls = tls
            self.authenticator = authenticator
            self.recording = recording
            self.resolver = resolver
        }
    }

    public let configuration: BridgeConfiguration
    public let services: Services
    public let targets: TargetsStore
    private let group: EventLoopGroup
    let logger: Logger
    let onServerRunning: (@Sendable (SocketAddress) -> Void)?
    let connector: BackendConnector
    public var metrics: BridgeMetrics { self.services.metrics }
    public var readiness: Readiness { self.services.readiness }
    /// Session limits and handshake rate, shared by every event loop.
    public let limiter: AdmissionLimiter
    /// Caps on connections still in their handshake.
    let handshakeLimiter: HandshakeLimiter
    let clients = ChannelRegistry()
    /// Live sessions with the token and target they were admitted with, for revocation on reload.
    let sessions = NIOLockedValueBox<
        [ObjectIdentifier: (token: String, target: Target, channel: Channel, resolved: Bool)]
    >([:])
    let backends = ChannelRegistry()
    /// Who may have which target (authentication, the policy, re-reads of the files, the token service).
    let admission: HandshakeAdmission
    /// Plain HTTP requests on the main port: health, metrics, static files.
    let endpoints: HTTPEndpoints
    /// When the server stops listening by itself (`BridgeConfiguration.lifetime`).
    private let lifetime: NIOLockedValueBox<ServerLifetime>
    private let listener = NIOLockedValueBox<Channel?>(nil)

    /// - Parameter onServerRunning: called with the bound address once the server listens (the real port when
    ///   the configuration asked for port 0).
    public convenience init(
        configuration: BridgeConfiguration,
        services: Services = .init(),
        targets: TargetsStore,
        group: EventLoopGroup,
        logger: Logger,
        onServerRunning: (@Sendable (SocketAddress) -> Void)? = nil
    ) {
        let connector = BackendConnector.sockets(
            connectTimeout: configuration.connectTimeout,
            writeBufferWaterMark: configuration.writeBufferWaterMark,
            readBufferSize: configuration.readBufferSize,
            maxReadsPerCycle: configuration.maxReadsPerCycle,
            tcpUserTimeoutMilliseconds: configuration.tcpUserTimeoutMilliseconds
        )
        self.init(
            configuration: configuration,
            services: services,
            targets: targets,
            group: group,
            logger: logger,
            connector: connector,
            onServerRunning: onServerRunning
        )
    }

    /// With `connector` in place of real backend sockets (tests).
    init(
        configuration: BridgeConfiguration,
        services: Services = .init(),
        targets: TargetsStore,
        group: EventLoopGroup,
        logger: Logger,
        connector: BackendConnector,
        onServerRunning: (@Sendable (SocketAddress) -> Void)? = nil
    ) {
        let metrics = services.metrics
        let readiness = services.readiness
        self.configuration = configuration
        self.services = services
        self.targets = targets
        self.group = group
        self.logger = logger
        self.limiter = AdmissionLimiter(limits: configuration.limits)
        self.handshakeLimiter = HandshakeLimiter(
            limits: .init(total: configuration.maxHandshakes, perClient: configuration.maxHandshakesPerClient)
        )
        self.connector = connector
        let policy = UpgradePolicy(
            requireOrigin: configuration.requireOrigin,
            tokenSources: configuration.tokenSources,
            clientCertNames: configuration.clientCertNames
        )
        self.admission = HandshakeAdmission(
            policy: policy,
            targets: targets,
            authenticator: services.authenticator,
            rereader: TargetsRereader(
                store: targets,
                interval: configuration.unknownTokenRereadInterval,
                logger: logger,
                metrics: metrics
            ),
            resolver: services.resolver
        )
        self.endpoints = HTTPEndpoints(
            readiness: readiness,
            metrics: configuration.metricsOnMainPort ? metrics : nil,
            staticFiles: configuration.staticFiles,
            staticFilesAccess: Self.staticFilesAccess(
                configuration,
                authenticator: services.authenticator,
                policy: policy,
                targets: targets
            ),
            tokenSources: policy.tokenSources
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
            self.logger.info(
                "closing sessions whose target was removed or changed",
                metadata: ["sessions": "\(revoked)"]
            )
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
            // The child sockets' options are set in `initializeConnection`, synchronously.
            .childChannelInitializer { [self] channel in
                channel.eventLoop.makeCompletedFuture {
                    try self.initializeConnection(channel)
                }
            }
        if let descriptor = self.configuration.inheritedListener {
            return try await bootstrap.withBoundSocket(descriptor).get()
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
            if self.configuration.preferIPv6, let address = Self.ipv6Address(host: host, port: self.configuration.port)
            {
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

    /// An IP address as logged: IPv4-mapped IPv6 as IPv4.
    static func unmapped(_ ip: String) -> String { ClientEndpoint.unmapped(ip) }

    /// The client's address without its port, the key of per-client limits (IPv4-mapped IPv6 as IPv4).
    static func clientKey(_ address: SocketAddress?) -> String { ClientEndpoint.key(address) }

    /// `ip:port`, `[v6]:port` (IPv4-mapped IPv6 shown as IPv4), or a Unix path.
    static func describe(_ address: SocketAddress?) -> String { ClientEndpoint.describe(address) }
}
