import NIOCore

/// When an unknown token looks at the targets files again, as a value (tested without files or clocks).
///
/// websockify reads its token files at every lookup, so a token written just before the page connects is found.
/// wsbridge answers from the table in force and, for a token it does not know, first looks whether the files
/// changed: one look at a time, every unknown token that arrives meanwhile waits for that look's table, and looks
/// start at least `interval` apart. An unknown token that comes sooner waits for the next look (at most
/// `interval`), so it still sees files written before it arrived, and a flood of unknown tokens costs at most one
/// `stat` pass and one read per interval.
public struct RereadThrottle: Sendable, Equatable {
    public enum Action: Sendable, Equatable {
        /// A look is pending or under way: wait for its table.
        case join
        /// Look at the files now (call `lookStarted`, then `lookFinished`).
        case look
        /// Look once this much time has passed (call `lookStarted` then, then `lookFinished`).
        case lookAfter(TimeAmount)
    }

    public let interval: TimeAmount
    /// When the last look started.
    public private(set) var lastLook: NIODeadline?
    /// A look is scheduled or under way.
    public private(set) var pending = false

    public init(interval: TimeAmount) {
        self.interval = interval
    }

    /// A token the table does not know arrived at `now`.
    public mutating func unknownToken(now: NIODeadline) -> Action {
        if self.pending { return .join }
        self.pending = true
        if let last = self.lastLook, now - last < self.interval {
            return .lookAfter(self.interval - (now - last))
        }
        return .look
    }

    /// The look begins (`stat` of the files).
    public mutating func lookStarted(now: NIODeadline) {
        precondition(self.pending, "a look that was not asked for")
        self.lastLook = now
    }

    /// The look (and the read, when the files had changed) is over.
    public mutating func lookFinished() {
        precondition(self.pending, "lookFinished without a look")
        self.pending = false
    }
}
