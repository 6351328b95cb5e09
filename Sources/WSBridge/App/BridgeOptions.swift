import ArgumentParser

/// The command line of `wsbridge`, declared once: websockify's grammar and options, and ours. Each option is also
/// read from the environment (`WSBRIDGE_…`, derived from these declarations by `EnvironmentArguments`).
/// `configuration(...)` maps the parsed options to a `Configuration` (BridgeOptions+Configuration.swift). The options
/// are declared in groups (`Options/`), each a section of `--help`; this file and those hold nothing but
/// declarations.
public struct BridgeOptions: ParsableArguments {
    public init() {}

    @Argument(
        help:
            "[SOURCE_ADDR:]SOURCE_PORT to listen on (default 6080, all addresses), then optionally TARGET_HOST:TARGET_PORT."
    )
    var positional: [String] = []

    @OptionGroup(title: "Routing and tokens") var routing: RoutingOptions
    @OptionGroup(title: "Timeouts and the process") var lifetime: LifetimeOptions
    @OptionGroup(title: "Sessions, buffers and limits") var session: SessionOptions
    @OptionGroup(title: "Listeners, HTTP answers, recording and metrics") var serving: ServingOptions
    @OptionGroup(title: "TLS") var tls: TLSOptions
    @OptionGroup(title: "Access") var access: AccessOptions
    @OptionGroup(title: "Logging and websockify compatibility") var logging: LoggingOptions
}
