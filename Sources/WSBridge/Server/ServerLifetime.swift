import NIOCore

/// When the server stops listening by itself, as websockify's `--timeout`, `--idle-timeout` and `--run-once` make
/// it: a value fed with events that returns what to do (tested without sockets or clocks; `BridgeServer` drives
/// it).
///
/// Sessions are WebSocket connections from their admission to their close; refused upgrades, static files, health
/// requests and the readiness self-check are not sessions. Once stopped, the listener is closed and the live
/// sessions are left to end by themselves (websockify lets them finish); SIGTERM still drains them.
public struct ServerLifetime: Sendable, Equatable {
    /// What ends the server's life (all off by default).
    public struct Policy: Sendable, Equatable {
        /// Stop listening this long after the start (`--timeout`).
        public var stopAfter: TimeAmount?
        /// Stop listening once no session has been open for this long (`--idle-timeout`), counted from the start
        /// and from the end of the last session.
        public var stopWhenIdleFor: TimeAmount?
        /// Stop listening when the first session has ended (`--run-once`).
        public var stopAfterFirstSession: Bool

        public init(
            stopAfter: TimeAmount? = nil,
            stopWhenIdleFor: TimeAmount? = nil,
            stopAfterFirstSession: Bool = false
        ) {
            self.stopAfter = stopAfter
            self.stopWhenIdleFor = stopWhenIdleFor
            self.stopAfterFirstSession = stopAfterFirstSession
        }

        /// Whether anything can end the server's life.
        public var isEnabled: Bool {
            self.stopAfter != nil || self.stopWhenIdleFor != nil || self.stopAfterFirstSession
        }
    }

    /// Why the server stopped listening: websockify's option, as its log line names it.
    public enum Reason: String, Sendable, Equatable {
        case timeout = "--timeout"
        case idleTimeout = "--idle-timeout"
        case runOnce = "--run-once"
    }

    public enum Action: Sendable, Equatable {
        case none
        /// Call `idleTimerFired(generation:)` after `stopWhenIdleFor`.
        case scheduleIdleCheck(generation: Int)
        /// Call `timeoutFired()` after `stopAfter`.
        case scheduleTimeout(TimeAmount)
        /// Close the listener.
        case stop(Reason)
    }

    public let policy: Policy
    public private(set) var activeSessions = 0
    public private(set) var stopped: Reason?
    /// Bumped whenever the server stops being idle: a pending idle check from before is stale.
    private var idleGeneration = 0

    public init(policy: Policy) {
        self.policy = policy
    }

    /// The server listens: the clocks start.
    public mutating func started() -> [Action] {
        var actions: [Action] = []
        if let after = self.policy.stopAfter { actions.append(.scheduleTimeout(after)) }
        if self.policy.stopWhenIdleFor != nil { actions.append(.scheduleIdleCheck(generation: self.idleGeneration)) }
        return actions
    }

    public mutating func sessionOpened() {
        self.activeSessions += 1
        self.idleGeneration += 1
    }

    public mutating func sessionClosed() -> Action {
        precondition(self.activeSessions > 0, "a session closed that never opened")
        self.activeSessions -= 1
        if self.policy.stopAfterFirstSession { return self.stop(.runOnce) }
        guard self.activeSessions == 0, self.policy.stopWhenIdleFor != nil, self.stopped == nil else { return .none }
        self.idleGeneration += 1
        return .scheduleIdleCheck(generation: self.idleGeneration)
    }

    public mutating func idleTimerFired(generation: Int) -> Action {
        guard generation == self.idleGeneration, self.activeSessions == 0 else { return .none }
        return self.stop(.idleTimeout)
    }

    public mutating func timeoutFired() -> Action {
        self.stop(.timeout)
    }

    private mutating func stop(_ reason: Reason) -> Action {
        guard self.stopped == nil else { return .none }
        self.stopped = reason
        return .stop(reason)
    }
}
