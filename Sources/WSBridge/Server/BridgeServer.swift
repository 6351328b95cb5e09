import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
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
    private let clients = ChannelRegistry()
    private let backends = ChannelRegistry()

    /// - Parameter onServerRunning: called with the bound address once the server listens (the real port when
    ///   the configuration asked for port 0).
    public convenience init(
        configuration: BridgeConfiguration,
        targets: TargetsStore,
        group: EventLoopGroup,
        logger: Logger,
        onServerRunning: (@Sendable (SocketAddress) -> Void)? = nil
    ) {
        self.init(
            configuration: configuration,
            targets: targets,
            group: group,
            logger: logger,
            connector: .sockets(
                connectTimeout: configuration.connectTimeout,
                writeBufferWaterMark: configuration.writeBufferWaterMark,
                readBufferSize: configuration.readBufferSize,
                maxReadsPerCycle: configuration.maxReadsPerCycle
            ),
            onServerRunning: onServerRunning
        )
    }

    init(
        configuration: BridgeConfiguration,
        targets: TargetsStore,
        group: EventLoopGroup,
        logger: Logger,
        connector: BackendConnector,
        onServerRunning: (@Sendable (SocketAddress) -> Void)? = nil
    ) {
        self.configuration = configuration
        self.targets = targets
        self.group = group
        self.logger = logger
        self.connector = connector
        self.onServerRunning = onServerRunning
    }

    /// Number of open client connections (handshaking or in session).
    public var connectionCount: Int { self.clients.count }

    public func run() async throws {
        let channel = try await self.bind()
        guard let address = channel.localAddress else { throw ChannelError.inappropriateOperationForState }
        self.logger.info("listening on \(Self.describe(address))")
        self.onServerRunning?(address)
        await withTaskCancellationHandler {
            await withGracefulShutdownHandler {
                try? await channel.closeFuture.get()
            } onGracefulShutdown: {
                channel.close(promise: nil)
            }
        } onCancel: {
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
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelOption(.writeBufferWaterMark, value: self.configuration.writeBufferWaterMark)
            .childChannelOption(.maxMessagesPerRead, value: UInt(max(1, self.configuration.maxReadsPerCycle)))
            .childChannelOption(.recvAllocator, value: BridgeConfiguration.recvAllocator(maximum: self.configuration.readBufferSize))
            .childChannelInitializer { [self] channel in
                channel.eventLoop.makeCompletedFuture {
                    try self.initializeConnection(channel)
                }
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
        let guardHandler = ConnectionGuard(timeout: self.configuration.handshakeTimeout)
        let connection = ConnectionState(guardHandler: guardHandler, logger: logger)
        let policy = UpgradePolicy(requireOrigin: self.configuration.requireOrigin)
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
        try sync.addHandler(guardHandler)
        try sync.configureHTTPServerPipeline(
            withPipeliningAssistance: false,
            withServerUpgrade: (upgraders: [upgrader], completionHandler: { _ in }),
            withErrorHandling: false,
            withOutboundHeaderValidation: true,
            withEncoderConfiguration: .init(),
            withDecoderLimitConfiguration: limits
        )
        let fallback = HTTPFallbackHandler(connection: connection) { head in
            policy.decide(head, targets: targets.current)
        }
        connection.fallbackHandler = fallback
        try sync.addHandler(fallback)

        // A backend connected for an upgrade that never completed must not outlive its client.
        channel.closeFuture.whenComplete { _ in
            if !connection.sessionInstalled, case .success(let backend) = connection.backend {
                backend.channel?.close(promise: nil)
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
        switch policy.decide(head, targets: self.targets.current) {
        case .reject(let rejection):
            connection.rejection = rejection
            return channel.eventLoop.makeSucceededFuture(nil)
        case .accept(let admission):
            connection.admission = admission
            connection.logger[metadataKey: "target"] = "\(admission.target.name)"
            var headers = HTTPHeaders()
            if let subprotocol = admission.subprotocol {
                headers.add(name: "Sec-WebSocket-Protocol", value: subprotocol)
            }
            let backends = self.backends
            return self.connector.connect(admission.target.backend, channel.eventLoop)
                .map { handler -> Result<BackendHandler, BackendConnectError> in
                    if let backendChannel = handler.channel { backends.add(backendChannel) }
                    return .success(handler)
                }
                .recover { .failure(BackendConnectError.classify($0)) }
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
            guard let admission = connection.admission, let backend = connection.backend else {
                throw ChannelError.inappropriateOperationForState
            }
            let sync = channel.pipeline.syncOperations
            let nioDecoder = try sync.handler(type: ByteToMessageHandler<WebSocketFrameDecoder>.self)
            sync.removeHandler(nioDecoder, promise: nil)
            sync.removeHandler(connection.guardHandler, promise: nil)
            if let fallback = connection.fallbackHandler {
                sync.removeHandler(fallback, promise: nil)
                connection.fallbackHandler = nil
            }
            try sync.addHandler(FrameDecoderHandler(maxFrameSize: self.configuration.maxFrameSize))
            try sync.addHandler(
                SessionHandler(
                    configuration: self.configuration,
                    target: admission.target,
                    backend: backend,
                    logger: connection.logger
                )
            )
            connection.sessionInstalled = true
        }
    }

    /// `ip:port`, `[v6]:port` (IPv4-mapped IPv6 shown as IPv4), or a Unix path.
    static func describe(_ address: SocketAddress?) -> String {
        guard let address else { return "unknown" }
        guard let ip = address.ipAddress, let port = address.port else { return address.pathname ?? "\(address)" }
        if ip.hasPrefix("::ffff:"), ip.contains(".") { return "\(ip.dropFirst(7)):\(port)" }
        return ip.contains(":") ? "[\(ip)]:\(port)" : "\(ip):\(port)"
    }
}
