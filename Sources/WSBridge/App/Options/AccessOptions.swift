import ArgumentParser

/// Who may connect: authentication, trusted proxies and the PROXY protocol. A group of `BridgeOptions` (`--help` shows it under "Access").
public struct AccessOptions: ParsableArguments {
    public init() {}

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
}
