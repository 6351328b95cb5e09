import ArgumentParser

/// What is logged, where, and the websockify options that are accepted for compatibility. A group of `BridgeOptions` (`--help` shows it under "Logging and websockify compatibility").
public struct LoggingOptions: ParsableArguments {
    public init() {}

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
