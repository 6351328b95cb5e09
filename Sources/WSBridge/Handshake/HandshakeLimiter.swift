import NIOConcurrencyHelpers

/// Caps on connections in a phase. The bridge counts connections still in their handshake (accepted, no 101
/// yet) across the server (`--max-handshakes`) and per client address (`--max-handshakes-per-ip`); the metrics
/// listener counts all its connections. A connection over a cap is closed at once, before any byte of it is read.
///
/// One lock guards both counts, taken once when a connection is accepted (or when its PROXY header names the
/// client) and once when its handshake ends.
final class HandshakeLimiter: Sendable {
    struct Limits: Sendable, Equatable {
        /// Connections in their handshake across the server; nil disables.
        var total: Int?
        /// Connections in their handshake per client address; nil disables.
        var perClient: Int?
    }

    /// A held handshake slot; give it back with `release`.
    struct Slot: Sendable, Equatable {
        fileprivate(set) var client: String?
    }

    private struct State {
        var total = 0
        var perClient: [String: Int] = [:]
    }

    let limits: Limits
    private let state = NIOLockedValueBox(State())

    init(limits: Limits) {
        self.limits = limits
    }

    /// A slot for a new connection from `client` (nil when the client is not known yet: it comes in a PROXY
    /// header), or nil when a cap is full.
    func acquire(client: String?) -> Slot? {
        self.state.withLockedValue { state in
            if let max = self.limits.total, state.total >= max { return nil }
            if let client, let max = self.limits.perClient, state.perClient[client, default: 0] >= max { return nil }
            state.total += 1
            if let client { state.perClient[client, default: 0] += 1 }
            return Slot(client: client)
        }
    }

    /// Counts `slot` against `client` from now on (the PROXY header named it); false when that client is at its
    /// cap (the slot is then released).
    func assign(_ slot: inout Slot, to client: String) -> Bool {
        self.state.withLockedValue { state in
            if let old = slot.client { Self.decrement(&state.perClient, old) }
            if let max = self.limits.perClient, state.perClient[client, default: 0] >= max {
                state.total -= 1
                slot.client = nil
                return false
            }
            state.perClient[client, default: 0] += 1
            slot.client = client
            return true
        }
    }

    func release(_ slot: Slot) {
        self.state.withLockedValue { state in
            state.total -= 1
            if let client = slot.client { Self.decrement(&state.perClient, client) }
        }
    }

    /// Connections in their handshake now.
    var inProgress: Int { self.state.withLockedValue { $0.total } }

    private static func decrement(_ counts: inout [String: Int], _ key: String) {
        let value = counts[key, default: 0] - 1
        counts[key] = value > 0 ? value : nil
    }
}
