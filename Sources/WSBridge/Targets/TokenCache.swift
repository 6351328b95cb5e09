import NIOConcurrencyHelpers
import NIOCore

/// Answers of a token service, kept for a short time: found backends for `ttl`, "no such token" for
/// `negativeTTL`, and found backends up to `staleFor` as a fallback while the service is unreachable. All three
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
        var backend: BackendAddress?
        var storedAt: NIODeadline
    }

    public let policy: Policy
    private let entries = NIOLockedValueBox<[String: Entry]>([:])

    public init(policy: Policy) { self.policy = policy }

    /// A fresh answer: `.some(backend)` or `.some(nil)` (known missing); nil when the service must be asked.
    public func fresh(_ token: String, now: NIODeadline = .now()) -> BackendAddress?? {
        self.entries.withLockedValue { entries -> BackendAddress?? in
            guard let entry = entries[token] else { return nil }
            let age = now - entry.storedAt
            let limit = entry.backend == nil ? self.policy.negativeTTL : self.policy.ttl
            return age < limit ? .some(entry.backend) : nil
        }
    }

    /// The last found backend when it is at most `staleFor` old.
    public func stale(_ token: String, now: NIODeadline = .now()) -> BackendAddress? {
        self.entries.withLockedValue { entries in
            guard let entry = entries[token], let backend = entry.backend, now - entry.storedAt <= self.policy.staleFor
            else {
                return nil
            }
            return backend
        }
    }

    public func store(_ token: String, _ backend: BackendAddress?, now: NIODeadline = .now()) {
        let keep = max(self.policy.ttl, self.policy.negativeTTL, self.policy.staleFor)
        guard keep > .zero else { return }
        self.entries.withLockedValue { entries in
            if entries[token] == nil, entries.count >= self.policy.capacity {
                entries = entries.filter { now - $0.value.storedAt < keep }
                if entries.count >= self.policy.capacity { entries.removeAll() }
            }
            entries[token] = Entry(backend: backend, storedAt: now)
        }
    }

    public func remove(_ token: String) { self.entries.withLockedValue { _ = $0.removeValue(forKey: token) } }
    public func removeAll() { self.entries.withLockedValue { $0.removeAll() } }
    public var count: Int { self.entries.withLockedValue { $0.count } }
}
