import Foundation
import Logging
import NIOCore
import NIOPosix
import ServiceLifecycle

/// The composition root: turns a `Configuration` into the running services (the bridge server, the metrics
/// listener, the token service, the watchers of targets, certificates, credentials and the log file, a wrapped
/// program) and runs them in one `ServiceGroup` until SIGTERM/SIGINT or the server's own lifetime ends it. The
/// executable, tests and fuzzers all build the bridge this way.
public struct BridgeApplication: Sendable {
    /// Why the application could not start: a file that cannot be used, with the file's own message
    /// (`FILE:LINE: reason` for targets files).
    public struct StartupError: Error, CustomStringConvertible {
        private enum Code { case targets, tls, authentication, staticFiles, tokenService, pidFile, wrap }
        private let code: Code
        public let description: String

        private init(_ code: Code, _ error: any Error) {
            self.code = code
            self.description = "\(error)"
        }

        private init(_ code: Code, message: String) {
            self.code = code
            self.description = message
        }

        static func targets(_ error: any Error) -> Self { .init(.targets, error) }
        static func tls(_ error: any Error) -> Self { .init(.tls, error) }
        static func authentication(_ error: any Error) -> Self { .init(.authentication, error) }
        static func staticFiles(_ error: any Error) -> Self { .init(.staticFiles, error) }
        static func tokenService(_ error: any Error) -> Self { .init(.tokenService, error) }
        static func pidFile(_ message: String) -> Self { .init(.pidFile, message: message) }
        static func wrap(_ message: String) -> Self { .init(.wrap, message: message) }
    }

    public let configuration: Configuration
    private let logger: Logger
    private let logFile: LogFile?
    private let onServerRunning: (@Sendable (SocketAddress) -> Void)?

    /// - Parameters:
    ///   - logFile: the `--log-file` of `bootstrapLogging`, reopened on SIGHUP.
    ///   - onServerRunning: called with the bound address once the main listener is bound.
    public init(
        configuration: Configuration,
        logger: Logger = Logger(label: "wsbridge"),
        logFile: LogFile? = nil,
        onServerRunning: (@Sendable (SocketAddress) -> Void)? = nil
    ) {
        self.configuration = configuration
        self.logger = logger
        self.logFile = logFile
        self.onServerRunning = onServerRunning
    }

    /// Runs the bridge until it is shut down. Returns the process's exit status: 0, or a wrapped program's own
    /// status (`--wrap-mode exit`). Throws `StartupError` when a file cannot be used at start.
    public func run() async throws -> Int32 {
        let configuration = self.configuration
        let logger = self.logger
        for notice in configuration.notices { logger.log(level: notice.level, "\(notice.message)") }
        if let pidFile = configuration.pidFile, !Daemon.isDaemon,
            let error = Daemon.writePidFile(pidFile, pid: getpid())
        {
            throw StartupError.pidFile(error)
        }
        let rebind = try Self.rebind(configuration)
        let store = try Self.targetsStore(configuration, rebind: rebind)
        let server = try self.serverConfiguration()
        var parts = try self.serverServices()
        let tlsStore = parts.tls
        // SIGHUP is trapped before anything listens: a reload request right after start must not kill us.
        let hangups = await HangupSignals.trap()
        if store.current.origins == nil {
            logger.warning("no --origin allow-list: WebSocket connections from any web page are accepted")
        }
        tlsStore?.logCurrent(logger: logger)
        if let raised = ResourceLimits.raiseOpenFilesToHardLimit() {
            logger.debug("open files limit", metadata: ["limit": "\(raised)"])
        }
        let group = MultiThreadedEventLoopGroup(numberOfThreads: configuration.threads ?? System.coreCount)
        let metrics = parts.metrics
        store.reportWarnings(logger: logger, metrics: metrics)
        let tokenService: (any TokenResolver & Service)?
        do {
            tokenService = try await self.tokenService(store: store, group: group, hangups: hangups)
        } catch {
            try? await group.shutdownGracefully()
            throw error
        }
        parts.resolver = tokenService
        let onServerRunning = self.onServerRunning
        let bridge = BridgeServer(
            configuration: server,
            services: parts,
            targets: store,
            group: group,
            logger: logger,
            onServerRunning: { address in
                // The daemon listens: the original process, which relayed the start-up lines, returns.
                if Daemon.isDaemon { Daemon.detachStandardError() }
                onServerRunning?(address)
            }
        )
        if let revocations = (tokenService as? CachingTokenResolver)?.service as? any TokenRevocations {
            revocations.onRevoke { [weak bridge] token in bridge?.revokeSessions(token: token) }
        }
        // Shutdown runs in reverse order: the bridge drains while the metrics listener still answers /readyz, and
        // a wrapped program is stopped after the bridge.
        var services: [any Service] = [hangups]
        if let address = configuration.metrics.listen {
            services.append(
                MetricsServer(
                    host: address.host ?? "::",
                    port: address.port,
                    metrics: metrics,
                    readiness: bridge.readiness,
                    group: group,
                    logger: logger,
                    optional: configuration.metrics.optional,
                    headTimeout: configuration.timeouts.handshake,
                    stallTimeout: configuration.timeouts.stall
                )
            )
        }
        if let tokenService { services.append(tokenService) }
        let wrapped = configuration.wrap.map {
            WrappedCommand(command: $0.command, mode: $0.mode, environment: rebind?.environment ?? [:], logger: logger)
        }
        if let wrapped { services.append(wrapped) }
        services.append(bridge)
        // ReadOnlyTokenFile reads once: no watcher (SIGHUP stays trapped, and does nothing).
        var readOnly = false
        if case .targetsFiles(_, _, reloads: false) = configuration.routing { readOnly = true }
        if store.loader != nil, !readOnly {
            services.append(
                TargetsWatcher(store: store, logger: logger, metrics: metrics, hangups: hangups.subscribe())
            )
        }
        if let tlsStore {
            services.append(ServerTLSWatcher(store: tlsStore, logger: logger, hangups: hangups.subscribe()))
        }
        if let logFile = self.logFile {
            services.append(LogFileReopener(file: logFile, logger: logger, hangups: hangups.subscribe()))
        }
        if case .file(let path) = configuration.authentication, let authenticator = parts.authenticator {
            services.append(
                CredentialsWatcher(
                    path: path,
                    authenticator: authenticator,
                    logger: logger,
                    hangups: hangups.subscribe()
                )
            )
        }
        let serviceGroup = ServiceGroup(
            configuration: .init(
                services: services.map { .init(service: $0, successTerminationBehavior: .gracefullyShutdownGroup) },
                gracefulShutdownSignals: [.sigterm, .sigint],
                logger: logger
            )
        )
        do {
            try await serviceGroup.run()
        } catch {
            try? await group.shutdownGracefully()
            throw error
        }
        try await group.shutdownGracefully()
        if let pidFile = configuration.pidFile { unlink(pidFile) }
        // --wrap-mode exit: the bridge ends with the wrapped program's status, as websockify does.
        return wrapped?.exitStatus ?? 0
    }

    // MARK: Building the parts

    /// The targets table: loaded from files, empty for token services (they answer per connection), or the one
    /// target.
    static func targetsStore(_ configuration: Configuration, rebind: Rebind? = nil) throws -> TargetsStore {
        let origins: OriginAllowList?
        do {
            origins = configuration.origins.isEmpty ? nil : try OriginAllowList(configuration.origins)
        } catch {
            throw StartupError.targets(error)
        }
        let defaultTLS: BackendTLS? = configuration.backendTLS ? BackendTLS() : nil
        func load(_ path: String, _ format: TargetsLoader.Format) throws -> TargetsStore {
            var loader = TargetsLoader(path: path, format: format, extraOrigins: configuration.origins)
            loader.defaultTLS = defaultTLS
            do { return try TargetsStore(loader: loader) } catch { throw StartupError.targets(error) }
        }
        switch configuration.routing {
        case .targetsFiles(let path, let format, _):
            return try load(path, format)
        case .jwt(_, let targets?, _):
            return try load(targets, .targetsFiles)
        case .jwt, .redis, .httpAPI:
            return TargetsStore(fixed: TargetTable(mode: .tokens([:]), origins: origins))
        case .wrappedProgram:
            guard let rebind else { preconditionFailure("wrap mode without a target is set up by rebind(_:)") }
            let target = Target(name: "default", backend: .tcp(host: "127.0.0.1", port: rebind.port))
            return TargetsStore(fixed: TargetTable(mode: .single(target), origins: origins))
        case .single(let backend):
            var target = Target(name: "default", backend: backend)
            if let defaultTLS, case .tcp = backend {
                do { target.tls = try defaultTLS.load() } catch { throw StartupError.tls(error) }
            }
            return TargetsStore(fixed: TargetTable(mode: .single(target), origins: origins))
        }
    }

    /// The server's settings (static files are checked here).
    func serverConfiguration() throws -> BridgeConfiguration {
        let configuration = self.configuration
        let timeouts = configuration.timeouts
        var server = BridgeConfiguration(
            requireOrigin: configuration.requireOrigin,
            handshakeTimeout: timeouts.handshake,
            connectTimeout: timeouts.connect,
            idleTimeout: timeouts.sessionIdle,
            pingInterval: timeouts.pingInterval,
            pongTimeout: timeouts.pong,
            maxFrameSize: configuration.limits.maxFrameSize,
            closeTimeout: timeouts.close,
            shutdownTimeout: timeouts.shutdown,
            writeBufferWaterMark: configuration.buffers.writeBufferWaterMark,
            readBufferSize: configuration.buffers.readBuffer,
            maxReadsPerCycle: configuration.buffers.readsPerCycle,
            limits: configuration.limits.sessions,
            metricsOnMainPort: configuration.metrics.onMainPort
        )
        switch configuration.listener {
        case .tcp(let host, let port):
            server.host = host
            server.port = port
        case .unix(let path, let mode):
            server.unixListenPath = path
            server.unixListenMode = mode
        case .inherited(let descriptor):
            server.inheritedListener = descriptor
        }
        server.preferIPv6 = configuration.preferIPv6
        server.maxMessageSize = configuration.limits.maxMessageSize
        server.compression = configuration.limits.compression
        server.stallTimeout = timeouts.stall
        server.tcpUserTimeout = timeouts.tcpUser
        server.maxHandshakes = configuration.limits.handshakes
        server.maxHandshakesPerClient = configuration.limits.handshakesPerClient
        server.lifetime = configuration.lifetime
        server.tokenSources = configuration.tokens.sources
        server.unknownTokenRereadInterval = configuration.tokens.rereadInterval
        server.proxyProtocol = configuration.proxyProtocol
        do {
            server.trustedProxies = try TrustedProxies(
                configuration.trustedProxies,
                header: configuration.trustedProxyHeader
            )
        } catch {
            throw StartupError.authentication(error)
        }
        if let web = configuration.web {
            do {
                server.staticFiles = try StaticFiles(root: web.root, listDirectories: web.listDirectories)
            } catch {
                throw StartupError.staticFiles(error)
            }
            server.staticFilesUseAccessRules = web.useAccessRules
        }
        if case .clientCertificateNames(let names) = configuration.authentication { server.clientCertNames = names }
        return server
    }

    /// The live objects of the server: certificates, credentials, the recording counter (the token service is
    /// added once the event loops run).
    func serverServices() throws -> BridgeServer.Services {
        let configuration = self.configuration
        var services = BridgeServer.Services()
        if let recording = configuration.recording {
            services.recording = RecordingPolicy(prefix: recording.prefix, limit: recording.limit)
            self.logger.warning("recording every session to \(recording.prefix).N: recordings contain everything typed")
        }
        if let tls = configuration.tls {
            if tls.isDefaultCertificate {
                self.logger.info(
                    "TLS with \(BridgeOptions.defaultCertificate) from the working directory (websockify's default --cert)"
                )
            }
            do { services.tls = try ServerTLSStore(settings: tls.settings) } catch { throw StartupError.tls(error) }
        }
        do {
            switch configuration.authentication {
            case .none:
                break
            case .password(let user, let password):
                services.authenticator = BasicAuthenticator(users: [user: .plain(password: Array(password.utf8))])
            case .file(let path):
                services.authenticator = BasicAuthenticator(users: try BasicAuthenticator.loadFile(path))
            case .clientCertificateNames:
                break  // a setting of the server (`serverConfiguration`)
            }
        } catch {
            throw StartupError.authentication(error)
        }
        return services
    }

    /// The token service of the routing, when it has one: JWT as it is (its answer is local), Redis and the HTTP API
    /// behind the cache of `--token-cache-ttl`, `--token-cache-negative-ttl` and `--token-stale-for`.
    private func tokenService(
        store: TargetsStore,
        group: EventLoopGroup,
        hangups: HangupSignals
    ) async throws -> (any TokenResolver & Service)? {
        let configuration = self.configuration
        let logger = self.logger
        let service: any TokenResolver & Service
        switch configuration.routing {
        case .single, .targetsFiles, .wrappedProgram:
            return nil
        case .jwt(let keys, _, let options):
            let jwt: JWTTokenResolver
            do {
                jwt = try await JWTTokenResolver(
                    path: keys,
                    options: options,
                    targets: store,
                    logger: logger,
                    hangups: hangups.subscribe()
                )
            } catch {
                throw StartupError.tokenService(error)
            }
            logger.info("signed tokens (JWS)", metadata: ["keys": "\(jwt.keyCount)", "source": "\(keys)"])
            return jwt
        case .redis(let source, let revokeChannel, let timeout):
            logger.info(
                "tokens from redis",
                metadata: [
                    "redis": "\(source.endpoint.host):\(source.endpoint.port)", "db": "\(source.endpoint.database)",
                    "namespace": "\(source.namespace)", "revoke_channel": "\(revokeChannel ?? "off")",
                ]
            )
            service = RedisTokenResolver(
                source: source,
                revokeChannel: revokeChannel,
                timeout: timeout,
                group: group,
                logger: logger
            )
        case .httpAPI(let url, let format, let timeout):
            logger.info("tokens from an HTTP API", metadata: ["url": "\(url)"])
            service = HTTPTokenResolver(
                urlTemplate: url,
                format: format,
                timeout: timeout,
                group: group,
                logger: logger
            )
        }
        return CachingTokenResolver(service, policy: configuration.tokens.cache, logger: logger)
    }
}
