import ArgumentParser

/// How long a handshake and the server may take, and how the process runs (daemon, pid file, wrapped program). A group of `BridgeOptions` (`--help` shows it under "Timeouts and the process").
public struct LifetimeOptions: ParsableArguments {
    public init() {}

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
}
