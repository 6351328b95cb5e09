import ArgumentParser

/// Where the bridge listens and what it answers besides upgrades. A group of `BridgeOptions` (`--help` shows it under "Listeners, HTTP answers, recording and metrics").
public struct ServingOptions: ParsableArguments {
    public init() {}

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

    @Flag(
        name: [.customShort("6"), .customLong("prefer-ipv6")],
        help:
            "Bind SOURCE_ADDR to its IPv6 address when it has one (websockify's -6). A bare port listens on IPv6 and IPv4 anyway."
    )
    var preferIPv6 = false
}
