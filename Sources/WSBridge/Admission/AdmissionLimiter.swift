import NIOConcurrencyHelpers
import NIOCore

/// Session limits and a handshake rate, answered before the upgrade: global, per client address, per target,
/// and a token bucket of handshakes per client address.
///
/// One lock guards all counters, so a burst of attempts from every event loop at once admits exactly as many
/// sessions as a limit allows.
public final class AdmissionLimiter: Sendable {
    public struct Limits: Sendable, Equatable {
        /// Sessions (upgrading or open) across the server.
        public var maxSessions: Int?
        /// Sessions per client address.
        public var maxSessionsPerClient: Int?
        /// Handshakes per second per client address (token bucket refill rate); nil disables.
        public var handshakeRate: Double?
        /// Bucket size: handshakes a client may make at once.
        public var handshakeBurst: Int

        public init(
            maxSessions: Int? = nil,
            maxSessionsPerClient: Int? = nil,
            handshakeRate: Double? = nil,
            handshakeBurst: Int = 10
        ) {
            self.maxSessions = maxSessions
            self.maxSessionsPerClient = maxSessionsPerClient
            self.handshakeRate = handshakeRate
            self.handshakeBurst = handshakeBurst
        }
    }

    /// A held session slot; give it back with `release`.
    public struct Lease: Sendable, Equatable {
        let client: String
        let target: String
    }

    private struct Bucket {
        var tokens: Double
        var updated: NIODeadline
    }

    private struct State {
        var total = 0
        var perClient: [String: Int] = [:]
        var perTarget: [String: Int] = [:]
        var buckets: [String: Bucket] = [:]
    }

    public let limits: Limits
    private let state = NIOLockedValueBox(State())
    /// Seconds a refused client is told to wait when a session limit is full.
    static let busyRetryAfter = 5

    public init(limits: Limits) {
        self.limits = limits
    }

    /// Takes a handshake token for `client`; refuses with 429 and `Retry-After` when its bucket is empty.
    public func takeHandshake(client: String, now: NIODeadline = .now()) -> HTTPRejection? {
        guard let rate = self.limits.handshakeRate, rate > 0 else { return nil }
        let burst = Double(max(1, self.limits.handshakeBurst))
        return self.state.withLockedValue { state -> HTTPRejection? in
            var bucket = state.buckets[client] ?? Bucket(tokens: burst, updated: now)
            let elapsed = Double((now - bucket.updated).nanoseconds) / 1e9
            bucket.tokens = min(burst, bucket.tokens + max(0, elapsed) * rate)
            bucket.updated = now
            defer {
                state.buckets[client] = bucket
                if state.buckets.count > 10_000 { Self.forgetFullBuckets(&state, now: now, rate: rate, burst: burst) }
            }
            guard bucket.tokens >= 1 else {
                let wait = Int(((1 - bucket.tokens) / rate).rounded(.up))
                return HTTPRejection(
                    .rate,
                    .tooManyRequests,
                    "too many handshakes from this address",
                    headers: [("Retry-After", String(max(1, wait)))]
                )
            }
            bucket.tokens -= 1
            return nil
        }
    }

    /// Reserves a session slot for `client` on `target`, or refuses with 503 and `Retry-After`.
    public func acquire(client: String, target: Target) -> Result<Lease, HTTPRejection> {
        self.state.withLockedValue { state in
            func busy(_ reason: String) -> Result<Lease, HTTPRejection> {
                .failure(
                    HTTPRejection(
                        .limit,
                        .serviceUnavailable,
                        reason,
                        headers: [("Retry-After", String(Self.busyRetryAfter))]
                    )
                )
            }
            if let max = self.limits.maxSessions, state.total >= max {
                return busy("server is at its session limit")
            }
            if let max = self.limits.maxSessionsPerClient, state.perClient[client, default: 0] >= max {
                return busy("too many sessions from this address")
            }
            // By identity: two targets whose (redacted) names look alike are two limits.
            if let max = target.maxSessions, state.perTarget[target.identity, default: 0] >= max {
                return busy("target is at its session limit")
            }
            state.total += 1
            state.perClient[client, default: 0] += 1
            state.perTarget[target.identity, default: 0] += 1
            return .success(Lease(client: client, target: target.identity))
        }
    }

    public func release(_ lease: Lease) {
        self.state.withLockedValue { state in
            state.total -= 1
            Self.decrement(&state.perClient, lease.client)
            Self.decrement(&state.perTarget, lease.target)
        }
    }

    /// Sessions currently held, for tests and logs.
    public var sessions: Int { self.state.withLockedValue { $0.total } }

    private static func decrement(_ counts: inout [String: Int], _ key: String) {
        let value = counts[key, default: 0] - 1
        counts[key] = value > 0 ? value : nil
    }

    /// Buckets that have refilled completely carry no information: drop them so the table stays small.
    private static func forgetFullBuckets(_ state: inout State, now: NIODeadline, rate: Double, burst: Double) {
        state.buckets = state.buckets.filter { _, bucket in
            bucket.tokens + Double((now - bucket.updated).nanoseconds) / 1e9 * rate < burst
        }
    }
}
