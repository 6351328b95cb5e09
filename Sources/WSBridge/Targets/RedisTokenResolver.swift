import Logging
import NIOConcurrencyHelpers
import NIOCore
import ServiceLifecycle

/// websockify's `TokenRedis`, for many instances: GET `namespace:token` through a small connection pool at every
/// lookup (as websockify does; answers are cached only when `cache` says so), and a subscription to
/// `revokeChannel` whose messages (a token each) drop that token from the cache and close its live sessions (1008
/// `token revoked`) through `onRevoke`. A key deleted or expired in Redis is refused at the next connection (with a
/// cache, once its cached answer is older than the TTL). When Redis cannot be reached,
/// lookups answer `.unavailable` (503), or the last found backend when it is at most `staleFor` old.
///
/// A `Service`: `run` keeps the subscription until graceful shutdown.
public final class RedisTokenResolver: TokenResolver, Service {
    public let source: RedisTokenSource
    public let revokeChannel: String?
    public let cache: TokenCache
    public let client: RedisClient
    private let subscriber: RedisSubscriber?
    private let logger: Logger
    private let onRevoke = NIOLockedCallbacks()

    public var name: String { "redis" }

    public init(
        source: RedisTokenSource,
        revokeChannel: String? = "wsbridge:revoke",
        cache: TokenCache.Policy = .init(),
        timeout: TimeAmount = .seconds(1),
        group: EventLoopGroup,
        logger: Logger
    ) {
        self.source = source
        self.revokeChannel = revokeChannel
        self.cache = TokenCache(policy: cache)
        self.logger = logger
        self.client = RedisClient(endpoint: source.endpoint, group: group, timeout: timeout, logger: logger)
        if let revokeChannel {
            let tokenCache = self.cache
            let callbacks = self.onRevoke
            self.subscriber = RedisSubscriber(
                endpoint: source.endpoint,
                channel: revokeChannel,
                eventLoop: group.next(),
                logger: logger,
                onMessage: { payload in
                    let token = String(decoding: payload, as: UTF8.self).trimmingWhitespace()
                    guard !token.isEmpty else { return }
                    tokenCache.remove(token)
                    callbacks.call(token)
                },
                onResubscribe: {
                    // Revocations published while we were away were missed: forget what we knew.
                    tokenCache.removeAll()
                }
            )
        } else {
            self.subscriber = nil
        }
    }

    /// Calls `observer` with each token published on the revocation channel.
    public func onRevoke(_ observer: @escaping @Sendable (String) -> Void) { self.onRevoke.add(observer) }

    public func resolve(_ token: String, on eventLoop: EventLoop) -> EventLoopFuture<TokenResolution> {
        if let cached = self.cache.fresh(token) {
            return eventLoop.makeSucceededFuture(cached.map { .found(Self.target(token, $0)) } ?? .notFound)
        }
        let cache = self.cache
        let logger = self.logger
        return self.client.get(self.source.key(for: token), on: eventLoop).map { value -> TokenResolution in
            guard let value else {
                cache.store(token, nil)
                return .notFound
            }
            guard let backend = RedisTokenSource.backend(fromValue: value) else {
                logger.warning("redis value of token \(Target.redact(token)) is neither {\"host\": \"h:p\"} nor h:p")
                cache.store(token, nil)
                return .notFound
            }
            cache.store(token, backend)
            return .found(Self.target(token, backend))
        }.recover { error in
            if let backend = cache.stale(token) {
                logger.debug("redis unavailable; using the last known backend of \(Target.redact(token))")
                return .found(Self.target(token, backend))
            }
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
final class NIOLockedCallbacks: Sendable {
    private let observers = NIOLockedValueBox<[@Sendable (String) -> Void]>([])
    func add(_ observer: @escaping @Sendable (String) -> Void) {
        self.observers.withLockedValue { $0.append(observer) }
    }
    func call(_ value: String) { for observer in self.observers.withLockedValue({ $0 }) { observer(value) } }
}
