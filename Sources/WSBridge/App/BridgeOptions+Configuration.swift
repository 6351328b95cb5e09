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
        self.unixListen != nil || self.inetd || Self.systemdListener(context) != nil
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
        if let name = self.tokenPlugin {
            if let refusal = WebsockifyPluginName.refusal(name, kind: .token, option: "--token-plugin") {
                throw ValidationError(refusal)
            }
            guard let known = TokenPlugin(name) else {
                throw ValidationError(
                    "--token-plugin \(name) is not supported; use TokenFile, ReadOnlyTokenFile, TokenFileName, UnixDomainSocketDirectory, TokenRedis, JWTTokenApi, BaseTokenAPI or JSONTokenApi"
                )
            }
            plugin = known
            if case .api = known, let url = self.tokenSource {
                guard url.hasPrefix("http://") || url.hasPrefix("https://"), url.contains("%s") else {
                    throw ValidationError(
                        "--token-plugin \(name) needs --token-source http(s)://…%s… (the token replaces %s)"
                    )
                }
            }
            if case .redis = known, let source = self.tokenSource {
                do { redis = try RedisTokenSource.parse(source) } catch { throw ValidationError("\(error)") }
            }
            guard self.tokenSource != nil else {
                throw ValidationError("--token-plugin \(name) needs --token-source PATH")
            }
            if case .jwt = known {
            } else if self.targets != nil {
                throw ValidationError(
                    "give --targets or --token-plugin, not both (except JWTTokenApi, whose 'target' claim names a target of --targets)"
                )
            }
        } else if self.tokenSource != nil {
            throw ValidationError("--token-source needs --token-plugin TokenFile")
        }
        let positionalTarget = self.positionalTarget(context)
        let tokenRouting = self.targets != nil || plugin != nil
        let modes = [positionalTarget != nil, tokenRouting, self.unixTarget != nil].filter { $0 }.count
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
            return .targetsFiles(path: self.tokenSource!, format: format, reloads: reloads)
        case .redis:
            guard var source = redis else { preconditionFailure("TokenRedis's source is parsed above") }
            source.endpoint.username = self.redisUsername
            return .redis(
                source,
                revokeChannel: self.redisRevokeChannel == "off" ? nil : self.redisRevokeChannel,
                timeout: try Self.positiveSeconds(self.redisTimeout, "--redis-timeout")
            )
        case .jwt:
            let options = JWTTokenResolver.Options(
                leeway: self.jwtLeeway,
                audience: self.jwtAudience,
                issuer: self.jwtIssuer,
                closeAtExpiry: self.jwtCloseAtExp
            )
            return .jwt(keys: self.tokenSource!, targets: self.targets, options: options)
        case .api(let format):
            return .httpAPI(
                urlTemplate: self.tokenSource!,
                format: format,
                timeout: try Self.positiveSeconds(self.tokenAPITimeout, "--token-api-timeout")
            )
        case nil:
            if let targets = self.targets { return .targetsFiles(path: targets, format: .targetsFiles, reloads: true) }
            if let unix = self.unixTarget { return .single(.unix(path: unix)) }
            switch BackendAddress.parseHostPort(positionalTarget!) {
            case .success(let backend): return .single(backend)
            case .failure(let error): throw ValidationError(error.message)
            }
        }
    }

    private func mapListener(_ configuration: inout Configuration, _ context: Context) throws {
        guard let mode = UInt32(self.unixListenMode, radix: 8), mode <= 0o777 else {
            throw ValidationError("--unix-listen-mode must be an octal mode such as 0660")
        }
        if self.unixListen != nil && self.inetd { throw ValidationError("give --unix-listen or --inetd, not both") }
        if let path = self.unixListen {
            configuration.listener = .unix(path: path, mode: mode_t(mode))
        } else if self.inetd {
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
        configuration.preferIPv6 = self.preferIPv6
        guard (self.threads ?? 1) >= 1 else { throw ValidationError("--threads must be at least 1") }
        configuration.threads = self.threads
    }

    // MARK: Tokens and admission

    private func mapTokens(_ configuration: inout Configuration) throws {
        if let template = self.tokenPath {
            guard template.hasPrefix("/"), template.components(separatedBy: "{token}").count == 2 else {
                throw ValidationError("--token-path must be a path with one {token} segment, such as /t/{token}")
            }
        }
        configuration.tokens.sources = .init(pathTemplate: self.tokenPath, hostToken: self.hostToken)
        configuration.tokens.cache = .init(
            ttl: try Self.seconds(self.tokenCacheTTL, "--token-cache-ttl"),
            negativeTTL: try Self.seconds(self.tokenCacheNegativeTTL, "--token-cache-negative-ttl"),
            staleFor: try Self.seconds(self.tokenStaleFor, "--token-stale-for")
        )
        let interval = try Self.seconds(self.tokenRereadInterval, "--token-reread-interval")
        guard self.tokenRereadInterval < self.handshakeTimeout else {
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
        _ = try Self.seconds(self.jwtLeeway, "--jwt-leeway")
        configuration.backendTLS = self.sslTarget
    }

    private func mapAdmission(_ configuration: inout Configuration) throws {
        do { _ = try OriginAllowList(self.origins) } catch { throw ValidationError("--origin: \(error)") }
        configuration.origins = self.origins
        configuration.requireOrigin = self.requireOrigin
        if let plugin = self.authPlugin {
            if let refusal = WebsockifyPluginName.refusal(plugin, kind: .auth, option: "--auth-plugin") {
                throw ValidationError(refusal)
            }
            switch WebsockifyPluginName.builtIn(plugin, kind: .auth) ?? plugin {
            case "BasicHTTPAuth":
                guard let source = self.authSource else {
                    throw ValidationError("--auth-plugin BasicHTTPAuth needs --auth-source user:password")
                }
                guard let colon = source.firstIndex(of: ":"), colon != source.startIndex else {
                    throw ValidationError("--auth-source must be user:password")
                }
                guard self.authFile == nil else {
                    throw ValidationError("give --auth-plugin BasicHTTPAuth or --auth-file, not both")
                }
                configuration.authentication = .password(
                    user: String(source[..<colon]),
                    password: String(source[source.index(after: colon)...])
                )
            case "ClientCertCNAuth":
                guard self.verifyClient else {
                    throw ValidationError("--auth-plugin ClientCertCNAuth needs --verify-client")
                }
                let names = (self.authSource ?? "").split(separator: " ").map(String.init)
                guard !names.isEmpty else {
                    throw ValidationError("--auth-plugin ClientCertCNAuth needs --auth-source 'NAME NAME…'")
                }
                configuration.authentication = .clientCertificateNames(names)
            default:
                throw ValidationError(
                    "--auth-plugin \(plugin) is not supported: use BasicHTTPAuth or ClientCertCNAuth (or --auth-file)"
                )
            }
        } else if self.authSource != nil {
            throw ValidationError("--auth-source needs --auth-plugin BasicHTTPAuth or ClientCertCNAuth")
        } else if let file = self.authFile {
            configuration.authentication = .file(file)
        }
        do { _ = try TrustedProxies(self.trustedProxies) } catch { throw ValidationError("--trusted-proxy: \(error)") }
        guard let header = TrustedProxies.Header(rawValue: self.trustedProxyHeader) else {
            throw ValidationError("--trusted-proxy-header must be xff (X-Forwarded-For) or forwarded")
        }
        configuration.trustedProxies = self.trustedProxies
        configuration.trustedProxyHeader = header
        configuration.proxyProtocol = self.proxyProtocol
    }

    // MARK: Deadlines, limits, buffers

    func mapTimeouts(_ configuration: inout Configuration) throws {
        var timeouts = Configuration.Timeouts()
        timeouts.handshake = try Self.positiveSeconds(self.handshakeTimeout, "--handshake-timeout")
        timeouts.connect = try Self.positiveSeconds(self.connectTimeout, "--connect-timeout")
        timeouts.pong = try Self.positiveSeconds(self.pongTimeout, "--pong-timeout")
        timeouts.close = try Self.positiveSeconds(self.closeTimeout, "--close-timeout")
        timeouts.stall = try Self.positiveSeconds(self.stallTimeout, "--stall-timeout")
        timeouts.shutdown = try Self.positiveSeconds(self.shutdownTimeout, "--shutdown-timeout")
        // Checked whatever the routing, as every option is.
        _ = try Self.positiveSeconds(self.redisTimeout, "--redis-timeout")
        _ = try Self.positiveSeconds(self.tokenAPITimeout, "--token-api-timeout")
        timeouts.sessionIdle = try Self.optionalSeconds(self.sessionIdleTimeout, "--session-idle-timeout")
        timeouts.pingInterval = try Self.optionalSeconds(self.pingInterval, "--ping-interval")
        timeouts.tcpUser = try Self.optionalSeconds(self.tcpUserTimeout, "--tcp-user-timeout")
        configuration.timeouts = timeouts
        configuration.lifetime = .init(
            stopAfter: try Self.optionalSeconds(self.timeout, "--timeout"),
            stopWhenIdleFor: try Self.optionalSeconds(self.idleTimeout, "--idle-timeout"),
            stopAfterFirstSession: self.runOnce
        )
    }

    func mapLimitsAndBuffers(_ configuration: inout Configuration) throws {
        for (name, value) in [
            ("--max-connections", self.maxConnections), ("--max-connections-per-client", self.maxConnectionsPerClient),
            ("--max-handshakes", self.maxHandshakes), ("--max-handshakes-per-ip", self.maxHandshakesPerIP),
        ] where value < 0 {
            throw ValidationError("\(name) must be 0 (no limit) or a positive number")
        }
        guard self.handshakeRate >= 0 else { throw ValidationError("--handshake-rate must be 0 (off) or positive") }
        guard self.handshakeBurst >= 1 else { throw ValidationError("--handshake-burst must be at least 1") }
        guard self.maxFrameSize > 0 else { throw ValidationError("--max-frame-size must be positive") }
        configuration.limits.sessions = .init(
            maxSessions: self.maxConnections > 0 ? self.maxConnections : nil,
            maxSessionsPerClient: self.maxConnectionsPerClient > 0 ? self.maxConnectionsPerClient : nil,
            handshakeRate: self.handshakeRate > 0 ? self.handshakeRate : nil,
            handshakeBurst: self.handshakeBurst
        )
        configuration.limits.handshakes = self.maxHandshakes > 0 ? self.maxHandshakes : nil
        configuration.limits.handshakesPerClient = self.maxHandshakesPerIP > 0 ? self.maxHandshakesPerIP : nil
        configuration.limits.maxFrameSize = self.maxFrameSize

        guard self.readBuffer >= 64 else { throw ValidationError("--read-buffer must be at least 64 bytes") }
        guard self.writeBufferLow >= 0, self.writeBufferHigh > self.writeBufferLow else {
            throw ValidationError("--write-buffer-high must be larger than --write-buffer-low (and that at least 0)")
        }
        guard self.readsPerCycle >= 1 else { throw ValidationError("--reads-per-cycle must be at least 1") }
        configuration.buffers.readBuffer = self.readBuffer
        configuration.buffers.readsPerCycle = self.readsPerCycle
        configuration.buffers.writeBufferWaterMark = .init(low: self.writeBufferLow, high: self.writeBufferHigh)
    }
}
