import Foundation

/// One backend that clients may reach, and the rules for reaching it.
public struct Target: Hashable, Sendable {
    /// The name used in logs. Never the full token when the token is the only name. Not unique: two tokens with
    /// the same first characters have the same redacted name.
    public var name: String
    /// What limits (`max_sessions`) are counted by: distinct for distinct targets, whatever their names (by
    /// default the name). For a target keyed by a token it holds the token, so it stays in memory: never logged
    /// nor exported.
    public var identity: String {
        get { self.explicitIdentity ?? "name:" + self.name }
        set { self.explicitIdentity = newValue }
    }
    /// The `target` label of the target's metric series (by default the name). Bounded by the configuration,
    /// never by what clients send: for targets of a targets file their name (made distinct by the loader when
    /// names collide), for targets of a token service the service's name (`redis`, `token-api`, `jwt`).
    public var metricLabel: String {
        get { self.explicitMetricLabel ?? self.name }
        set { self.explicitMetricLabel = newValue }
    }
    private var explicitIdentity: String?
    private var explicitMetricLabel: String?
    public var backend: BackendAddress
    /// Origins allowed for this target; nil means the global list applies.
    public var origins: OriginAllowList?
    /// Most sessions this target may have at once; nil is no limit of its own.
    public var maxSessions: Int?
    /// Idle timeout in seconds for this target's sessions; nil uses the server's.
    public var idleTimeout: Double?
    /// Client networks allowed to reach this target; nil allows every client.
    public var allowClients: [CIDR]?
    /// Whether live sessions survive the removal or change of this target on reload.
    public var keepOnRevoke: Bool
    /// Where the target was defined (`FILE:LINE`), for messages.
    public var definedAt: String?
    /// Speak TLS to the backend; nil is plain TCP.
    public var tls: BackendTLS?
    /// Send a PROXY protocol header with the client's address first.
    public var proxyProtocol: ProxyProtocolVersion?
    /// Client certificate names (common name or subject alternative name) allowed to reach this target; nil
    /// allows every client.
    public var clientCertNames: [String]?
    /// When set, sessions admitted with this target are closed (1008 `token expired`) at this time: a signed
    /// token's `exp` under `--jwt-close-at-exp`.
    public var sessionDeadline: Date?
    /// permessage-deflate for this target's sessions; nil: the server's `--compression`.
    public var compression: CompressionMode?

    public init(
        name: String,
        backend: BackendAddress,
        origins: OriginAllowList? = nil,
        maxSessions: Int? = nil,
        idleTimeout: Double? = nil,
        allowClients: [CIDR]? = nil,
        keepOnRevoke: Bool = false,
        definedAt: String? = nil,
        tls: BackendTLS? = nil,
        proxyProtocol: ProxyProtocolVersion? = nil,
        clientCertNames: [String]? = nil,
        identity: String? = nil,
        metricLabel: String? = nil
    ) {
        self.name = name
        self.explicitIdentity = identity
        self.explicitMetricLabel = metricLabel
        self.backend = backend
        self.origins = origins
        self.maxSessions = maxSessions
        self.idleTimeout = idleTimeout
        self.allowClients = allowClients
        self.keepOnRevoke = keepOnRevoke
        self.definedAt = definedAt
        self.tls = tls
        self.proxyProtocol = proxyProtocol
        self.clientCertNames = clientCertNames
    }

    /// The identity of a target keyed by `token`.
    public static func identity(token: String) -> String {
        "token:" + token
    }

    /// A short, non-secret label for a token: a prefix of at most a quarter of it (and at most 4 characters),
    /// then `…`.
    public static func redact(_ token: String) -> String {
        let keep = min(4, token.count / 4)
        return String(token.prefix(keep)) + "…"
    }
}

/// A complete, immutable set of targets: what admission decisions are made against.
public struct TargetTable: Sendable {
    /// How a request is routed.
    public enum Mode: Sendable, Equatable {
        /// Every connection goes to one backend; tokens are not needed.
        case single(Target)
        /// The token in the request picks the target.
        case tokens([String: Target])
    }

    public var mode: Mode
    /// The global origin allow-list; nil accepts every origin.
    public var origins: OriginAllowList?
    /// What was read past, as websockify reads past it: malformed lines of token files (skipped), tokens defined
    /// again in a later token file (the last one wins), a token file or directory that does not exist (yet).
    /// Logged at each load and counted in `wsbridge_targets_warnings`; `wsbridge check` reports them as errors.
    public var warnings: [TargetsFileError] = []

    public init(mode: Mode, origins: OriginAllowList? = nil) {
        self.mode = mode
        self.origins = origins
    }

    public var targetCount: Int {
        switch self.mode {
        case .single: return 1
        case .tokens(let map): return map.count
        }
    }
}
