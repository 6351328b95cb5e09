import ArgumentParser

/// Where connections go: a target, targets files or a token service, and how requests carry their token. A group of `BridgeOptions` (`--help` shows it under "Routing and tokens").
public struct RoutingOptions: ParsableArguments {
    public init() {}

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
}
