import ArgumentParser
import Foundation
import Logging
import NIOCore
import NIOPosix
import ServiceLifecycle
import UnixSignals
import WSBridge

/// The `wsbridge` command: translates flags into a `BridgeConfiguration` and runs the services. No behaviour
/// lives here.
@main
struct WSBridgeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "wsbridge",
        abstract: "A WebSocket-to-TCP bridge: browsers connect with ws://, wsbridge relays bytes to TCP backends.",
        discussion: """
            Positional arguments follow websockify: [SOURCE_ADDR:]SOURCE_PORT [TARGET_HOST:TARGET_PORT]. \
            With a target every connection goes to it; with --targets FILE the request's token (query \
            ?token=NAME or a 'token' cookie) picks the backend. The targets file is re-read when it \
            changes and on SIGHUP.

            Every option can also come from the environment: --connect-timeout 3 as WSBRIDGE_CONNECT_TIMEOUT=3, \
            flags as WSBRIDGE_REQUIRE_ORIGIN=1, repeatable options comma-separated (WSBRIDGE_ORIGIN=a,b), the \
            positional arguments as WSBRIDGE_LISTEN and WSBRIDGE_TARGET. The command line wins.

            `wsbridge check FILE` validates a targets file without starting a server; `wsbridge healthcheck` \
            exits 0 when the health endpoint answers 200 (for Docker's HEALTHCHECK).

            Wrap mode, as websockify's: [SOURCE_ADDR:]SOURCE_PORT -- COMMAND ARGS... starts the program, stops it \
            with the bridge, and relays to the target it serves (--unix-target PATH or TARGET_HOST:TARGET_PORT); \
            --wrap-mode says what happens when it exits.

            Handshake statuses and close codes: docs/behaviour.md.
            """,
        version: "wsbridge \(WSBridgeVersion.current)"
    )

    @Argument(help: "[SOURCE_ADDR:]SOURCE_PORT to listen on (default 6080, all addresses), then optionally TARGET_HOST:TARGET_PORT.")
    var positional: [String] = []

    /// websockify's wrap mode: the words after `--`, a program to start (and to stop with the bridge). Taken off the
    /// command line before ArgumentParser sees it (which allows no positional list after another).
    nonisolated(unsafe) static var wrapCommandLine: [String] = []

    var wrapCommand: [String] { Self.wrapCommandLine }

    @Option(name: [.customLong("targets"), .customLong("target-config")], help: ArgumentHelp("Targets file or directory (YAML if .yaml/.yml, else websockify's 'token: host:port'). --target-config is websockify's deprecated alias.", valueName: "FILE"))
    var targets: String?

    @Option(name: .customLong("token-plugin"), help: ArgumentHelp("websockify's token plugins: TokenFile (reloaded on change), ReadOnlyTokenFile (read once), TokenFileName (a directory: file name = token, content = host:port), UnixDomainSocketDirectory (a directory: socket name = token). Use with --token-source.", valueName: "NAME"))
    var tokenPlugin: String?

    @Option(name: .customLong("token-source"), help: ArgumentHelp("The file or directory of --token-plugin.", valueName: "PATH"))
    var tokenSource: String?

    @Option(name: .customLong("token-reread-interval"), help: ArgumentHelp("A token the targets files do not know re-reads them first when they changed (as websockify reads them at every lookup): at most once per S seconds, unknown tokens in between wait for the next look; 0 = only the poll and SIGHUP.", valueName: "S"))
    var tokenRereadInterval: Double = 0.25

    @Option(name: .customLong("token-cache-ttl"), help: ArgumentHelp("Seconds a token service's answer (TokenRedis, BaseTokenAPI, JSONTokenApi) is reused; 0 (default) = ask at every connection, as websockify does.", valueName: "S"))
    var tokenCacheTTL: Double = 0

    @Option(name: .customLong("token-cache-negative-ttl"), help: ArgumentHelp("Seconds an unknown token stays unknown without asking the token service again; 0 (default) = ask every time.", valueName: "S"))
    var tokenCacheNegativeTTL: Double = 0

    @Option(name: .customLong("token-stale-for"), help: ArgumentHelp("While the token service is unreachable, keep admitting a token whose last answer is at most S seconds old (answers are kept that long for this only); 0 = refuse (503).", valueName: "S"))
    var tokenStaleFor: Double = 0

    @Option(name: .customLong("redis-username"), help: ArgumentHelp("TokenRedis: ACL user name for AUTH (the password is the 4th field of --token-source).", valueName: "NAME"))
    var redisUsername: String?

    @Option(name: .customLong("redis-revoke-channel"), help: ArgumentHelp("TokenRedis: pub/sub channel whose messages (a token each) close that token's live sessions with 1008; 'off' disables.", valueName: "NAME"))
    var redisRevokeChannel: String = "wsbridge:revoke"

    @Option(name: .customLong("redis-timeout"), help: ArgumentHelp("TokenRedis: bound for connecting to Redis and for each lookup, in seconds.", valueName: "S"))
    var redisTimeout: Double = 1

    @Option(name: .customLong("token-api-timeout"), help: ArgumentHelp("BaseTokenAPI/JSONTokenApi: bound for each HTTP lookup (connect and answer), in seconds.", valueName: "S"))
    var tokenAPITimeout: Double = 2

    @Option(name: .customLong("jwt-leeway"), help: ArgumentHelp("JWTTokenApi: seconds of clock skew allowed for exp and nbf.", valueName: "S"))
    var jwtLeeway: Double = 5

    @Option(name: .customLong("jwt-audience"), help: ArgumentHelp("JWTTokenApi: require this value in the token's aud claim.", valueName: "AUD"))
    var jwtAudience: String?

    @Flag(name: .customLong("jwt-close-at-exp"), help: "JWTTokenApi: close a session with 1008 'token expired' when its token's exp passes.")
    var jwtCloseAtExp = false

    @Option(name: .customLong("jwt-issuer"), help: ArgumentHelp("JWTTokenApi: require this iss claim.", valueName: "ISS"))
    var jwtIssuer: String?

    @Option(name: .customLong("token-path"), help: ArgumentHelp("Also take the token from a path segment, e.g. /t/{token}.", valueName: "TEMPLATE"))
    var tokenPath: String?

    @Flag(name: .customLong("host-token"), help: "websockify compatibility: the Host header (without port) is the token, and the only source.")
    var hostToken = false

    @Option(name: .customLong("unix-target"), help: ArgumentHelp("Single-target mode to a Unix socket.", valueName: "PATH"))
    var unixTarget: String?

    @Option(name: .customLong("origin"), help: ArgumentHelp("Allowed Origin, exact or wildcard subdomain (https://*.example.com); repeatable. Default: any origin (a warning is logged).", valueName: "ORIGIN"))
    var origins: [String] = []

    @Flag(name: .customLong("require-origin"), help: "Refuse requests without an Origin header (403).")
    var requireOrigin = false

    @Option(name: .customLong("handshake-timeout"), help: ArgumentHelp("Seconds from accept to the end of admission (PROXY header, TLS handshake, request head, authentication, token services): then 408, or a plain close before the request can be read.", valueName: "S"))
    var handshakeTimeout: Double = 10

    @Option(name: .customLong("connect-timeout"), help: ArgumentHelp("Backend connect timeout in seconds.", valueName: "S"))
    var connectTimeout: Double = 10

    @Option(name: .customLong("session-idle-timeout"), help: ArgumentHelp("Close a session (1001 'idle timeout') after S seconds without data either way; 0 = off. (--idle-timeout has websockify's meaning.)", valueName: "S"))
    var sessionIdleTimeout: Double = 0

    @Option(name: .customLong("idle-timeout"), help: ArgumentHelp("websockify: the server exits after S seconds without a WebSocket session (counted from the start and from the end of the last one); 0 = never. Idle sessions: --session-idle-timeout.", valueName: "S"))
    var idleTimeout: Double = 0

    @Option(name: .customLong("timeout"), help: ArgumentHelp("websockify: stop listening S seconds after the start; the live sessions go on, and the server exits once they have ended. 0 = never.", valueName: "S"))
    var timeout: Double = 0

    @Flag(name: .customLong("run-once"), help: "websockify: exit after the first WebSocket session has ended (refused upgrades and static files do not count).")
    var runOnce = false

    @Flag(name: [.customShort("D"), .customLong("daemon")], help: "Run in the background once listening (websockify's -D): the command returns when the port is bound; stdio goes to /dev/null and the working directory to /. See --pid-file, --log-file, --syslog.")
    var daemon = false

    @Option(name: .customLong("pid-file"), help: ArgumentHelp("Write the server's process id to FILE (with --daemon: the daemon's, before the command returns).", valueName: "FILE"))
    var pidFile: String?

    @Option(name: .customLong("wrap-mode"), help: ArgumentHelp("Wrap mode (-- COMMAND): when the program exits, exit (the bridge exits with its status), ignore, or respawn (not a fourth time within 10 s of three starts).", valueName: "MODE"))
    var wrapMode: String = "exit"

    @Option(name: [.customLong("ping-interval"), .customLong("heartbeat")], help: ArgumentHelp("Ping clients every S seconds; 0 = off. --heartbeat is websockify's name.", valueName: "S"))
    var pingInterval: Double = 30

    @Option(name: .customLong("pong-timeout"), help: ArgumentHelp("A client silent for S seconds after a ping is dead: both legs are closed.", valueName: "S"))
    var pongTimeout: Double = 30

    @Option(name: .customLong("max-frame-size"), help: ArgumentHelp("Largest client frame payload in bytes (1009 beyond). Payload is streamed: this is policy, not memory.", valueName: "BYTES"))
    var maxFrameSize: UInt64 = 64 << 20

    @Option(name: .customLong("close-timeout"), help: ArgumentHelp("Seconds allowed for each closing step (peer's Close, flushing to a backend, backend EOF).", valueName: "S"))
    var closeTimeout: Double = 5

    @Option(name: .customLong("stall-timeout"), help: ArgumentHelp("Close an HTTP answer (static file, health, metrics) that made no progress for S seconds: the client does not read.", valueName: "S"))
    var stallTimeout: Double = 15

    @Option(name: .customLong("shutdown-timeout"), help: ArgumentHelp("Seconds live sessions get after Close 1001 on SIGTERM/SIGINT.", valueName: "S"))
    var shutdownTimeout: Double = 10

    @Option(name: .customLong("read-buffer"), help: ArgumentHelp("Largest read from either socket of a session, in bytes (reads grow to it while full). Each backend read is one WebSocket message.", valueName: "BYTES"))
    var readBuffer: Int = 64 << 10

    @Option(name: .customLong("reads-per-cycle"), help: ArgumentHelp("Reads from one socket per event-loop turn. A session may take in up to N x --read-buffer beyond --write-buffer-high before backpressure stops it.", valueName: "N"))
    var readsPerCycle: Int = 4

    @Option(name: .customLong("write-buffer-high"), help: ArgumentHelp("Bytes queued for a socket above which the other side of the session stops being read (backpressure).", valueName: "BYTES"))
    var writeBufferHigh: Int = 256 << 10

    @Option(name: .customLong("write-buffer-low"), help: ArgumentHelp("Bytes queued for a socket below which reading the other side resumes.", valueName: "BYTES"))
    var writeBufferLow: Int = 64 << 10

    @Option(name: .customLong("threads"), help: ArgumentHelp("Event loop threads; each session lives on one. Default: one per core.", valueName: "N"))
    var threads: Int?

    @Option(name: .customLong("max-connections"), help: ArgumentHelp("Most sessions at once across the server; more get 503 with Retry-After. 0 = no limit.", valueName: "N"))
    var maxConnections: Int = 0

    @Option(name: .customLong("max-connections-per-client"), help: ArgumentHelp("Most sessions at once from one client address (503 beyond). 0 = no limit.", valueName: "N"))
    var maxConnectionsPerClient: Int = 0

    @Option(name: .customLong("max-handshakes"), help: ArgumentHelp("Most connections still in their handshake (no 101 yet) across the server; more are closed at once. 0 = no limit.", valueName: "N"))
    var maxHandshakes: Int = 4096

    @Option(name: .customLong("max-handshakes-per-ip"), help: ArgumentHelp("Most connections in their handshake from one client address (the peer, or its PROXY header's source); more are closed at once. 0 = no limit.", valueName: "N"))
    var maxHandshakesPerIP: Int = 1024

    @Option(name: .customLong("tcp-user-timeout"), help: ArgumentHelp("TCP_USER_TIMEOUT of both legs in seconds: a connection whose sent data stays unacknowledged (or unsent behind a zero window) this long is dropped by the kernel. 0 = the system's default.", valueName: "S"))
    var tcpUserTimeout: Double = 60

    @Option(name: .customLong("handshake-rate"), help: ArgumentHelp("Handshakes per second allowed per client address (429 with Retry-After beyond). 0 = no limit.", valueName: "R"))
    var handshakeRate: Double = 0

    @Option(name: .customLong("handshake-burst"), help: ArgumentHelp("Handshakes a client address may make at once before --handshake-rate applies.", valueName: "N"))
    var handshakeBurst: Int = 10

    @Option(name: .customLong("web"), help: ArgumentHelp("Serve the files of DIR for plain GET/HEAD requests on the WebSocket port (e.g. noVNC's page).", valueName: "DIR"))
    var web: String?

    @Flag(name: .customLong("web-listing"), help: "List directories that have no index.html (off by default).")
    var webListing = false

    @Flag(name: .customLong("web-auth"), help: "Apply the Origin rules (--origin, --require-origin) to static files too.")
    var webAuth = false

    @Flag(name: .customLong("file-only"), help: "websockify compatibility: directory listings are already off unless --web-listing.")
    var fileOnly = false

    @Option(name: .customLong("record"), help: ArgumentHelp("Record each session to PREFIX.N in websockify's format (noVNC playback). Recordings hold everything typed, passwords too: files are created mode 0600.", valueName: "PREFIX"))
    var record: String?

    @Option(name: .customLong("record-limit"), help: ArgumentHelp("Bytes of payload recorded per session at most; later traffic is left out.", valueName: "BYTES"))
    var recordLimit: Int = 64 << 20

    @Option(name: .customLong("metrics-listen"), help: ArgumentHelp("Where /metrics, /healthz and /readyz are served: ADDR:PORT, or 'off'. The default port is skipped with a warning when taken.", valueName: "ADDR:PORT"))
    var metricsListen: String = "127.0.0.1:9680"

    @Flag(name: .customLong("metrics-on-main-port"), help: "Also serve /metrics on the WebSocket port (/healthz and /readyz always are).")
    var metricsOnMainPort = false

    @Option(name: .customLong("unix-listen"), help: ArgumentHelp("Listen on this Unix-domain socket instead of TCP (no SOURCE_PORT then).", valueName: "PATH"))
    var unixListen: String?

    @Option(name: .customLong("unix-listen-mode"), help: ArgumentHelp("Octal file mode of the --unix-listen socket.", valueName: "MODE"))
    var unixListenMode: String = "0600"

    @Flag(name: .customLong("inetd"), help: "Serve on an already-listening socket passed as standard input (websockify compatibility). systemd socket activation (LISTEN_FDS) is detected by itself.")
    var inetd = false

    @Option(name: .customLong("cert"), help: ArgumentHelp("TLS certificate (PEM, chain allowed; the key may follow in the same file). Enables wss:// and https:// on the same port as ws://. Repeatable: later certificates answer the server names (SNI) they are issued for.", valueName: "FILE"))
    var certificates: [String] = []

    @Option(name: .customLong("key"), help: ArgumentHelp("Private key (PEM) of the --cert given in the same position.", valueName: "FILE"))
    var keys: [String] = []

    @Option(name: .customLong("key-password-file"), help: ArgumentHelp("File whose first line is the passphrase of encrypted keys (or set WSBRIDGE_KEY_PASSWORD). Never on the command line.", valueName: "FILE"))
    var keyPasswordFile: String?

    @Option(name: .customLong("key-password"), help: ArgumentHelp("Passphrase of encrypted keys, as websockify takes it. Visible to every user in ps: prefer --key-password-file or WSBRIDGE_KEY_PASSWORD (a warning is logged).", valueName: "PW"))
    var keyPasswordOnCommandLine: String?

    @Flag(name: .customLong("ssl-only"), help: "Refuse plain connections (a plain-text 400 'this port requires TLS').")
    var sslOnly = false

    @Option(name: .customLong("ssl-version"), help: ArgumentHelp("Oldest TLS version accepted: tlsv1_2 (default), tlsv1_3; tlsv1_1 and tlsv1 are accepted but weak.", valueName: "VERSION"))
    var sslVersion: String = "tlsv1_2"

    @Option(name: .customLong("ssl-ciphers"), help: ArgumentHelp("OpenSSL cipher string for TLS 1.2 (TLS 1.3 suites are fixed).", valueName: "LIST"))
    var sslCiphers: String?

    @Flag(name: .customLong("verify-client"), help: "Require a client certificate signed by --cafile (mutual TLS); plain connections are refused.")
    var verifyClient = false

    @Option(name: .customLong("cafile"), help: ArgumentHelp("CA bundle (PEM) for --verify-client; default: the system's CAs.", valueName: "FILE"))
    var cafile: String?

    @Flag(name: .customLong("ssl-target"), help: "Connect to backends over TLS (system CAs, certificate and name verified), websockify's option. YAML targets can set 'tls:' each.")
    var sslTarget = false

    @Option(name: .customLong("auth-plugin"), help: ArgumentHelp("websockify compatibility: 'BasicHTTPAuth' with --auth-source user:password, or 'ClientCertCNAuth' with --auth-source 'NAME NAME…' (client certificate CN or SAN; needs --verify-client).", valueName: "NAME"))
    var authPlugin: String?

    @Option(name: .customLong("auth-source"), help: ArgumentHelp("For --auth-plugin: user:password (BasicHTTPAuth) or space-separated names (ClientCertCNAuth).", valueName: "ARG"))
    var authSource: String?

    @Option(name: .customLong("auth-file"), help: ArgumentHelp("HTTP Basic credentials: lines user:HASH (bcrypt as made by htpasswd -B, $5$/$6$ crypt, yescrypt). Upgrades without valid credentials get 401.", valueName: "FILE"))
    var authFile: String?

    @Option(name: .customLong("trusted-proxy"), help: ArgumentHelp("A proxy (CIDR or address) whose forwarding header (--trusted-proxy-header) gives the client's address; repeatable.", valueName: "CIDR"))
    var trustedProxies: [String] = []

    @Option(name: .customLong("trusted-proxy-header"), help: ArgumentHelp("The one header a --trusted-proxy writes the client's address in: xff (X-Forwarded-For, appended by nginx and HAProxy) or forwarded (RFC 7239). The other is ignored: a client could send it.", valueName: "xff|forwarded"))
    var trustedProxyHeader: String = "xff"

    @Flag(name: .customLong("proxy-protocol"), help: "Every connection starts with a PROXY protocol v1/v2 header from a load balancer (from a --trusted-proxy peer when that list is given).")
    var proxyProtocol = false

    @Option(name: .customLong("log-format"), help: ArgumentHelp("text, or json (one object per line).", valueName: "FORMAT"))
    var logFormat: String = "text"

    @Option(name: .customLong("log-file"), help: ArgumentHelp("Also append log lines to FILE (as on stderr; reopened on SIGHUP, for logrotate).", valueName: "FILE"))
    var logFile: String?

    @Option(name: .customLong("syslog"), help: ArgumentHelp("Also send log lines to syslog: a local socket such as /dev/log, or UDP host:port; RFC 5424, facility user (daemon with --daemon).", valueName: "SERVER"))
    var syslog: String?

    @Flag(name: .customLong("legacy-syslog"), help: "With --syslog: the old BSD syslog format instead of RFC 5424.")
    var legacySyslog = false

    @Flag(name: .customLong("traffic"), help: "websockify compatibility: accepted. websockify's per-frame characters are not printed; each session's log line has the bytes each way.")
    var traffic = false

    @Flag(name: [.customShort("6"), .customLong("prefer-ipv6")], help: "Bind SOURCE_ADDR to its IPv6 address when it has one (websockify's -6). A bare port listens on IPv6 and IPv4 anyway.")
    var preferIPv6 = false

    @Flag(name: .customLong("libserver"), help: "websockify compatibility: accepted and ignored (a warning is logged).")
    var libserver = false

    @Option(name: .customLong("log-level"), help: ArgumentHelp("trace, debug, info, notice, warning, error or critical.", valueName: "LEVEL"))
    var logLevel: String = "info"

    @Flag(name: [.short, .customLong("verbose")], help: "Same as --log-level debug.")
    var verbose = false

    mutating func validate() throws {
        guard self.positional.count <= 2 else {
            throw ValidationError("at most two positional arguments: [SOURCE_ADDR:]SOURCE_PORT [TARGET_HOST:TARGET_PORT]")
        }
        if let plugin = self.tokenPlugin {
            if let refusal = WebsockifyPluginName.refusal(plugin, kind: .token, option: "--token-plugin") {
                throw ValidationError(refusal)
            }
            guard Self.plugin(named: plugin) != nil || Self.isRedisPlugin(plugin) || Self.isJWTPlugin(plugin)
                || Self.apiFormat(plugin) != nil
            else {
                throw ValidationError(
                    "--token-plugin \(plugin) is not supported; use TokenFile, ReadOnlyTokenFile, TokenFileName, UnixDomainSocketDirectory, TokenRedis, JWTTokenApi, BaseTokenAPI or JSONTokenApi"
                )
            }
            if Self.apiFormat(plugin) != nil, let url = self.tokenSource {
                guard url.hasPrefix("http://") || url.hasPrefix("https://"), url.contains("%s") else {
                    throw ValidationError("--token-plugin \(plugin) needs --token-source http(s)://…%s… (the token replaces %s)")
                }
            }
            if Self.isRedisPlugin(plugin), let source = self.tokenSource {
                do {
                    _ = try RedisTokenSource.parse(source)
                } catch {
                    throw ValidationError("\(error)")
                }
            }
            guard self.tokenSource != nil else { throw ValidationError("--token-plugin \(plugin) needs --token-source PATH") }
            guard self.targets == nil || Self.isJWTPlugin(plugin) else {
                throw ValidationError("give --targets or --token-plugin, not both (except JWTTokenApi, whose 'target' claim names a target of --targets)")
            }
        } else if self.tokenSource != nil {
            throw ValidationError("--token-source needs --token-plugin TokenFile")
        }
        if let template = self.tokenPath {
            guard template.hasPrefix("/"), template.components(separatedBy: "{token}").count == 2 else {
                throw ValidationError("--token-path must be a path with one {token} segment, such as /t/{token}")
            }
        }
        let modes = [self.positionalTarget != nil, self.targetsPath != nil || self.redisSource != nil || self.jwtSource != nil || self.apiSource != nil, self.unixTarget != nil].filter { $0 }.count
        guard modes <= 1 else {
            throw ValidationError("choose one of: a positional TARGET_HOST:TARGET_PORT, --targets FILE, --unix-target PATH")
        }
        guard modes == 1 else {
            if !self.wrapCommand.isEmpty {
                throw ValidationError("wrap mode needs the target the program serves: --unix-target PATH or TARGET_HOST:TARGET_PORT (making the program listen where the bridge relays, websockify's rebind.so, is not supported yet)")
            }
            throw ValidationError("no backend: give TARGET_HOST:TARGET_PORT, --targets FILE or --unix-target PATH")
        }
        for (name, value) in [
            ("--handshake-timeout", self.handshakeTimeout), ("--connect-timeout", self.connectTimeout),
            ("--pong-timeout", self.pongTimeout), ("--close-timeout", self.closeTimeout),
            ("--stall-timeout", self.stallTimeout),
            ("--shutdown-timeout", self.shutdownTimeout),
            ("--redis-timeout", self.redisTimeout), ("--token-api-timeout", self.tokenAPITimeout),
        ] where !(value > 0) {
            throw ValidationError("\(name) must be a positive number of seconds")
        }
        for (name, value) in [
            ("--idle-timeout", self.idleTimeout), ("--session-idle-timeout", self.sessionIdleTimeout), ("--timeout", self.timeout),
            ("--ping-interval", self.pingInterval), ("--tcp-user-timeout", self.tcpUserTimeout),
            ("--token-cache-ttl", self.tokenCacheTTL), ("--token-cache-negative-ttl", self.tokenCacheNegativeTTL),
            ("--token-stale-for", self.tokenStaleFor), ("--jwt-leeway", self.jwtLeeway),
            ("--token-reread-interval", self.tokenRereadInterval),
        ] where !(value >= 0) {
            throw ValidationError("\(name) must be 0 (off) or a positive number of seconds")
        }
        for (name, value) in [
            ("--max-connections", self.maxConnections), ("--max-connections-per-client", self.maxConnectionsPerClient),
            ("--max-handshakes", self.maxHandshakes), ("--max-handshakes-per-ip", self.maxHandshakesPerIP),
        ] where value < 0 {
            throw ValidationError("\(name) must be 0 (no limit) or a positive number")
        }
        guard self.tokenRereadInterval < self.handshakeTimeout else {
            throw ValidationError("--token-reread-interval must be shorter than --handshake-timeout (unknown tokens wait for the next re-read)")
        }
        guard self.recordLimit > 0 else { throw ValidationError("--record-limit must be positive") }
        guard self.handshakeRate >= 0 else { throw ValidationError("--handshake-rate must be 0 (off) or positive") }
        guard self.handshakeBurst >= 1 else { throw ValidationError("--handshake-burst must be at least 1") }
        guard self.maxFrameSize > 0 else { throw ValidationError("--max-frame-size must be positive") }
        guard self.readBuffer >= 64 else { throw ValidationError("--read-buffer must be at least 64 bytes") }
        guard self.writeBufferLow >= 0, self.writeBufferHigh > self.writeBufferLow else {
            throw ValidationError("--write-buffer-high must be larger than --write-buffer-low (and that at least 0)")
        }
        guard self.readsPerCycle >= 1 else { throw ValidationError("--reads-per-cycle must be at least 1") }
        guard (self.threads ?? 1) >= 1 else { throw ValidationError("--threads must be at least 1") }

        guard ["text", "json"].contains(self.logFormat) else { throw ValidationError("--log-format must be text or json") }
        guard let mode = UInt32(self.unixListenMode, radix: 8), mode <= 0o777 else {
            throw ValidationError("--unix-listen-mode must be an octal mode such as 0660")
        }
        _ = mode
        if self.effectiveCertificates.isEmpty {
            for (name, given) in [
                ("--key", !self.keys.isEmpty), ("--ssl-only", self.sslOnly), ("--verify-client", self.verifyClient),
                ("--cafile", self.cafile != nil), ("--key-password-file", self.keyPasswordFile != nil),
                ("--key-password", self.keyPasswordOnCommandLine != nil), ("--ssl-ciphers", self.sslCiphers != nil),
            ] where given {
                throw ValidationError("\(name) needs --cert FILE (or \(Self.defaultCertificate) in the working directory, as websockify)")
            }
        }
        if self.legacySyslog && self.syslog == nil {
            throw ValidationError("--legacy-syslog needs --syslog SERVER")
        }
        if let syslog = self.syslog, case .failure(let error) = SyslogWriter.Destination.parse(syslog) {
            throw ValidationError("\(error)")
        }
        guard ["exit", "ignore", "respawn"].contains(self.wrapMode) else {
            throw ValidationError("--wrap-mode must be exit, ignore or respawn")
        }
        if self.daemon && self.inetd {
            throw ValidationError("give --daemon or --inetd, not both (inetd starts the server itself)")
        }
        guard self.keys.isEmpty || self.keys.count == self.effectiveCertificates.count else {
            throw ValidationError("give one --key per --cert (or none: keys inside the certificate files)")
        }
        guard ServerTLSSettings.parseVersion(self.sslVersion) != nil else {
            throw ValidationError("--ssl-version must be tlsv1_2 (default), tlsv1_3, tlsv1_1 or tlsv1")
        }
        if self.cafile != nil && !self.verifyClient {
            throw ValidationError("--cafile is for --verify-client")
        }
        if let plugin = self.authPlugin {
            if let refusal = WebsockifyPluginName.refusal(plugin, kind: .auth, option: "--auth-plugin") {
                throw ValidationError(refusal)
            }
            switch Self.authPluginName(plugin) {
            case "BasicHTTPAuth":
                guard let source = self.authSource else { throw ValidationError("--auth-plugin BasicHTTPAuth needs --auth-source user:password") }
                do { _ = try BasicAuthenticator.parseSource(source) } catch { throw ValidationError("--auth-source must be user:password") }
                guard self.authFile == nil else { throw ValidationError("give --auth-plugin BasicHTTPAuth or --auth-file, not both") }
            case "ClientCertCNAuth":
                guard self.verifyClient else { throw ValidationError("--auth-plugin ClientCertCNAuth needs --verify-client") }
                guard let source = self.authSource, !source.split(separator: " ").isEmpty else {
                    throw ValidationError("--auth-plugin ClientCertCNAuth needs --auth-source 'NAME NAME…'")
                }
            default:
                throw ValidationError("--auth-plugin \(plugin) is not supported: use BasicHTTPAuth or ClientCertCNAuth (or --auth-file)")
            }
        } else if self.authSource != nil {
            throw ValidationError("--auth-source needs --auth-plugin BasicHTTPAuth or ClientCertCNAuth")
        }
        do {
            _ = try TrustedProxies(self.trustedProxies)
        } catch {
            throw ValidationError("--trusted-proxy: \(error)")
        }
        guard TrustedProxies.Header(rawValue: self.trustedProxyHeader) != nil else {
            throw ValidationError("--trusted-proxy-header must be xff (X-Forwarded-For) or forwarded")
        }
        if self.unixListen != nil && self.inetd {
            throw ValidationError("give --unix-listen or --inetd, not both")
        }
        guard Logger.Level(rawValue: self.logLevel.lowercased()) != nil else {
            throw ValidationError("--log-level must be one of trace, debug, info, notice, warning, error, critical")
        }
        if self.metricsListen != "off", case .failure(let error) = ListenAddress.parse(self.metricsListen) {
            throw ValidationError("--metrics-listen: \(error.message)")
        }
        if let listen = self.positionalListen, case .failure(let error) = ListenAddress.parse(listen) {
            throw ValidationError(error.message)
        }
        if let target = self.positionalTarget, case .failure(let error) = BackendAddress.parseHostPort(target) {
            throw ValidationError(error.message)
        }
        do {
            _ = try OriginAllowList(self.origins)
        } catch {
            throw ValidationError("--origin: \(error)")
        }
    }

    private var targetsPath: String? {
        if let plugin = self.tokenPlugin, Self.isRedisPlugin(plugin) || Self.isJWTPlugin(plugin) || Self.apiFormat(plugin) != nil {
            return self.targets
        }
        return self.targets ?? self.tokenSource
    }

    /// websockify's `--cert` default: used when it exists in the working directory and no `--cert` is given.
    static let defaultCertificate = "self.pem"

    /// `--cert`, or websockify's default `self.pem` when that file exists.
    private var effectiveCertificates: [String] {
        if !self.certificates.isEmpty { return self.certificates }
        return FileManager.default.fileExists(atPath: Self.defaultCertificate) ? [Self.defaultCertificate] : []
    }

    /// The key file or directory of websockify's `JWTTokenApi`.
    private var jwtSource: String? {
        guard let plugin = self.tokenPlugin, Self.isJWTPlugin(plugin) else { return nil }
        return self.tokenSource
    }

    /// websockify's HTTP token APIs: BaseTokenAPI answers `host:port`, JSONTokenApi JSON.
    static func apiFormat(_ name: String) -> HTTPTokenResolver.Format? {
        switch Self.tokenPluginName(name) {
        case "BaseTokenAPI": return .text
        case "JSONTokenApi": return .json
        default: return nil
        }
    }

    private var apiSource: (url: String, format: HTTPTokenResolver.Format)? {
        guard let plugin = self.tokenPlugin, let format = Self.apiFormat(plugin), let url = self.tokenSource else { return nil }
        return (url, format)
    }

    static func isJWTPlugin(_ name: String) -> Bool {
        Self.tokenPluginName(name) == "JWTTokenApi"
    }

    /// The token source is Redis (websockify's `TokenRedis`), looked up per connection rather than loaded.
    private var redisSource: String? {
        guard let plugin = self.tokenPlugin, Self.isRedisPlugin(plugin) else { return nil }
        return self.tokenSource
    }

    static func isRedisPlugin(_ name: String) -> Bool {
        Self.tokenPluginName(name) == "TokenRedis"
    }

    /// websockify's plugin names (also as dotted paths such as websockify.token_plugins.TokenFile): the format
    /// and whether the source is reloaded.
    static func plugin(named name: String) -> (format: TargetsLoader.Format, reloads: Bool)? {
        switch Self.tokenPluginName(name) {
        case "TokenFile": return (.targetsFiles, true)
        case "ReadOnlyTokenFile": return (.targetsFiles, false)
        case "TokenFileName": return (.tokenFileNames, true)
        case "UnixDomainSocketDirectory": return (.unixSocketDirectory, true)
        default: return nil
        }
    }

    /// The listening socket is not given by SOURCE_PORT (Unix socket, inetd, systemd): a single positional
    /// argument is then the target.
    private var listensWithoutPort: Bool {
        self.unixListen != nil || self.inetd || Self.systemdListener() != nil
    }

    private var positionalListen: String? {
        self.listensWithoutPort && self.positional.count == 1 ? nil : self.positional.first
    }

    private var positionalTarget: String? {
        if self.positional.count == 2 { return self.positional[1] }
        return self.listensWithoutPort && self.positional.count == 1 ? self.positional[0] : nil
    }

    /// systemd socket activation: the first passed descriptor (3), when LISTEN_PID names this process.
    static func systemdListener() -> CInt? {
        let environment = ProcessInfo.processInfo.environment
        guard let pid = environment["LISTEN_PID"].flatMap(Int32.init), pid == getpid(),
            let count = environment["LISTEN_FDS"].flatMap(Int.init), count >= 1
        else { return nil }
        return 3
    }

    /// Every option and whether it takes a value, for `WSBRIDGE_…` environment variables.
    static let environmentOptions: [(String, EnvironmentArguments.Kind)] = [
        ("targets", .option), ("token-plugin", .option), ("token-source", .option), ("token-path", .option),
        ("token-reread-interval", .option), ("token-cache-ttl", .option), ("token-cache-negative-ttl", .option), ("token-stale-for", .option),
        ("redis-username", .option), ("redis-revoke-channel", .option), ("redis-timeout", .option),
        ("token-api-timeout", .option), ("jwt-leeway", .option), ("jwt-audience", .option), ("jwt-issuer", .option), ("jwt-close-at-exp", .flag), ("host-token", .flag), ("unix-target", .option),
        ("origin", .repeatable), ("require-origin", .flag), ("handshake-timeout", .option),
        ("connect-timeout", .option), ("idle-timeout", .option), ("session-idle-timeout", .option), ("timeout", .option),
        ("run-once", .flag), ("daemon", .flag), ("pid-file", .option), ("wrap-mode", .option), ("log-file", .option),
        ("syslog", .option), ("legacy-syslog", .flag), ("traffic", .flag), ("prefer-ipv6", .flag), ("libserver", .flag),
        ("ping-interval", .option),
        ("pong-timeout", .option), ("max-frame-size", .option), ("close-timeout", .option), ("stall-timeout", .option),
        ("shutdown-timeout", .option), ("max-connections", .option), ("max-connections-per-client", .option),
        ("handshake-rate", .option), ("handshake-burst", .option), ("max-handshakes", .option), ("max-handshakes-per-ip", .option), ("tcp-user-timeout", .option), ("web", .option), ("web-listing", .flag), ("web-auth", .flag),
        ("file-only", .flag), ("record", .option), ("record-limit", .option), ("metrics-listen", .option),
        ("metrics-on-main-port", .flag), ("unix-listen", .option), ("unix-listen-mode", .option), ("inetd", .flag),
        ("log-format", .option), ("log-level", .option), ("verbose", .flag), ("read-buffer", .option),
        ("reads-per-cycle", .option), ("write-buffer-high", .option), ("write-buffer-low", .option), ("threads", .option),
        ("cert", .repeatable), ("key", .repeatable), ("key-password-file", .option), ("ssl-only", .flag),
        ("ssl-version", .option), ("ssl-ciphers", .option), ("verify-client", .flag), ("cafile", .option),
        ("ssl-target", .flag), ("auth-plugin", .option), ("auth-source", .option), ("auth-file", .option),
        ("trusted-proxy", .repeatable), ("trusted-proxy-header", .option), ("proxy-protocol", .flag),
    ]

    /// Like ArgumentParser's `main`, but options may come from `WSBRIDGE_…` variables and a bad command line is
    /// reported on one line (help still prints in full).
    static func main() async {
        if CommandLine.arguments.dropFirst().first == "check" {
            CheckCommand.main(Array(CommandLine.arguments.dropFirst(2)))
            return
        }
        if CommandLine.arguments.dropFirst().first == "healthcheck" {
            await HealthcheckCommand.main(Array(CommandLine.arguments.dropFirst(2)))
            return
        }
        let command: WSBridgeCommand
        do {
            var own = Array(CommandLine.arguments.dropFirst())
            if let terminator = own.firstIndex(of: "--") {
                Self.wrapCommandLine = Array(own[(terminator + 1)...])
                own = Array(own[..<terminator])
            }
            let arguments = try EnvironmentArguments.merge(
                arguments: own,
                environment: ProcessInfo.processInfo.environment,
                options: Self.environmentOptions
            )
            command = try Self.parse(arguments)
        } catch {
            if Self.exitCode(for: error) == .success { Self.exit(withError: error) }
            let message = Self.message(for: error).split(separator: "\n").first.map(String.init) ?? "invalid arguments"
            FileHandle.standardError.write(Data("wsbridge: \(message) (see wsbridge --help)\n".utf8))
            Foundation.exit(Self.exitCode(for: error).rawValue)
        }
        do {
            try await command.run()
        } catch {
            Self.exit(withError: error)
        }
    }

    func run() async throws {
        if self.daemon && !Daemon.isDaemon {
            // Started again in the background; this process ends once the daemon listens (or fails to).
            Daemon.spawnAndWait(arguments: Array(CommandLine.arguments.dropFirst()), pidFile: Daemon.absolute(self.pidFile), keepStandardInput: false)
        }
        var command = self
        if Daemon.isDaemon {
            command.makePathsAbsolute()
            Daemon.enterDaemon()
        }
        try await command.serve()
    }

    /// The daemon leaves its working directory: every path option is made absolute first.
    private mutating func makePathsAbsolute() {
        self.certificates = self.effectiveCertificates.map { Daemon.absolute($0)! }
        self.keys = self.keys.map { Daemon.absolute($0)! }
        if self.tokenPlugin.map({ Self.plugin(named: $0) != nil || Self.isJWTPlugin($0) }) ?? true {
            self.tokenSource = Daemon.absolute(self.tokenSource)
        }
        self.targets = Daemon.absolute(self.targets)
        self.keyPasswordFile = Daemon.absolute(self.keyPasswordFile)
        self.cafile = Daemon.absolute(self.cafile)
        self.web = Daemon.absolute(self.web)
        self.record = Daemon.absolute(self.record)
        self.authFile = Daemon.absolute(self.authFile)
        self.logFile = Daemon.absolute(self.logFile)
        self.pidFile = Daemon.absolute(self.pidFile)
        self.unixListen = Daemon.absolute(self.unixListen)
        self.unixTarget = Daemon.absolute(self.unixTarget)
        if let syslog = self.syslog, case .success(.local(let path)) = SyslogWriter.Destination.parse(syslog) {
            self.syslog = Daemon.absolute(path)
        }
    }

    private func serve() async throws {
        let level = self.verbose ? Logger.Level.debug : Logger.Level(rawValue: self.logLevel.lowercased()) ?? .info
        let json = self.logFormat == "json"
        let logFile = try self.logFile.map { path in try Self.orExit { try LogFile(path: path) } }
        let syslog = self.syslog.flatMap { try? SyslogWriter.Destination.parse($0).get() }.map {
            SyslogWriter(destination: $0, facility: Daemon.isDaemon ? .daemon : .user, legacy: self.legacySyslog)
        }
        LoggingSystem.bootstrap { label in
            var handlers: [any LogHandler] = []
            if json {
                handlers.append(JSONLogHandler(label: label, level: level))
            } else {
                var handler = StreamLogHandler.standardError(label: label)
                handler.logLevel = level
                handlers.append(handler)
            }
            if let logFile {
                if json {
                    handlers.append(JSONLogHandler(label: label, level: level, stream: { logFile.write($0) }))
                } else {
                    handlers.append(TextLogHandler(label: label, level: level, sink: { _, line in logFile.write(line + "\n") }))
                }
            }
            if let syslog {
                handlers.append(TextLogHandler(label: label, level: level, style: .syslog, sink: { level, line in syslog.send(line, level: level) }))
            }
            return handlers.count == 1 ? handlers[0] : MultiplexLogHandler(handlers)
        }
        let logger = Logger(label: "wsbridge")
        if self.keyPasswordOnCommandLine != nil {
            logger.warning("--key-password is visible to every user of this machine (ps, /proc): prefer --key-password-file FILE or WSBRIDGE_KEY_PASSWORD")
        }
        if self.libserver {
            logger.warning("--libserver is ignored: wsbridge has one server engine, with every option")
        }
        if self.traffic {
            logger.info("--traffic: per-frame traffic characters are not printed; each session's 'session closed' line has the bytes each way")
        }
        if let pidFile = self.pidFile, !Daemon.isDaemon, let error = Daemon.writePidFile(pidFile, pid: getpid()) {
            FileHandle.standardError.write(Data("wsbridge: \(error)\n".utf8))
            throw ExitCode.failure
        }

        let listen = try self.positionalListen.map { try ListenAddress.parse($0).get() } ?? ListenAddress(host: nil, port: 6080)
        let store: TargetsStore
        let origins = self.origins.isEmpty ? nil : try OriginAllowList(self.origins)
        let defaultTLS: BackendTLS? = self.sslTarget ? BackendTLS() : nil
        if let path = self.targetsPath {
            do {
                let format = self.tokenPlugin.flatMap(Self.plugin(named:))?.format ?? .targetsFiles
                var loader = TargetsLoader(path: path, format: format, extraOrigins: self.origins)
                loader.defaultTLS = defaultTLS
                store = try TargetsStore(loader: loader)
            } catch let error as TargetsFileError {
                FileHandle.standardError.write(Data("wsbridge: \(error)\n".utf8))
                throw ExitCode.failure
            }
        } else if self.redisSource != nil || self.jwtSource != nil || self.apiSource != nil {
            // Tokens are looked up in Redis per connection; the table itself stays empty.
            store = TargetsStore(fixed: TargetTable(mode: .tokens([:]), origins: origins))
        } else {
            let backend: BackendAddress
            if let unix = self.unixTarget {
                backend = .unix(path: unix)
            } else {
                backend = try BackendAddress.parseHostPort(self.positionalTarget!).get()
            }
            var target = Target(name: "default", backend: backend)
            if let defaultTLS, case .tcp = backend {
                target.tls = try Self.orExit { try defaultTLS.load() }
            }
            store = TargetsStore(fixed: TargetTable(mode: .single(target), origins: origins))
        }

        var configuration = BridgeConfiguration(
            host: listen.host,
            port: listen.port,
            requireOrigin: self.requireOrigin,
            handshakeTimeout: Self.seconds(self.handshakeTimeout),
            connectTimeout: Self.seconds(self.connectTimeout),
            idleTimeout: self.sessionIdleTimeout > 0 ? Self.seconds(self.sessionIdleTimeout) : nil,
            pingInterval: self.pingInterval > 0 ? Self.seconds(self.pingInterval) : nil,
            pongTimeout: Self.seconds(self.pongTimeout),
            maxFrameSize: self.maxFrameSize,
            closeTimeout: Self.seconds(self.closeTimeout),
            shutdownTimeout: Self.seconds(self.shutdownTimeout),
            writeBufferWaterMark: .init(low: self.writeBufferLow, high: self.writeBufferHigh),
            readBufferSize: self.readBuffer,
            maxReadsPerCycle: self.readsPerCycle,
            limits: .init(
                maxSessions: self.maxConnections > 0 ? self.maxConnections : nil,
                maxSessionsPerClient: self.maxConnectionsPerClient > 0 ? self.maxConnectionsPerClient : nil,
                handshakeRate: self.handshakeRate > 0 ? self.handshakeRate : nil,
                handshakeBurst: self.handshakeBurst
            ),
            metricsOnMainPort: self.metricsOnMainPort
        )
        configuration.maxHandshakes = self.maxHandshakes > 0 ? self.maxHandshakes : nil
        configuration.preferIPv6 = self.preferIPv6
        configuration.lifetime = .init(
            stopAfter: self.timeout > 0 ? Self.seconds(self.timeout) : nil,
            stopWhenIdleFor: self.idleTimeout > 0 ? Self.seconds(self.idleTimeout) : nil,
            stopAfterFirstSession: self.runOnce
        )
        configuration.maxHandshakesPerClient = self.maxHandshakesPerIP > 0 ? self.maxHandshakesPerIP : nil
        configuration.tcpUserTimeout = self.tcpUserTimeout > 0 ? Self.seconds(self.tcpUserTimeout) : nil
        configuration.stallTimeout = Self.seconds(self.stallTimeout)
        // ReadOnlyTokenFile reads once, as in websockify.
        let reloads = self.tokenPlugin.flatMap(Self.plugin(named:))?.reloads ?? true
        configuration.unknownTokenRereadInterval = reloads && self.tokenRereadInterval > 0 ? Self.seconds(self.tokenRereadInterval) : nil
        if let raised = ResourceLimits.raiseOpenFilesToHardLimit() {
            logger.debug("open files limit", metadata: ["limit": "\(raised)"])
        }
        if let path = self.unixListen {
            configuration.unixListenPath = path
            configuration.unixListenMode = mode_t(UInt32(self.unixListenMode, radix: 8)!)
        }
        if self.inetd {
            configuration.inheritedListener = 0
        } else if let descriptor = Self.systemdListener() {
            logger.info("using the socket passed by systemd (LISTEN_FDS)")
            configuration.inheritedListener = descriptor
        }
        if let web = self.web {
            do {
                configuration.staticFiles = try StaticFiles(root: web, listDirectories: self.webListing && !self.fileOnly)
                configuration.staticFilesUseAccessRules = self.webAuth
            } catch {
                FileHandle.standardError.write(Data("wsbridge: \(error)\n".utf8))
                throw ExitCode.failure
            }
        }
        if let record = self.record {
            configuration.recording = RecordingPolicy(prefix: record, limit: self.recordLimit)
            logger.warning("recording every session to \(record).N: recordings contain everything typed")
        }
        var tlsStore: ServerTLSStore?
        let certificates = self.effectiveCertificates
        if !certificates.isEmpty {
            if self.certificates.isEmpty { logger.info("TLS with \(Self.defaultCertificate) from the working directory (websockify's default --cert)") }
            let pairs = certificates.enumerated().map { index, certificate in
                ServerTLSSettings.CertificatePair(certificate: certificate, key: self.keys.isEmpty ? nil : self.keys[index])
            }
            let environmentPassword = ProcessInfo.processInfo.environment["WSBRIDGE_KEY_PASSWORD"].map { Array($0.utf8) }
            let settings = ServerTLSSettings(
                certificates: pairs,
                keyPassword: environmentPassword ?? self.keyPasswordOnCommandLine.map { Array($0.utf8) },
                keyPasswordFile: self.keyPasswordFile,
                minimumVersion: ServerTLSSettings.parseVersion(self.sslVersion)!,
                ciphers: self.sslCiphers,
                sslOnly: self.sslOnly,
                verifyClient: self.verifyClient,
                clientCA: self.cafile,
                shutdownTimeout: Self.seconds(self.closeTimeout)
            )
            let store = try Self.orExit { try ServerTLSStore(settings: settings) }
            configuration.tls = store
            tlsStore = store
        }
        if let source = self.authSource, self.authPlugin.map(Self.authPluginName) == "ClientCertCNAuth" {
            configuration.clientCertNames = source.split(separator: " ").map(String.init)
        } else if let source = self.authSource {
            configuration.authenticator = BasicAuthenticator(users: try Self.orExit { try BasicAuthenticator.parseSource(source) })
        } else if let file = self.authFile {
            configuration.authenticator = BasicAuthenticator(users: try Self.orExit { try BasicAuthenticator.loadFile(file) })
        }
        // The credentials file is re-read on change and on SIGHUP (its own subscription, trapped before listening).
        let credentialsHangups: UnixSignalsSequence? = self.authFile == nil ? nil : await UnixSignalsSequence(trapping: .sighup)
        let logFileHangups: UnixSignalsSequence? = logFile == nil ? nil : await UnixSignalsSequence(trapping: .sighup)
        configuration.trustedProxies = try TrustedProxies(self.trustedProxies, header: TrustedProxies.Header(rawValue: self.trustedProxyHeader)!)
        configuration.proxyProtocol = self.proxyProtocol
        if store.current.origins == nil {
            logger.warning("no --origin allow-list: WebSocket connections from any web page are accepted")
        }
        tlsStore?.logCurrent(logger: logger)
        configuration.tokenSources = .init(pathTemplate: self.tokenPath, hostToken: self.hostToken)
        // SIGHUP is trapped before anything listens: a reload request right after start must not kill us.
        let hangups = await UnixSignalsSequence(trapping: .sighup)
        // The certificates' own SIGHUP subscription (each sequence gets every signal).
        let tlsHangups: UnixSignalsSequence? = tlsStore == nil ? nil : await UnixSignalsSequence(trapping: .sighup)
        let group = MultiThreadedEventLoopGroup(numberOfThreads: self.threads ?? System.coreCount)
        let metrics = BridgeMetrics()
        store.reportWarnings(logger: logger, metrics: metrics)
        var resolver: RedisTokenResolver?
        var jwt: JWTTokenResolver?
        if let keys = self.jwtSource {
            do {
                jwt = try await JWTTokenResolver(
                    path: keys,
                    options: .init(
                        leeway: self.jwtLeeway,
                        audience: self.jwtAudience,
                        issuer: self.jwtIssuer,
                        closeAtExpiry: self.jwtCloseAtExp
                    ),
                    targets: store,
                    logger: logger,
                    hangups: await UnixSignalsSequence(trapping: .sighup)
                )
            } catch {
                FileHandle.standardError.write(Data("wsbridge: \(error)\n".utf8))
                throw ExitCode.failure
            }
            logger.info("signed tokens (JWS)", metadata: ["keys": "\(jwt!.keyCount)", "source": "\(keys)"])
        }
        if let source = self.redisSource {
            var parsed = try RedisTokenSource.parse(source)
            parsed.endpoint.username = self.redisUsername
            resolver = RedisTokenResolver(
                source: parsed,
                revokeChannel: self.redisRevokeChannel == "off" ? nil : self.redisRevokeChannel,
                cache: .init(
                    ttl: Self.seconds(self.tokenCacheTTL),
                    negativeTTL: Self.seconds(self.tokenCacheNegativeTTL),
                    staleFor: Self.seconds(self.tokenStaleFor)
                ),
                timeout: Self.seconds(self.redisTimeout),
                group: group,
                logger: logger
            )
            logger.info(
                "tokens from redis",
                metadata: [
                    "redis": "\(parsed.endpoint.host):\(parsed.endpoint.port)", "db": "\(parsed.endpoint.database)",
                    "namespace": "\(parsed.namespace)", "revoke_channel": "\(self.redisRevokeChannel)",
                ]
            )
        }
        var api: HTTPTokenResolver?
        if let (url, format) = self.apiSource {
            api = HTTPTokenResolver(
                urlTemplate: url,
                format: format,
                cache: .init(
                    ttl: Self.seconds(self.tokenCacheTTL),
                    negativeTTL: Self.seconds(self.tokenCacheNegativeTTL),
                    staleFor: Self.seconds(self.tokenStaleFor)
                ),
                timeout: Self.seconds(self.tokenAPITimeout),
                group: group,
                logger: logger
            )
            logger.info("tokens from an HTTP API", metadata: ["url": "\(url)"])
        }
        let server = BridgeServer(
            configuration: configuration,
            targets: store,
            group: group,
            logger: logger,
            metrics: metrics,
            resolver: (resolver as (any TokenResolver)?) ?? jwt ?? api,
            onServerRunning: { _ in
                // The daemon listens: the original process, which relayed the start-up lines, returns.
                if Daemon.isDaemon { Daemon.detachStandardError() }
            }
        )
        if let resolver {
            resolver.onRevoke { [weak server] token in server?.revokeSessions(token: token) }
        }
        let tokenService: (any Service)? = resolver ?? jwt ?? api
        // Shutdown runs in reverse order: the bridge drains while the metrics listener still answers /readyz.
        var services: [any Service] = []
        if self.metricsListen != "off" {
            let address = try ListenAddress.parse(self.metricsListen).get()
            services.append(
                MetricsServer(
                    host: address.host ?? "::",
                    port: address.port,
                    metrics: metrics,
                    readiness: server.readiness,
                    group: group,
                    logger: logger,
                    optional: self.metricsListen == "127.0.0.1:9680",
                    headTimeout: configuration.handshakeTimeout,
                    stallTimeout: configuration.stallTimeout
                )
            )
        }
        if let tokenService { services.append(tokenService) }
        // Started with the server, stopped after it (shutdown runs in reverse order).
        let wrapped = self.wrapCommand.isEmpty
            ? nil : WrappedCommand(command: self.wrapCommand, mode: WrappedCommand.Mode(rawValue: self.wrapMode)!, logger: logger)
        if let wrapped { services.append(wrapped) }
        services.append(server)
        // ReadOnlyTokenFile reads once: no watcher (SIGHUP stays trapped, and does nothing).
        if store.loader != nil, self.tokenPlugin.flatMap(Self.plugin(named:))?.reloads ?? true {
            services.append(TargetsWatcher(store: store, logger: logger, metrics: metrics, hangups: hangups))
        }
        if let tlsStore {
            services.append(ServerTLSWatcher(store: tlsStore, logger: logger, hangups: tlsHangups))
        }
        if let logFile, let logFileHangups {
            services.append(LogFileReopener(file: logFile, logger: logger, hangups: logFileHangups))
        }
        if let file = self.authFile, let authenticator = configuration.authenticator {
            services.append(CredentialsWatcher(path: file, authenticator: authenticator, logger: logger, hangups: credentialsHangups))
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
            withExtendedLifetime(hangups) {}
            withExtendedLifetime(tlsHangups) {}
            withExtendedLifetime(credentialsHangups) {}
            withExtendedLifetime(logFileHangups) {}
        } catch {
            logger.error("\(error)")
            try? await group.shutdownGracefully()
            throw ExitCode.failure
        }
        try await group.shutdownGracefully()
        if let pidFile = self.pidFile { unlink(pidFile) }
        if let status = wrapped?.exitStatus, status != 0 {
            // --wrap-mode exit: the bridge ends with the wrapped program's status, as websockify does.
            throw ExitCode(status)
        }
    }

    /// websockify's plugin name without its module path (`websockify.auth_plugins.BasicHTTPAuth`); another
    /// module's dotted name stays as it is (and names no plugin).
    static func authPluginName(_ plugin: String) -> String {
        WebsockifyPluginName.builtIn(plugin, kind: .auth) ?? plugin
    }

    /// websockify's token plugin name without its module path (`websockify.token_plugins.TokenFile`); another
    /// module's dotted name stays as it is (and names no plugin).
    static func tokenPluginName(_ plugin: String) -> String {
        WebsockifyPluginName.builtIn(plugin, kind: .token) ?? plugin
    }

    /// Runs `body`; a file error ends the process with one line on stderr and exit code 1.
    private static func orExit<T>(_ body: () throws -> T) throws -> T {
        do {
            return try body()
        } catch {
            FileHandle.standardError.write(Data("wsbridge: \(error)\n".utf8))
            throw ExitCode.failure
        }
    }

    private static func seconds(_ value: Double) -> TimeAmount {
        .nanoseconds(Int64((value * 1e9).rounded()))
    }
}
