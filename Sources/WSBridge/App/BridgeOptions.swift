import ArgumentParser

/// The command line of `wsbridge`, declared once: websockify's grammar and options, and ours. Each option is also
/// read from the environment (`WSBRIDGE_…`, derived from these declarations by `EnvironmentArguments`).
/// `configuration(...)` maps the parsed options to a `Configuration` (BridgeOptions+Configuration.swift); this
/// file holds nothing but the declarations.
public struct BridgeOptions: ParsableArguments {
    public init() {}

    @Argument(
        help:
            "[SOURCE_ADDR:]SOURCE_PORT to listen on (default 6080, all addresses), then optionally TARGET_HOST:TARGET_PORT."
    )
    var positional: [String] = []

    @Option(
        name: [.customLong("targets"), .customLong("target-config")],
        help: ArgumentHelp(
            "Targets file or directory (YAML if .yaml/.yml, else websockify's 'token: host:port'). --target-config is websockify's deprecated alias.",
            valueName: "FILE"
        )
    )
    var targets: String?

    @Option(
        name: .customLong("token-plugin"),
        help: ArgumentHelp(
            "websockify's token plugins: TokenFile (reloaded on change), ReadOnlyTokenFile (read once), TokenFileName (a directory: file name = token, content = host:port), UnixDomainSocketDirectory (a directory: socket name = token). Use with --token-source.",
            valueName: "NAME"
        )
    )
    var tokenPlugin: String?

    @Option(
        name: .customLong("token-source"),
        help: ArgumentHelp("The file or directory of --token-plugin.", valueName: "PATH")
    )
    var tokenSource: String?

    @Option(
        name: .customLong("token-reread-interval"),
        help: ArgumentHelp(
            "A token the targets files do not know re-reads them first when they changed (as websockify reads them at every lookup): at most once per S seconds, unknown tokens in between wait for the next look; 0 = only the poll and SIGHUP.",
            valueName: "S"
        )
    )
    var tokenRereadInterval: Double = 0.25

    @Option(
        name: .customLong("token-cache-ttl"),
        help: ArgumentHelp(
            "Seconds a token service's answer (TokenRedis, BaseTokenAPI, JSONTokenApi) is reused; 0 (default) = ask at every connection, as websockify does.",
            valueName: "S"
        )
    )
    var tokenCacheTTL: Double = 0

    @Option(
        name: .customLong("token-cache-negative-ttl"),
        help: ArgumentHelp(
            "Seconds an unknown token stays unknown without asking the token service again; 0 (default) = ask every time.",
            valueName: "S"
        )
    )
    var tokenCacheNegativeTTL: Double = 0

    @Option(
        name: .customLong("token-stale-for"),
        help: ArgumentHelp(
            "While the token service is unreachable, keep admitting a token whose last answer is at most S seconds old (answers are kept that long for this only); 0 = refuse (503).",
            valueName: "S"
        )
    )
    var tokenStaleFor: Double = 0

    @Option(
        name: .customLong("redis-username"),
        help: ArgumentHelp(
            "TokenRedis: ACL user name for AUTH (the password is the 4th field of --token-source).",
            valueName: "NAME"
        )
    )
    var redisUsername: String?

    @Option(
        name: .customLong("redis-revoke-channel"),
        help: ArgumentHelp(
            "TokenRedis: pub/sub channel whose messages (a token each) close that token's live sessions with 1008; 'off' disables.",
            valueName: "NAME"
        )
    )
    var redisRevokeChannel: String = "wsbridge:revoke"

    @Option(
        name: .customLong("redis-timeout"),
        help: ArgumentHelp("TokenRedis: bound for connecting to Redis and for each lookup, in seconds.", valueName: "S")
    )
    var redisTimeout: Double = 1

    @Option(
        name: .customLong("token-api-timeout"),
        help: ArgumentHelp(
            "BaseTokenAPI/JSONTokenApi: bound for each HTTP lookup (connect and answer), in seconds.",
            valueName: "S"
        )
    )
    var tokenAPITimeout: Double = 2

    @Option(
        name: .customLong("jwt-leeway"),
        help: ArgumentHelp("JWTTokenApi: seconds of clock skew allowed for exp and nbf.", valueName: "S")
    )
    var jwtLeeway: Double = 5

    @Option(
        name: .customLong("jwt-audience"),
        help: ArgumentHelp("JWTTokenApi: require this value in the token's aud claim.", valueName: "AUD")
    )
    var jwtAudience: String?

    @Flag(
        name: .customLong("jwt-close-at-exp"),
        help: "JWTTokenApi: close a session with 1008 'token expired' when its token's exp passes."
    )
    var jwtCloseAtExp = false

    @Option(
        name: .customLong("jwt-issuer"),
        help: ArgumentHelp("JWTTokenApi: require this iss claim.", valueName: "ISS")
    )
    var jwtIssuer: String?

    @Option(
        name: .customLong("token-path"),
        help: ArgumentHelp("Also take the token from a path segment, e.g. /t/{token}.", valueName: "TEMPLATE")
    )
    var tokenPath: String?

    @Flag(
        name: .customLong("host-token"),
        help: "websockify compatibility: the Host header (without port) is the token, and the only source."
    )
    var hostToken = false

    @Option(
        name: .customLong("unix-target"),
        help: ArgumentHelp("Single-target mode to a Unix socket.", valueName: "PATH")
    )
    var unixTarget: String?

    @Option(
        name: .customLong("origin"),
        help: ArgumentHelp(
            "Allowed Origin, exact or wildcard subdomain (https://*.example.com); repeatable. Default: any origin (a warning is logged).",
            valueName: "ORIGIN"
        )
    )
    var origins: [String] = []

    @Flag(name: .customLong("require-origin"), help: "Refuse requests without an Origin header (403).")
    var requireOrigin = false

    @Option(
        name: .customLong("handshake-timeout"),
        help: ArgumentHelp(
            "Seconds from accept to the end of admission (PROXY header, TLS handshake, request head, authentication, token services): then 408, or a plain close before the request can be read.",
            valueName: "S"
        )
    )
    var handshakeTimeout: Double = 10

    @Option(
        name: .customLong("connect-timeout"),
        help: ArgumentHelp("Backend connect timeout in seconds.", valueName: "S")
    )
    var connectTimeout: Double = 10

    @Option(
        name: .customLong("session-idle-timeout"),
        help: ArgumentHelp(
            "Close a session (1001 'idle timeout') after S seconds without data either way; 0 = off. (--idle-timeout has websockify's meaning.)",
            valueName: "S"
        )
    )
    var sessionIdleTimeout: Double = 0

    @Option(
        name: .customLong("idle-timeout"),
        help: ArgumentHelp(
            "websockify: the server exits after S seconds without a WebSocket session (counted from the start and from the end of the last one); 0 = never. Idle sessions: --session-idle-timeout.",
            valueName: "S"
        )
    )
    var idleTimeout: Double = 0

    @Option(
        name: .customLong("timeout"),
        help: ArgumentHelp(
            "websockify: stop listening S seconds after the start; the live sessions go on, and the server exits once they have ended. 0 = never.",
            valueName: "S"
        )
    )
    var timeout: Double = 0

    @Flag(
        name: .customLong("run-once"),
        help:
            "websockify: exit after the first WebSocket session has ended (refused upgrades and static files do not count)."
    )
    var runOnce = false

    @Flag(
        name: [.customShort("D"), .customLong("daemon")],
        help:
            "Run in the background once listening (websockify's -D): the command returns when the port is bound; stdio goes to /dev/null and the working directory to /. See --pid-file, --log-file, --syslog."
    )
    var daemon = false

    @Option(
        name: .customLong("pid-file"),
        help: ArgumentHelp(
            "Write the server's process id to FILE (with --daemon: the daemon's, before the command returns).",
            valueName: "FILE"
        )
    )
    var pidFile: String?

    @Option(
        name: .customLong("wrap-mode"),
        help: ArgumentHelp(
            "Wrap mode (-- COMMAND): when the program exits, exit (the bridge exits with its status), ignore, or respawn (not a fourth time within 10 s of three starts).",
            valueName: "MODE"
        )
    )
    var wrapMode: String = "exit"

    @Option(
        name: [.customLong("ping-interval"), .customLong("heartbeat")],
        help: ArgumentHelp("Ping clients every S seconds; 0 = off. --heartbeat is websockify's name.", valueName: "S")
    )
    var pingInterval: Double = 30

    @Option(
        name: .customLong("pong-timeout"),
        help: ArgumentHelp("A client silent for S seconds after a ping is dead: both legs are closed.", valueName: "S")
    )
    var pongTimeout: Double = 30

    @Option(
        name: .customLong("max-frame-size"),
        help: ArgumentHelp(
            "Largest client frame payload in bytes (1009 beyond). Payload is streamed: this is policy, not memory.",
            valueName: "BYTES"
        )
    )
    var maxFrameSize: UInt64 = 64 << 20

    @Option(
        name: .customLong("close-timeout"),
        help: ArgumentHelp(
            "Seconds allowed for each closing step (peer's Close, flushing to a backend, backend EOF).",
            valueName: "S"
        )
    )
    var closeTimeout: Double = 5

    @Option(
        name: .customLong("stall-timeout"),
        help: ArgumentHelp(
            "Close an HTTP answer (static file, health, metrics) that made no progress for S seconds: the client does not read.",
            valueName: "S"
        )
    )
    var stallTimeout: Double = 15

    @Option(
        name: .customLong("shutdown-timeout"),
        help: ArgumentHelp("Seconds live sessions get after Close 1001 on SIGTERM/SIGINT.", valueName: "S")
    )
    var shutdownTimeout: Double = 10

    @Option(
        name: .customLong("read-buffer"),
        help: ArgumentHelp(
            "Largest read from either socket of a session, in bytes (reads grow to it while full). Each backend read is one WebSocket message.",
            valueName: "BYTES"
        )
    )
    var readBuffer: Int = 64 << 10

    @Option(
        name: .customLong("reads-per-cycle"),
        help: ArgumentHelp(
            "Reads from one socket per event-loop turn. A session may take in up to N x --read-buffer beyond --write-buffer-high before backpressure stops it.",
            valueName: "N"
        )
    )
    var readsPerCycle: Int = 4

    @Option(
        name: .customLong("write-buffer-high"),
        help: ArgumentHelp(
            "Bytes queued for a socket above which the other side of the session stops being read (backpressure).",
            valueName: "BYTES"
        )
    )
    var writeBufferHigh: Int = 256 << 10

    @Option(
        name: .customLong("write-buffer-low"),
        help: ArgumentHelp("Bytes queued for a socket below which reading the other side resumes.", valueName: "BYTES")
    )
    var writeBufferLow: Int = 64 << 10

    @Option(
        name: .customLong("threads"),
        help: ArgumentHelp("Event loop threads; each session lives on one. Default: one per core.", valueName: "N")
    )
    var threads: Int?

    @Option(
        name: .customLong("max-connections"),
        help: ArgumentHelp(
            "Most sessions at once across the server; more get 503 with Retry-After. 0 = no limit.",
            valueName: "N"
        )
    )
    var maxConnections: Int = 0

    @Option(
        name: .customLong("max-connections-per-client"),
        help: ArgumentHelp("Most sessions at once from one client address (503 beyond). 0 = no limit.", valueName: "N")
    )
    var maxConnectionsPerClient: Int = 0

    @Option(
        name: .customLong("max-handshakes"),
        help: ArgumentHelp(
            "Most connections still in their handshake (no 101 yet) across the server; more are closed at once. 0 = no limit.",
            valueName: "N"
        )
    )
    var maxHandshakes: Int = 4096

    @Option(
        name: .customLong("max-handshakes-per-ip"),
        help: ArgumentHelp(
            "Most connections in their handshake from one client address (the peer, or its PROXY header's source); more are closed at once. 0 = no limit.",
            valueName: "N"
        )
    )
    var maxHandshakesPerIP: Int = 1024

    @Option(
        name: .customLong("tcp-user-timeout"),
        help: ArgumentHelp(
            "TCP_USER_TIMEOUT of both legs in seconds: a connection whose sent data stays unacknowledged (or unsent behind a zero window) this long is dropped by the kernel. 0 = the system's default.",
            valueName: "S"
        )
    )
    var tcpUserTimeout: Double = 60

    @Option(
        name: .customLong("handshake-rate"),
        help: ArgumentHelp(
            "Handshakes per second allowed per client address (429 with Retry-After beyond). 0 = no limit.",
            valueName: "R"
        )
    )
    var handshakeRate: Double = 0

    @Option(
        name: .customLong("handshake-burst"),
        help: ArgumentHelp(
            "Handshakes a client address may make at once before --handshake-rate applies.",
            valueName: "N"
        )
    )
    var handshakeBurst: Int = 10

    @Option(
        name: .customLong("web"),
        help: ArgumentHelp(
            "Serve the files of DIR for plain GET/HEAD requests on the WebSocket port (e.g. noVNC's page).",
            valueName: "DIR"
        )
    )
    var web: String?

    @Flag(name: .customLong("web-listing"), help: "List directories that have no index.html (off by default).")
    var webListing = false

    @Flag(
        name: .customLong("web-auth"),
        help: "Apply the Origin rules (--origin, --require-origin) to static files too."
    )
    var webAuth = false

    @Flag(
        name: .customLong("file-only"),
        help: "websockify compatibility: directory listings are already off unless --web-listing."
    )
    var fileOnly = false

    @Option(
        name: .customLong("record"),
        help: ArgumentHelp(
            "Record each session to PREFIX.N in websockify's format (noVNC playback). Recordings hold everything typed, passwords too: files are created mode 0600.",
            valueName: "PREFIX"
        )
    )
    var record: String?

    @Option(
        name: .customLong("record-limit"),
        help: ArgumentHelp(
            "Bytes of payload recorded per session at most; later traffic is left out.",
            valueName: "BYTES"
        )
    )
    var recordLimit: Int = 64 << 20

    @Option(
        name: .customLong("metrics-listen"),
        help: ArgumentHelp(
            "Where /metrics, /healthz and /readyz are served: ADDR:PORT, or 'off'. The default port is skipped with a warning when taken.",
            valueName: "ADDR:PORT"
        )
    )
    var metricsListen: String = "127.0.0.1:9680"

    @Flag(
        name: .customLong("metrics-on-main-port"),
        help: "Also serve /metrics on the WebSocket port (/healthz and /readyz always are)."
    )
    var metricsOnMainPort = false

    @Option(
        name: .customLong("unix-listen"),
        help: ArgumentHelp("Listen on this Unix-domain socket instead of TCP (no SOURCE_PORT then).", valueName: "PATH")
    )
    var unixListen: String?

    @Option(
        name: .customLong("unix-listen-mode"),
        help: ArgumentHelp("Octal file mode of the --unix-listen socket.", valueName: "MODE")
    )
    var unixListenMode: String = "0600"

    @Flag(
        name: .customLong("inetd"),
        help:
            "Serve on an already-listening socket passed as standard input (websockify compatibility). systemd socket activation (LISTEN_FDS) is detected by itself."
    )
    var inetd = false

    @Option(
        name: .customLong("cert"),
        help: ArgumentHelp(
            "TLS certificate (PEM, chain allowed; the key may follow in the same file). Enables wss:// and https:// on the same port as ws://. Repeatable: later certificates answer the server names (SNI) they are issued for.",
            valueName: "FILE"
        )
    )
    var certificates: [String] = []

    @Option(
        name: .customLong("key"),
        help: ArgumentHelp("Private key (PEM) of the --cert given in the same position.", valueName: "FILE")
    )
    var keys: [String] = []

    @Option(
        name: .customLong("key-password-file"),
        help: ArgumentHelp(
            "File whose first line is the passphrase of encrypted keys (or set WSBRIDGE_KEY_PASSWORD). Never on the command line.",
            valueName: "FILE"
        )
    )
    var keyPasswordFile: String?

    @Option(
        name: .customLong("key-password"),
        help: ArgumentHelp(
            "Passphrase of encrypted keys, as websockify takes it. Visible to every user in ps: prefer --key-password-file or WSBRIDGE_KEY_PASSWORD (a warning is logged).",
            valueName: "PW"
        )
    )
    var keyPasswordOnCommandLine: String?

    @Flag(name: .customLong("ssl-only"), help: "Refuse plain connections (a plain-text 400 'this port requires TLS').")
    var sslOnly = false

    @Option(
        name: .customLong("ssl-version"),
        help: ArgumentHelp(
            "Oldest TLS version accepted: tlsv1_2 (default), tlsv1_3; tlsv1_1 and tlsv1 are accepted but weak.",
            valueName: "VERSION"
        )
    )
    var sslVersion: String = "tlsv1_2"

    @Option(
        name: .customLong("ssl-ciphers"),
        help: ArgumentHelp("OpenSSL cipher string for TLS 1.2 (TLS 1.3 suites are fixed).", valueName: "LIST")
    )
    var sslCiphers: String?

    @Flag(
        name: .customLong("verify-client"),
        help: "Require a client certificate signed by --cafile (mutual TLS); plain connections are refused."
    )
    var verifyClient = false

    @Option(
        name: .customLong("cafile"),
        help: ArgumentHelp("CA bundle (PEM) for --verify-client; default: the system's CAs.", valueName: "FILE")
    )
    var cafile: String?

    @Flag(
        name: .customLong("ssl-target"),
        help:
            "Connect to backends over TLS (system CAs, certificate and name verified), websockify's option. YAML targets can set 'tls:' each."
    )
    var sslTarget = false

    @Option(
        name: .customLong("auth-plugin"),
        help: ArgumentHelp(
            "websockify compatibility: 'BasicHTTPAuth' with --auth-source user:password, or 'ClientCertCNAuth' with --auth-source 'NAME NAME…' (client certificate CN or SAN; needs --verify-client).",
            valueName: "NAME"
        )
    )
    var authPlugin: String?

    @Option(
        name: .customLong("auth-source"),
        help: ArgumentHelp(
            "For --auth-plugin: user:password (BasicHTTPAuth) or space-separated names (ClientCertCNAuth).",
            valueName: "ARG"
        )
    )
    var authSource: String?

    @Option(
        name: .customLong("auth-file"),
        help: ArgumentHelp(
            "HTTP Basic credentials: lines user:HASH (bcrypt as made by htpasswd -B, $5$/$6$ crypt, yescrypt). Upgrades without valid credentials get 401.",
            valueName: "FILE"
        )
    )
    var authFile: String?

    @Option(
        name: .customLong("trusted-proxy"),
        help: ArgumentHelp(
            "A proxy (CIDR or address) whose forwarding header (--trusted-proxy-header) gives the client's address; repeatable.",
            valueName: "CIDR"
        )
    )
    var trustedProxies: [String] = []

    @Option(
        name: .customLong("trusted-proxy-header"),
        help: ArgumentHelp(
            "The one header a --trusted-proxy writes the client's address in: xff (X-Forwarded-For, appended by nginx and HAProxy) or forwarded (RFC 7239). The other is ignored: a client could send it.",
            valueName: "xff|forwarded"
        )
    )
    var trustedProxyHeader: String = "xff"

    @Flag(
        name: .customLong("proxy-protocol"),
        help:
            "Every connection starts with a PROXY protocol v1/v2 header from a load balancer (from a --trusted-proxy peer when that list is given)."
    )
    var proxyProtocol = false

    @Option(
        name: .customLong("log-format"),
        help: ArgumentHelp("text, or json (one object per line).", valueName: "FORMAT")
    )
    var logFormat: String = "text"

    @Option(
        name: .customLong("log-file"),
        help: ArgumentHelp(
            "Also append log lines to FILE (as on stderr; reopened on SIGHUP, for logrotate).",
            valueName: "FILE"
        )
    )
    var logFile: String?

    @Option(
        name: .customLong("syslog"),
        help: ArgumentHelp(
            "Also send log lines to syslog: a local socket such as /dev/log, or UDP host:port; RFC 5424, facility user (daemon with --daemon).",
            valueName: "SERVER"
        )
    )
    var syslog: String?

    @Flag(name: .customLong("legacy-syslog"), help: "With --syslog: the old BSD syslog format instead of RFC 5424.")
    var legacySyslog = false

    @Flag(
        name: .customLong("traffic"),
        help:
            "websockify compatibility: accepted. websockify's per-frame characters are not printed; each session's log line has the bytes each way."
    )
    var traffic = false

    @Flag(
        name: [.customShort("6"), .customLong("prefer-ipv6")],
        help:
            "Bind SOURCE_ADDR to its IPv6 address when it has one (websockify's -6). A bare port listens on IPv6 and IPv4 anyway."
    )
    var preferIPv6 = false

    @Flag(name: .customLong("libserver"), help: "websockify compatibility: accepted and ignored (a warning is logged).")
    var libserver = false

    @Option(
        name: .customLong("log-level"),
        help: ArgumentHelp("trace, debug, info, notice, warning, error or critical.", valueName: "LEVEL")
    )
    var logLevel: String = "info"

    @Flag(name: [.short, .customLong("verbose")], help: "Same as --log-level debug.")
    var verbose = false
}
