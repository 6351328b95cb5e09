import Logging
import NIOConcurrencyHelpers
import NIOCore
import ServiceLifecycle

/// Answers of a token service, kept for a short time: found targets for `ttl`, "no such token" for
/// `negativeTTL`, and found targets up to `staleFor` as a fallback while the service is unreachable. All three
/// default to zero: every lookup asks the service, as websockify does, so a deleted key is refused at the next
/// connection. At most
/// `capacity` tokens are held; beyond it expired entries are purged, then everything if needed. `now` is a
/// parameter so that tests need no clock.
public final class TokenCache: Sendable {
    public struct Policy: Sendable, Equatable {
        public var ttl: TimeAmount
        public var negativeTTL: TimeAmount
        public var staleFor: TimeAmount
        public var capacity: Int
        public init(
            ttl: TimeAmount = .zero,
            negativeTTL: TimeAmount = .zero,
            staleFor: TimeAmount = .zero,
            capacity: Int = 100_000
        ) {
            self.ttl = ttl
            self.negativeTTL = negativeTTL
            self.staleFor = staleFor
            self.capacity = capacity
        }
    }

    private struct Entry {
        /// Nil: the service said there is no such token.
        var target: Target?
        var storedAt: NIODeadline
    }

    public let policy: Policy
    private let entries = NIOLockedValueBox<[String: Entry]>([:])

    public init(policy: Policy) { self.policy = policy }

    /// A fresh answer (`.found` or `.notFound`); nil when the service must be asked.
    public func fresh(_ token: String, now: NIODeadline = .now()) -> TokenResolution? {
        self.entries.withLockedValue { entries -> TokenResolution? in
            guard let entry = entries[token] else { return nil }
            let age = now - entry.storedAt
            let limit = entry.target == nil ? self.policy.negativeTTL : self.policy.ttl
            guard age < limit else { return nil }
            return entry.target.map { .found($0) } ?? .notFound
        }
    }

    /// The last found target when it is at most `staleFor` old.
    public func stale(_ token: String, now: NIODeadline = .now()) -> Target? {
        self.entries.withLockedValue { entries in
            guard let entry = entries[token], let target = entry.target, now - entry.storedAt <= self.policy.staleFor
            else {
                return nil
            }
            return target
        }
    }

    /// Keeps a `.found` or `.notFound` answer (other answers are not kept).
    public func store(_ token: String, _ resolution: TokenResolution, now: NIODeadline = .now()) {
        let target: Target?
        switch resolution {
        case .found(let found): target = found
        case .notFound: target = nil
        case .invalid, .unavailable: return
        }
        let keep = max(self.policy.ttl, self.policy.negativeTTL, self.policy.staleFor)
        guard keep > .zero else { return }
        self.entries.withLockedValue { entries in
            if entries[token] == nil, entries.count >= self.policy.capacity {
                entries = entries.filter { now - $0.value.storedAt < keep }
                if entries.count >= self.policy.capacity { entries.removeAll() }
            }
            entries[token] = Entry(target: target, storedAt: now)
        }
    }

    public func remove(_ token: String) { self.entries.withLockedValue { _ = $0.removeValue(forKey: token) } }
    public func removeAll() { self.entries.withLockedValue { $0.removeAll() } }
    public var count: Int { self.entries.withLockedValue { $0.count } }
}

/// A token service with a `TokenCache` in front: a fresh cached answer is used without asking; a `.found` or
/// `.notFound` answer is kept; when the service is unavailable, the last found target is used while it is at most
/// `staleFor` old. The services themselves (Redis, the HTTP API) only fetch. Tokens a service revokes
/// (`TokenRevocations`) leave the cache before their sessions are closed.
///
/// JWT is not put behind it: its answer is local and a cached one would outlive the token's `exp`.
public final class CachingTokenResolver: TokenResolver, Service {
    public let service: any TokenResolver & Service
    public let cache: TokenCache
    private let logger: Logger

    public var name: String { self.service.name }

    public init(_ service: any TokenResolver & Service, policy: TokenCache.Policy, logger: Logger) {
        self.service = service
        self.cache = TokenCache(policy: policy)
        self.logger = logger
        if let revocations = service as? any TokenRevocations {
            let cache = self.cache
            revocations.onRevoke { cache.remove($0) }
            revocations.onRevocationsMissed { cache.removeAll() }
        }
    }

    public func resolve(_ token: String, on eventLoop: EventLoop) -> EventLoopFuture<TokenResolution> {
        if let cached = self.cache.fresh(token) { return eventLoop.makeSucceededFuture(cached) }
        let cache = self.cache
        let logger = self.logger
        let name = self.name
        return self.service.resolve(token, on: eventLoop).map { resolution in
            if case .unavailable = resolution, let target = cache.stale(token) {
                logger.debug("\(name) unavailable; using the last known target of \(Target.redact(token))")
                return .found(target)
            }
            cache.store(token, resolution)
            return resolution
        }
    }

    public func run() async throws { try await self.service.run() }
}

/// A token service that publishes revocations (Redis's revocation channel).
public protocol TokenRevocations: Sendable {
    /// Calls `observer` with each revoked token.
    func onRevoke(_ observer: @escaping @Sendable (String) -> Void)
    /// Calls `observer` when revocations may have been missed (a subscription that was lost and is back).
    func onRevocationsMissed(_ observer: @escaping @Sendable () -> Void)
}
