import ArgumentParser
import Foundation
import Logging
import NIOCore

/// The one place where the command line becomes a `Configuration`: websockify's grammar (positional arguments,
/// plugin names, `self.pem`) and every check of a single option or of options together, each with its own message.
extension BridgeOptions {
    /// What the mapping reads besides the options: the environment (systemd's `LISTEN_FDS`,
    /// `WSBRIDGE_KEY_PASSWORD`), wrap mode's command, and the working directory (websockify's `self.pem`).
    public struct Context: Sendable {
        public var environment: [String: String]
        public var processID: Int32
        /// The words after `--` (wrap mode).
        public var wrapCommand: [String]
        public var fileExists: @Sendable (String) -> Bool

        public init(
            environment: [String: String] = ProcessInfo.processInfo.environment,
            processID: Int32 = getpid(),
            wrapCommand: [String] = [],
            fileExists: @escaping @Sendable (String) -> Bool = { FileManager.default.fileExists(atPath: $0) }
        ) {
            self.environment = environment
            self.processID = processID
            self.wrapCommand = wrapCommand
            self.fileExists = fileExists
        }
    }

    /// websockify's `--cert` default: used when it exists in the working directory and no `--cert` is given.
    public static let defaultCertificate = "self.pem"

    /// The configuration these options describe; a `ValidationError` (exit status 64, one line) names the first
    /// option that is wrong.
    public func configuration(_ context: Context) throws -> Configuration {
        var configuration = Configuration(routing: try self.routing(context))
        try self.mapListener(&configuration, context)
        try self.mapTimeouts(&configuration)
        try self.mapTokens(&configuration)
        try self.mapAdmission(&configuration)
        try self.mapLimitsAndBuffers(&configuration)
        try self.mapTLS(&configuration, context)
        try self.mapHTTPAndRecording(&configuration)
        try self.mapProcess(&configuration, context)
        return configuration
    }

    // MARK: Routing

    private enum TokenPlugin {
        case files(TargetsLoader.Format, reloads: Bool)
        case redis
        case jwt
        case api(HTTPTokenResolver.Format)

        init?(_ name: String) {
            switch WebsockifyPluginName.builtIn(name, kind: .token) ?? name {
            case "TokenFile": self = .files(.targetsFiles, reloads: true)
            case "ReadOnlyTokenFile": self = .files(.targetsFiles, reloads: false)
            case "TokenFileName": self = .files(.tokenFileNames, reloads: true)
            case "UnixDomainSocketDirectory": self = .files(.unixSocketDirectory, reloads: true)
            case "TokenRedis": self = .redis
            case "JWTTokenApi": self = .jwt
            case "BaseTokenAPI": self = .api(.text)
            case "JSONTokenApi": self = .api(.json)
            default: return nil
            }
        }
    }

    /// The file format of a websockify token plugin that reads files (`wsbridge check --token-plugin`); nil for
    /// the others and for unknown names.
    public static func fileFormat(ofTokenPlugin name: String) -> TargetsLoader.Format? {
        guard case .files(let format, _) = TokenPlugin(name) else { return nil }
        return format
    }

    /// The listening socket is not given by SOURCE_PORT (Unix socket, inetd, systemd): a single positional
    /// argument is then the target.
    private func listensWithoutPort(_ context: Context) -> Bool {
        self.serving.unixListen != nil || self.serving.inetd || Self.systemdListener(context) != nil
    }

    private func positionalListen(_ context: Context) -> String? {
        self.listensWithoutPort(context) && self.positional.count == 1 ? nil : self.positional.first
    }

    private func positionalTarget(_ context: Context) -> String? {
        if self.positional.count == 2 { return self.positional[1] }
        return self.listensWithoutPort(context) && self.positional.count == 1 ? self.positional[0] : nil
    }

    /// systemd socket activation: the first passed descriptor (3), when LISTEN_PID names this process.
    static func systemdListener(_ context: Context) -> CInt? {
        guard let pid = context.environment["LISTEN_PID"].flatMap(Int32.init), pid == context.processID,
            let count = context.environment["LISTEN_FDS"].flatMap(Int.init), count >= 1
        else { return nil }
        return 3
    }

    private func routing(_ context: Context) throws -> Configuration.Routing {
        guard self.positional.count <= 2 else {
            throw ValidationError(
                "at most two positional arguments: [SOURCE_ADDR:]SOURCE_PORT [TARGET_HOST:TARGET_PORT]"
            )
        }
        var redis: RedisTokenSource?
        var plugin: TokenPlugin?
        if let name = self.routing.tokenPlugin {
            if let refusal = WebsockifyPluginName.refusal(name, kind: .token, option: "--token-plugin") {
                throw ValidationError(refusal)
            }
            guard let known = TokenPlugin(name) else {
                throw ValidationError(
                    "--token-plugin \(name) is not supported; use TokenFile, ReadOnlyTokenFile, TokenFileName, UnixDomainSocketDirectory, TokenRedis, JWTTokenApi, BaseTokenAPI or JSONTokenApi"
                )
            }
            plugin = known
            if case .api = known, let url = self.routing.tokenSource {
                guard url.hasPrefix("http://") || url.hasPrefix("https://"), url.contains("%s") else {
                    throw ValidationError(
                        "--token-plugin \(name) needs --token-source http(s)://…%s… (the token replaces %s)"
                    )
                }
            }
            if case .redis = known, let source = self.routing.tokenSource {
                do { redis = try RedisTokenSource.parse(source) } catch { throw ValidationError("\(error)") }
            }
            guard self.routing.tokenSource != nil else {
                throw ValidationError("--token-plugin \(name) needs --token-source PATH")
            }
            if case .jwt = known {
            } else if self.routing.targets != nil {
                throw ValidationError(
                    "give --targets or --token-plugin, not both (except JWTTokenApi, whose 'target' claim names a target of --targets)"
                )
            }
        } else if self.routing.tokenSource != nil {
            throw ValidationError("--token-source needs --token-plugin TokenFile")
        }
        let positionalTarget = self.positionalTarget(context)
        let tokenRouting = self.routing.targets != nil || plugin != nil
        let modes = [positionalTarget != nil, tokenRouting, self.routing.unixTarget != nil].filter { $0 }.count
        guard modes <= 1 else {
            throw ValidationError(
                "choose one of: a positional TARGET_HOST:TARGET_PORT, --targets FILE, --unix-target PATH"
            )
        }
        guard modes == 1 else {
            if !context.wrapCommand.isEmpty {
                // websockify's rebind: the program's bind() to SOURCE_PORT is moved to a loopback port of ours.
                guard !self.listensWithoutPort(context), let listen = self.positionalListen(context),
                    case .success(let address) = ListenAddress.parse(listen), address.port != 0
                else {
                    throw ValidationError(
                        "wrap mode without a target needs a SOURCE_PORT other than 0 (the port the program binds), or --unix-target PATH or TARGET_HOST:TARGET_PORT"
                    )
                }
                return .wrappedProgram
            }
            throw ValidationError("no backend: give TARGET_HOST:TARGET_PORT, --targets FILE or --unix-target PATH")
        }
        switch plugin {
        case .files(let format, let reloads):
            return .targetsFiles(path: self.routing.tokenSource!, format: format, reloads: reloads)
        case .redis:
            guard var source = redis else { preconditionFailure("TokenRedis's source is parsed above") }
            source.endpoint.username = self.routing.redisUsername
            return .redis(
                source,
                revokeChannel: self.routing.redisRevokeChannel == "off" ? nil : self.routing.redisRevokeChannel,
                timeout: try Self.positiveSeconds(self.routing.redisTimeout, "--redis-timeout")
            )
        case .jwt:
            let options = JWTTokenResolver.Options(
                leeway: self.routing.jwtLeeway,
                audience: self.routing.jwtAudience,
                issuer: self.routing.jwtIssuer,
                closeAtExpiry: self.routing.jwtCloseAtExp
            )
            return .jwt(keys: self.routing.tokenSource!, targets: self.routing.targets, options: options)
        case .api(let format):
            return .httpAPI(
                urlTemplate: self.routing.tokenSource!,
                format: format,
                timeout: try Self.positiveSeconds(self.routing.tokenAPITimeout, "--token-api-timeout")
            )
        case nil:
            if let targets = self.routing.targets {
                return .targetsFiles(path: targets, format: .targetsFiles, reloads: true)
            }
            if let unix = self.routing.unixTarget { return .single(.unix(path: unix)) }
            switch BackendAddress.parseHostPort(positionalTarget!) {
            case .success(let backend): return .single(backend)
            case .failure(let error): throw ValidationError(error.message)
            }
        }
    }

    private func mapListener(_ configuration: inout Configuration, _ context: Context) throws {
        guard let mode = UInt32(self.serving.unixListenMode, radix: 8), mode <= 0o777 else {
            throw ValidationError("--unix-listen-mode must be an octal mode such as 0660")
        }
        if self.serving.unixListen != nil && self.serving.inetd {
            throw ValidationError("give --unix-listen or --inetd, not both")
        }
        if let path = self.serving.unixListen {
            configuration.listener = .unix(path: path, mode: mode_t(mode))
        } else if self.serving.inetd {
            configuration.listener = .inherited(descriptor: 0)
        } else if let descriptor = Self.systemdListener(context) {
            configuration.listener = .inherited(descriptor: descriptor)
            configuration.notices.append(.init(.info, "using the socket passed by systemd (LISTEN_FDS)"))
        }
        if let listen = self.positionalListen(context) {
            switch ListenAddress.parse(listen) {
            case .success(let address):
                if case .tcp = configuration.listener {
                    configuration.listener = .tcp(host: address.host, port: address.port)
                }
            case .failure(let error): throw ValidationError(error.message)
            }
        }
        configuration.preferIPv6 = self.serving.preferIPv6
        guard (self.session.threads ?? 1) >= 1 else { throw ValidationError("--threads must be at least 1") }
        configuration.threads = self.session.threads
    }

    // MARK: Tokens and admission

    private func mapTokens(_ configuration: inout Configuration) throws {
        if let template = self.routing.tokenPath {
            guard template.hasPrefix("/"), template.components(separatedBy: "{token}").count == 2 else {
                throw ValidationError("--token-path must be a path with one {token} segment, such as /t/{token}")
            }
        }
        configuration.tokens.sources = .init(pathTemplate: self.routing.tokenPath, hostToken: self.routing.hostToken)
        configuration.tokens.cache = .init(
            ttl: try Self.seconds(self.routing.tokenCacheTTL, "--token-cache-ttl"),
            negativeTTL: try Self.seconds(self.routing.tokenCacheNegativeTTL, "--token-cache-negative-ttl"),
            staleFor: try Self.seconds(self.routing.tokenStaleFor, "--token-stale-for")
        )
        let interval = try Self.seconds(self.routing.tokenRereadInterval, "--token-reread-interval")
        guard self.routing.tokenRereadInterval < self.lifetime.handshakeTimeout else {
            throw ValidationError(
                "--token-reread-interval must be shorter than --handshake-timeout (unknown tokens wait for the next re-read)"
            )
        }
        // ReadOnlyTokenFile reads once, as in websockify.
        if case .targetsFiles(_, _, reloads: false) = configuration.routing {
            configuration.tokens.rereadInterval = nil
        } else {
            configuration.tokens.rereadInterval = interval > .zero ? interval : nil
        }
        _ = try Self.seconds(self.routing.jwtLeeway, "--jwt-leeway")
        configuration.backendTLS = self.tls.sslTarget
    }

    private func mapAdmission(_ configuration: inout Configuration) throws {
        do { _ = try OriginAllowList(self.routing.origins) } catch { throw ValidationError("--origin: \(error)") }
        configuration.origins = self.routing.origins
        configuration.requireOrigin = self.routing.requireOrigin
        if let plugin = self.access.authPlugin {
            if let refusal = WebsockifyPluginName.refusal(plugin, kind: .auth, option: "--auth-plugin") {
                throw ValidationError(refusal)
            }
            switch WebsockifyPluginName.builtIn(plugin, kind: .auth) ?? plugin {
            case "BasicHTTPAuth":
                guard let source = self.access.authSource else {
                    throw ValidationError("--auth-plugin BasicHTTPAuth needs --auth-source user:password")
                }
                guard let colon = source.firstIndex(of: ":"), colon != source.startIndex else {
                    throw ValidationError("--auth-source must be user:password")
                }
                guard self.access.authFile == nil else {
                    throw ValidationError("give --auth-plugin BasicHTTPAuth or --auth-file, not both")
                }
                configuration.authentication = .password(
                    user: String(source[..<colon]),
                    password: String(source[source.index(after: colon)...])
                )
            case "ClientCertCNAuth":
                guard self.tls.verifyClient else {
                    throw ValidationError("--auth-plugin ClientCertCNAuth needs --verify-client")
                }
                let names = (self.access.authSource ?? "").split(separator: " ").map(String.init)
                guard !names.isEmpty else {
                    throw ValidationError("--auth-plugin ClientCertCNAuth needs --auth-source 'NAME NAME…'")
                }
                configuration.authentication = .clientCertificateNames(names)
            default:
                throw ValidationError(
                    "--auth-plugin \(plugin) is not supported: use BasicHTTPAuth or ClientCertCNAuth (or --auth-file)"
                )
            }
        } else if self.access.authSource != nil {
            throw ValidationError("--auth-source needs --auth-plugin BasicHTTPAuth or ClientCertCNAuth")
        } else if let file = self.access.authFile {
            configuration.authentication = .file(file)
        }
        do { _ = try TrustedProxies(self.access.trustedProxies) } catch {
            throw ValidationError("--trusted-proxy: \(error)")
        }
        guard let header = TrustedProxies.Header(rawValue: self.access.trustedProxyHeader) else {
            throw ValidationError("--trusted-proxy-header must be xff (X-Forwarded-For) or forwarded")
        }
        configuration.trustedProxies = self.access.trustedProxies
        configuration.trustedProxyHeader = header
        configuration.proxyProtocol = self.access.proxyProtocol
    }

    // MARK: Deadlines, limits, buffers

    func mapTimeouts(_ configuration: inout Configuration) throws {
        var timeouts = Configuration.Timeouts()
        timeouts.handshake = try Self.positiveSeconds(self.lifetime.handshakeTimeout, "--handshake-timeout")
        timeouts.connect = try Self.positiveSeconds(self.lifetime.connectTimeout, "--connect-timeout")
        timeouts.pong = try Self.positiveSeconds(self.session.pongTimeout, "--pong-timeout")
        timeouts.close = try Self.positiveSeconds(self.session.closeTimeout, "--close-timeout")
        timeouts.stall = try Self.positiveSeconds(self.session.stallTimeout, "--stall-timeout")
        timeouts.shutdown = try Self.positiveSeconds(self.session.shutdownTimeout, "--shutdown-timeout")
        // Checked whatever the routing, as every option is.
        _ = try Self.positiveSeconds(self.routing.redisTimeout, "--redis-timeout")
        _ = try Self.positiveSeconds(self.routing.tokenAPITimeout, "--token-api-timeout")
        timeouts.sessionIdle = try Self.optionalSeconds(self.lifetime.sessionIdleTimeout, "--session-idle-timeout")
        timeouts.pingInterval = try Self.optionalSeconds(self.session.pingInterval, "--ping-interval")
        timeouts.tcpUser = try Self.optionalSeconds(self.session.tcpUserTimeout, "--tcp-user-timeout")
        configuration.timeouts = timeouts
        configuration.lifetime = .init(
            stopAfter: try Self.optionalSeconds(self.lifetime.timeout, "--timeout"),
            stopWhenIdleFor: try Self.optionalSeconds(self.lifetime.idleTimeout, "--idle-timeout"),
            stopAfterFirstSession: self.lifetime.runOnce
        )
    }

    func mapLimitsAndBuffers(_ configuration: inout Configuration) throws {
        for (name, value) in [
            ("--max-connections", self.session.maxConnections),
            ("--max-connections-per-client", self.session.maxConnectionsPerClient),
            ("--max-handshakes", self.session.maxHandshakes),
            ("--max-handshakes-per-ip", self.session.maxHandshakesPerIP),
        ] where value < 0 {
            throw ValidationError("\(name) must be 0 (no limit) or a positive number")
        }
        guard self.session.handshakeRate >= 0 else {
            throw ValidationError("--handshake-rate must be 0 (off) or positive")
        }
        guard self.session.handshakeBurst >= 1 else { throw ValidationError("--handshake-burst must be at least 1") }
        guard self.session.maxFrameSize > 0 else { throw ValidationError("--max-frame-size must be positive") }
        configuration.limits.sessions = .init(
            maxSessions: self.session.maxConnections > 0 ? self.session.maxConnections : nil,
            maxSessionsPerClient: self.session.maxConnectionsPerClient > 0 ? self.session.maxConnectionsPerClient : nil,
            handshakeRate: self.session.handshakeRate > 0 ? self.session.handshakeRate : nil,
            handshakeBurst: self.session.handshakeBurst
        )
        configuration.limits.handshakes = self.session.maxHandshakes > 0 ? self.session.maxHandshakes : nil
        configuration.limits.handshakesPerClient =
            self.session.maxHandshakesPerIP > 0 ? self.session.maxHandshakesPerIP : nil
        configuration.limits.maxFrameSize = self.session.maxFrameSize
        configuration.limits.compression = self.session.compression
        if let maxMessageSize = self.session.maxMessageSize {
            guard maxMessageSize >= self.session.maxFrameSize else {
                throw ValidationError("--max-message-size must be at least --max-frame-size")
            }
            configuration.limits.maxMessageSize = maxMessageSize
        } else {
            configuration.limits.maxMessageSize = max(64 << 20, self.session.maxFrameSize)
        }

        guard self.session.readBuffer >= 64 else { throw ValidationError("--read-buffer must be at least 64 bytes") }
        guard self.session.writeBufferLow >= 0, self.session.writeBufferHigh > self.session.writeBufferLow else {
            throw ValidationError("--write-buffer-high must be larger than --write-buffer-low (and that at least 0)")
        }
        guard self.session.readsPerCycle >= 1 else { throw ValidationError("--reads-per-cycle must be at least 1") }
        configuration.buffers.readBuffer = self.session.readBuffer
        configuration.buffers.readsPerCycle = self.session.readsPerCycle
        configuration.buffers.writeBufferWaterMark = .init(
            low: self.session.writeBufferLow,
            high: self.session.writeBufferHigh
        )
    }
}
