import NIOCore

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// Everything that shapes how the bridge listens, admits and relays: plain values, defaults the documented ones. The
/// live objects a server works with (certificates, credentials, the recording counter, the token service) are its
/// `BridgeServer.Services`.
public struct BridgeConfiguration: Sendable {
    /// Address to listen on; nil listens on every address, IPv4 and IPv6.
    public var host: String?
    /// Bind `host` to its IPv6 address when it has one (websockify's `-6/--prefer-ipv6`); else the first address
    /// the resolver gives.
    public var preferIPv6 = false
    /// Port to listen on; 0 picks a free one (reported through `onServerRunning`).
    public var port: Int
    /// Listen on this Unix-domain socket instead of TCP (`--unix-listen`).
    public var unixListenPath: String?
    /// File mode of that socket.
    public var unixListenMode: mode_t = 0o600
    /// Serve on an already-listening socket handed over by the parent (systemd socket activation, `--inetd`).
    public var inheritedListener: CInt?
    /// Refuse requests without an `Origin` header.
    public var requireOrigin: Bool
    /// Time from accept to the end of admission: PROXY header, TLS handshake, request head, authentication and
    /// token services (the backend connect has `connectTimeout`). 408 once the request head may be read, else the
    /// socket is closed at once.
    public var handshakeTimeout: TimeAmount
    /// Backend connect timeout.
    public var connectTimeout: TimeAmount
    /// Close a session when no data moved either way for this long; nil disables.
    public var idleTimeout: TimeAmount?
    /// Ping the client this often; nil disables keepalive and dead-peer detection.
    public var pingInterval: TimeAmount?
    /// A client that sends nothing for this long after a ping is considered gone.
    public var pongTimeout: TimeAmount
    /// Largest client frame payload accepted (1009 beyond).
    public var maxFrameSize: UInt64
    /// Largest client message, its frames together (1009 beyond); never below `maxFrameSize`.
    public var maxMessageSize: UInt64 = 64 << 20
    /// permessage-deflate for targets that do not choose (a YAML target's `compression:` does).
    public var compression = CompressionMode.off
    /// Bound for each closing step (peer's Close, flushing to a backend, backend EOF after a half-close).
    public var closeTimeout: TimeAmount
    /// An HTTP answer (static file, health, metrics) whose bytes stop moving for this long is closed: the
    /// client does not read (`StallWatch`). Not a total time: slow downloads that keep moving finish.
    public var stallTimeout: TimeAmount = .seconds(15)
    /// How long live sessions get after Close 1001 on shutdown.
    public var shutdownTimeout: TimeAmount
    /// Largest request head accepted (NIO's HTTP parser limit).
    public var maxRequestHeadBytes: Int
    /// Outbound buffer water marks for both legs of a session: above `high` the other side stops being read.
    /// With the read settings below, this bounds a session's memory in each direction: about `high` +
    /// `maxReadsPerCycle` × `readBufferSize` (with the defaults, 420 KiB measured per flooded session).
    public var writeBufferWaterMark: ChannelOptions.Types.WriteBufferWaterMark
    /// Largest read from either socket of a session, in bytes. Reads start small and grow to this while the
    /// peer keeps them full; each backend read becomes one WebSocket message. The defaults of this and
    /// `maxReadsPerCycle` are NIO's own; larger reads measured no clear gain (docs/benchmarks.md).
    public var readBufferSize: Int
    /// Reads from one socket in one event-loop turn before other channels get their turn. Backpressure is applied
    /// between turns, so a session can take in up to `maxReadsPerCycle` × `readBufferSize` beyond the water mark.
    public var maxReadsPerCycle: Int
    /// Listen backlog.
    public var backlog: Int32
    /// Where requests carry their token.
    public var tokenSources: UpgradePolicy.TokenSources = .init()
    /// Session limits and the per-client handshake rate.
    public var limits: AdmissionLimiter.Limits
    /// Files served for plain GET/HEAD requests (`--web DIR`); nil serves none.
    public var staticFiles: StaticFiles?
    /// Apply the origin rules and authentication to static files too (`--web-auth`).
    public var staticFilesUseAccessRules = false
    /// Serve `/metrics` on the main port too (it is always served on the metrics listener, when there is one).
    public var metricsOnMainPort: Bool
    /// Client certificate names allowed for targets without their own list (`--auth-plugin ClientCertCNAuth`).
    public var clientCertNames: [String]?
    /// Proxies whose `X-Forwarded-For`/`Forwarded` headers (and PROXY headers) are believed.
    public var trustedProxies = TrustedProxies.none
    /// Every connection starts with a PROXY protocol header (v1 or v2) from a load balancer.
    public var proxyProtocol = false
    /// Connections still in their handshake (accepted, no 101 yet) across the server (`--max-handshakes`); beyond
    /// it new connections are closed at once. Nil disables.
    public var maxHandshakes: Int? = 4096
    /// The same per client address (`--max-handshakes-per-ip`); nil disables.
    public var maxHandshakesPerClient: Int? = 1024
    /// Client bytes kept for the session between the request head and the 101 (frames sent with the request);
    /// beyond them, plus at most one read cycle, the client is not read until the 101.
    public var maxEarlyBytes = HandshakeStateMachine.defaultEarlyBytesLimit
    /// TCP_USER_TIMEOUT on both legs: a connection whose sent data stays unacknowledged this long is dropped by
    /// the kernel. Nil leaves the system default.
    public var tcpUserTimeout: TimeAmount? = .seconds(60)
    /// A token the targets table does not know re-reads the targets files first when they changed (websockify
    /// reads them at every lookup): at most once per this interval, one read at a time, off the event loops. Nil
    /// leaves reloads to the watcher alone (websockify's `ReadOnlyTokenFile`).
    public var unknownTokenRereadInterval: TimeAmount? = .milliseconds(250)
    /// When the server stops listening by itself (websockify's `--timeout`, `--idle-timeout`, `--run-once`); by
    /// default it listens until shut down.
    public var lifetime = ServerLifetime.Policy()

    public init(
        host: String? = nil,
        port: Int = 6080,
        requireOrigin: Bool = false,
        handshakeTimeout: TimeAmount = .seconds(10),
        connectTimeout: TimeAmount = .seconds(10),
        idleTimeout: TimeAmount? = nil,
        pingInterval: TimeAmount? = .seconds(30),
        pongTimeout: TimeAmount = .seconds(30),
        maxFrameSize: UInt64 = 64 << 20,
        closeTimeout: TimeAmount = .seconds(5),
        shutdownTimeout: TimeAmount = .seconds(10),
        maxRequestHeadBytes: Int = 16 << 10,
        writeBufferWaterMark: ChannelOptions.Types.WriteBufferWaterMark = .init(low: 64 << 10, high: 256 << 10),
        readBufferSize: Int = 64 << 10,
        maxReadsPerCycle: Int = 4,
        backlog: Int32 = 1024,
        limits: AdmissionLimiter.Limits = .init(),
        staticFiles: StaticFiles? = nil,
        metricsOnMainPort: Bool = false
    ) {
        self.host = host
        self.port = port
        self.requireOrigin = requireOrigin
        self.handshakeTimeout = handshakeTimeout
        self.connectTimeout = connectTimeout
        self.idleTimeout = idleTimeout
        self.pingInterval = pingInterval
        self.pongTimeout = pongTimeout
        self.maxFrameSize = maxFrameSize
        self.closeTimeout = closeTimeout
        self.shutdownTimeout = shutdownTimeout
        self.maxRequestHeadBytes = maxRequestHeadBytes
        self.writeBufferWaterMark = writeBufferWaterMark
        self.readBufferSize = readBufferSize
        self.maxReadsPerCycle = maxReadsPerCycle
        self.backlog = backlog
        self.limits = limits
        self.staticFiles = staticFiles
        self.metricsOnMainPort = metricsOnMainPort
    }
}

extension BridgeConfiguration {
    /// `TCP_USER_TIMEOUT` (Linux, `netinet/tcp.h`).
    static let tcpUserTimeoutOption = ChannelOptions.Types.SocketOption(
        level: .tcp,
        name: NIOBSDSocket.Option(rawValue: 18)
    )

    /// `tcpUserTimeout` as the option's value (0: the system default).
    var tcpUserTimeoutMilliseconds: Int {
        guard let timeout = self.tcpUserTimeout, timeout > .zero else { return 0 }
        return Int(timeout.nanoseconds / 1_000_000)
    }

    /// The options of a session's socket, client or backend leg, set synchronously where the channel is initialized.
    ///
    /// Bootstraps apply their channel options one future at a time (an allocation, a callback and a dynamic cast
    /// each, and a linear search when they are added): callgrind counted about a third of a handshake's
    /// instructions in it for the eight options of the two legs (docs/benchmarks.md, item 10). `syncOptions` sets
    /// the same options with none of that.
    static func setSessionOptions(
        _ channel: Channel,
        writeBufferWaterMark: ChannelOptions.Types.WriteBufferWaterMark,
        readBufferSize: Int,
        maxReadsPerCycle: Int,
        tcpUserTimeoutMilliseconds: Int,
        isTCP: Bool
    ) throws {
        guard let options = channel.syncOptions else { return }
        try options.setOption(.writeBufferWaterMark, value: writeBufferWaterMark)
        try options.setOption(.recvAllocator, value: Self.recvAllocator(maximum: readBufferSize))
        try options.setOption(.maxMessagesPerRead, value: UInt(max(1, maxReadsPerCycle)))
        guard isTCP else { return }
        // websockify's default keepalive, and a bound on unacknowledged data (dead peers, both legs).
        try? options.setOption(.socketOption(.so_keepalive), value: 1)
        try? options.setOption(Self.tcpUserTimeoutOption, value: tcpUserTimeoutMilliseconds)
    }

    /// NIO's adaptive read sizes (they grow while reads come back full and shrink when they don't), capped at
    /// `maximum`: an idle session holds no read buffer, a busy one reads up to `maximum` per system call.
    static func recvAllocator(maximum: Int) -> AdaptiveRecvByteBufferAllocator {
        let maximum = max(maximum, 64)
        return AdaptiveRecvByteBufferAllocator(minimum: 64, initial: min(2048, maximum), maximum: maximum)
    }
}
