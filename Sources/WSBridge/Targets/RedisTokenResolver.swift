import Logging
import NIOConcurrencyHelpers
import NIOCore
import ServiceLifecycle

/// websockify's `TokenRedis`, for many instances: GET `namespace:token` through a small connection pool at every
/// lookup (as websockify does; a `CachingTokenResolver` in front caches when configured to), and a subscription to
/// `revokeChannel` whose messages (a token each) are revocations (`TokenRevocations`): the cache drops the token and
/// the bridge closes its live sessions (1008 `token revoked`). A key deleted or expired in Redis is refused at the
/// next connection. When Redis cannot be reached, lookups answer `.unavailable` (503).
///
/// A `Service`: `run` keeps the subscription until graceful shutdown.
public final class RedisTokenResolver: TokenResolver, TokenRevocations, Service {
    public let source: RedisTokenSource
    public let revokeChannel: String?
    public let client: RedisClient
    private let subscriber: RedisSubscriber?
    private let logger: Logger
    private let revoked = LockedObservers<String>()
    private let missed = LockedObservers<Void>()

    public var name: String { "redis" }

    public init(
        source: RedisTokenSource,
        revokeChannel: String? = "wsbridge:revoke",
        timeout: TimeAmount = .seconds(1),
        group: EventLoopGroup,
        logger: Logger
    ) {
        self.source = source
        self.revokeChannel = revokeChannel
        self.logger = logger
        self.client = RedisClient(endpoint: source.endpoint, group: group, timeout: timeout, logger: logger)
        if let revokeChannel {
            let revoked = self.revoked
            let missed = self.missed
            self.subscriber = RedisSubscriber(
                endpoint: source.endpoint,
                channel: revokeChannel,
                eventLoop: group.next(),
                logger: logger,
                onMessage: { payload in
                    let token = String(decoding: payload, as: UTF8.self).trimmingWhitespace()
                    guard !token.isEmpty else { return }
                    revoked.call(token)
                },
                // Revocations published while we were away were missed.
                onResubscribe: { missed.call(()) }
            )
        } else {
            self.subscriber = nil
        }
    }

    public func onRevoke(_ observer: @escaping @Sendable (String) -> Void) { self.revoked.add(observer) }
    public func onRevocationsMissed(_ observer: @escaping @Sendable () -> Void) { self.missed.add(observer) }

    public func resolve(_ token: String, on eventLoop: EventLoop) -> EventLoopFuture<TokenResolution> {
        let logger = self.logger
        return self.client.get(self.source.key(for: token), on: eventLoop).map { value -> TokenResolution in
            guard let value else { return .notFound }
            guard let backend = RedisTokenSource.backend(fromValue: value) else {
                logger.warning("redis value of token \(Target.redact(token)) is neither {\"host\": \"h:p\"} nor h:p")
                return .notFound
            }
            return .found(Self.target(token, backend))
        }.recover { error in
            logger.debug("token lookup failed: \(TokenRedaction.scrub("\(error)", token: token))")
            return .unavailable("token service unavailable: redis unreachable")
        }
    }

    /// A token-only target: logged by a short prefix of its token, counted (limits) by the token, and measured under
    /// the one label of its token service (`source`), so the metric series do not grow with the tokens used.
    static func target(_ token: String, _ backend: BackendAddress, source: String = "redis") -> Target {
        Target(
            name: Target.redact(token),
            backend: backend,
            identity: Target.identity(token: token),
            metricLabel: source
        )
    }

    public func run() async throws {
        self.subscriber?.start()
        try? await gracefulShutdown()
        self.subscriber?.stop()
        self.client.close()
    }
}

/// A list of observers called from any thread.
final class LockedObservers<Value: Sendable>: Sendable {
    private let observers = NIOLockedValueBox<[@Sendable (Value) -> Void]>([])
    func add(_ observer: @escaping @Sendable (Value) -> Void) {
        self.observers.withLockedValue { $0.append(observer) }
    }
    func call(_ value: Value) { for observer in self.observers.withLockedValue({ $0 }) { observer(value) } }
}
