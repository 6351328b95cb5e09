import ArgumentParser

/// What a session may use: keepalive, frame size, closing and stall bounds, buffers, threads and the limits on sessions and handshakes. A group of `BridgeOptions` (`--help` shows it under "Sessions, buffers and limits").
public struct SessionOptions: ParsableArguments {
    public init() {}

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
        name: .customLong("max-message-size"),
        help: ArgumentHelp(
            "Largest client message in bytes, its frames together (1009 beyond; default 64 MiB, or --max-frame-size when that is larger). Streamed too.",
            valueName: "BYTES"
        )
    )
    var maxMessageSize: UInt64?

    @Option(
        name: .customLong("compression"),
        help: ArgumentHelp(
            "permessage-deflate (RFC 7692) for targets without a 'compression:' of their own: deflate accepts the client's offer, off (the default) declines it. Compressing secrets together with data a page chooses can leak them: see docs/behaviour.md.",
            valueName: "deflate|off"
        )
    )
    var compression: CompressionMode = .off

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
}
