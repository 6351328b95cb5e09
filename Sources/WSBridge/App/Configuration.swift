import Logging
import NIOCore

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// Everything one bridge process does, as a plain value: where it listens, how it routes, admits, relays, logs and
/// when it stops. Paths stay paths and addresses stay addresses; `BridgeApplication` builds the live objects
/// (listeners, token services, certificates, watchers) from it. `BridgeOptions` maps the command line to it; tests
/// and fuzzers build one directly. Defaults are the documented ones (docs/behaviour.md).
public struct Configuration: Sendable {
    /// Where client connections come from.
    public enum Listener: Sendable, Equatable {
        /// `[SOURCE_ADDR:]SOURCE_PORT`: nil host listens on every address, IPv4 and IPv6; port 0 picks a free one.
        case tcp(host: String?, port: Int)
        /// `--unix-listen PATH` with its file mode.
        case unix(path: String, mode: mode_t)
        /// A listening socket handed over by the parent: `--inetd` (0) or systemd socket activation (3).
        case inherited(descriptor: CInt)
    }

    /// How a connection finds its backend.
    public enum Routing: Sendable {
        /// Every connection goes to this backend (`TARGET_HOST:TARGET_PORT`, `--unix-target`).
        case single(BackendAddress)
        /// The request's token names a target of these files (`--targets`, websockify's file plugins).
        /// `reloads` is false for websockify's `ReadOnlyTokenFile`.
        case targetsFiles(path: String, format: TargetsLoader.Format, reloads: Bool)
        /// Tokens looked up in Redis per connection (websockify's `TokenRedis`); revocations arrive on a channel.
        case redis(RedisTokenSource, revokeChannel: String?, timeout: TimeAmount)
        /// Signed tokens (websockify's `JWTTokenApi`): the keys' file or directory, and optionally a targets file
        /// whose target the token's `target` claim names.
        case jwt(keys: String, targets: String?, options: JWTTokenResolver.Options)
        /// An HTTP API per connection (websockify's `BaseTokenAPI` and `JSONTokenApi`): `%s` is the token.
        case httpAPI(urlTemplate: String, format: HTTPTokenResolver.Format, timeout: TimeAmount)
        /// Wrap mode without a target (websockify's rebind): the wrapped program binds the bridge's own port and is
        /// moved to a free loopback port, where every connection goes.
        case wrappedProgram
    }

    /// Tokens: where requests carry them, how often an unknown one re-reads the files, and the token-service cache.
    public struct Tokens: Sendable, Equatable {
        public var sources = UpgradePolicy.TokenSources()
        /// An unknown token re-reads changed targets files first, at most once per this interval; nil: only the
        /// watcher and SIGHUP reload them.
        public var rereadInterval: TimeAmount? = .milliseconds(250)
        /// Answers of the token services kept (0: asked at every connection, as websockify does).
        public var cache = TokenCache.Policy()
        public init() {}
    }

    /// The deadlines of every phase.
    public struct Timeouts: Sendable, Equatable {
        /// Accept to the end of admission (PROXY header, TLS, request head, authentication, token services).
        public var handshake: TimeAmount = .seconds(10)
        public var connect: TimeAmount = .seconds(10)
        /// A session without data either way for this long is closed (1001); nil: never.
        public var sessionIdle: TimeAmount?
        /// Pings to the client; nil: none (and no dead-peer detection).
        public var pingInterval: TimeAmount? = .seconds(30)
        public var pong: TimeAmount = .seconds(30)
        /// Each closing step (the peer's Close, flushing to a backend, backend EOF).
        public var close: TimeAmount = .seconds(5)
        /// An HTTP answer that made no progress for this long is closed.
        public var stall: TimeAmount = .seconds(15)
        /// What live sessions get after Close 1001 on SIGTERM.
        public var shutdown: TimeAmount = .seconds(10)
        /// TCP_USER_TIMEOUT of both legs; nil: the system's.
        public var tcpUser: TimeAmount? = .seconds(60)
        public init() {}
    }

    /// What one peer, and all of them, may hold.
    public struct Limits: Sendable, Equatable {
        /// Sessions (after the 101) across the server and per client, and the per-client handshake rate.
        public var sessions = AdmissionLimiter.Limits()
        /// Connections in their handshake across the server and per client address; nil: no cap.
        public var handshakes: Int? = 4096
        public var handshakesPerClient: Int? = 1024
        /// Largest client frame payload (1009 beyond).
        public var maxFrameSize: UInt64 = 64 << 20
        /// Largest client message, its frames together (1009 beyond); never below `maxFrameSize`. Counts inflated
        /// bytes of compressed messages.
        public var maxMessageSize: UInt64 = 64 << 20
        /// permessage-deflate for targets that do not choose (`--compression`; a YAML target's `compression:`).
        public var compression = CompressionMode.off
        public init() {}
    }

    /// Socket buffers and read sizes of a session.
    public struct Buffers: Sendable {
        public var readBuffer = 64 << 10
        public var readsPerCycle = 4
        public var writeBufferWaterMark = ChannelOptions.Types.WriteBufferWaterMark(low: 64 << 10, high: 256 << 10)
        public init() {}
    }

    /// TLS on the listener (`--cert`): files and rules, loaded by the application.
    public struct TLS: Sendable, Equatable {
        public var settings: ServerTLSSettings
        /// The certificate is websockify's default `self.pem`, found in the working directory.
        public var isDefaultCertificate = false
        public init(settings: ServerTLSSettings) { self.settings = settings }
    }

    /// Who may upgrade.
    public enum Authentication: Sendable, Equatable {
        case none
        /// websockify's `BasicHTTPAuth`: one user and password from the command line.
        case password(user: String, password: String)
        /// `--auth-file`: `user:HASH` lines, re-read on change and on SIGHUP.
        case file(String)
        /// websockify's `ClientCertCNAuth`: client certificate names (with `--verify-client`).
        case clientCertificateNames([String])
    }

    /// Static files on the WebSocket port (`--web`).
    public struct Web: Sendable, Equatable {
        public var root: String
        public var listDirectories = false
        /// The Origin rules (and authentication) apply to them too.
        public var useAccessRules = false
        public init(root: String) { self.root = root }
    }

    /// Sessions recorded in websockify's format (`--record`).
    public struct Recording: Sendable, Equatable {
        public var prefix: String
        public var limit = 64 << 20
        public init(prefix: String) { self.prefix = prefix }
    }

    /// The metrics and health listener.
    public struct Metrics: Sendable, Equatable {
        /// nil: no listener (`--metrics-listen off`).
        public var listen: ListenAddress? = Self.defaultListen
        /// A listen address that cannot be bound is a warning, not an error (the default one: another instance
        /// on the same host may hold it).
        public var optional = true
        /// `/metrics` on the main port too.
        public var onMainPort = false
        public static let defaultListen = ListenAddress(host: "127.0.0.1", port: 9680)
        public init() {}
    }

    /// Where log lines go.
    public struct Logging: Sendable, Equatable {
        public enum Format: String, Sendable, CaseIterable { case text, json }
        public var format = Format.text
        public var level = Logger.Level.info
        /// Also appended to this file (reopened on SIGHUP).
        public var file: String?
        public var syslog: SyslogWriter.Destination?
        public var legacySyslog = false
        /// Syslog facility daemon rather than user (websockify's daemons).
        public var daemonFacility = false
        public init() {}
    }

    /// websockify's wrap mode: a program started with the bridge and stopped with it.
    public struct Wrap: Sendable, Equatable {
        public var command: [String]
        public var mode = WrappedCommand.Mode.exit
        public init(command: [String]) { self.command = command }
    }

    /// Something worth a line in the log once logging is set up (an option accepted for compatibility, a risk).
    public struct Notice: Sendable, Equatable {
        public var level: Logger.Level
        public var message: String
        public init(_ level: Logger.Level, _ message: String) {
            self.level = level
            self.message = message
        }
    }

    public var listener = Listener.tcp(host: nil, port: 6080)
    /// Bind the listen host to its IPv6 address when it has one (websockify's `-6`).
    public var preferIPv6 = false
    public var routing: Routing
    /// Backends of `single` and token services are reached over TLS with the system's CAs (`--ssl-target`);
    /// YAML targets choose their own.
    public var backendTLS = false
    public var tokens = Tokens()
    /// The Origin allow-list (empty: any origin, with a warning) and whether requests need an Origin.
    public var origins: [String] = []
    public var requireOrigin = false
    public var authentication = Authentication.none
    /// Proxies whose forwarding header names the client, and which header that is.
    public var trustedProxies: [String] = []
    public var trustedProxyHeader = TrustedProxies.Header.xff
    /// Every connection starts with a PROXY protocol header.
    public var proxyProtocol = false
    public var timeouts = Timeouts()
    public var limits = Limits()
    public var buffers = Buffers()
    /// Event loop threads; nil: one per core.
    public var threads: Int?
    public var tls: TLS?
    public var web: Web?
    public var recording: Recording?
    public var metrics = Metrics()
    public var logging = Logging()
    /// When the server stops by itself (websockify's `--timeout`, `--idle-timeout`, `--run-once`).
    public var lifetime = ServerLifetime.Policy()
    public var wrap: Wrap?
    /// Run in the background once listening (websockify's `-D`): see `Daemon`.
    public var daemon = false
    /// The server's process id is written here while it runs.
    public var pidFile: String?
    public var notices: [Notice] = []

    public init(routing: Routing) {
        self.routing = routing
    }
}
