import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// Re-reads the targets files for a token the table in force does not know, when they changed since that table
/// was read (device, inode, size, times of each file; a new file in a directory), off the event loops, one look
/// at a time and at most one per interval; unknown tokens that arrive meanwhile wait for it (`RereadThrottle`).
///
/// A table read this way answers the token at once. It replaces the table in force only when the files did not
/// change during the read and no file shrank or went missing (a writer may be half-way: `cat > file` truncates
/// first); the `TargetsWatcher` applies those once they are stable, as it does for every change.
final class TargetsRereader: Sendable {
    private struct State {
        var throttle: RereadThrottle
        var inFlight: EventLoopFuture<TargetTable>?
    }

    private let store: TargetsStore
    private let paths: [String]
    private let state: NIOLockedValueBox<State>
    private let threadPool: NIOThreadPool
    private let logger: Logger
    private let metrics: BridgeMetrics

    init?(
        store: TargetsStore,
        interval: TimeAmount?,
        logger: Logger,
        metrics: BridgeMetrics,
        threadPool: NIOThreadPool = .singleton
    ) {
        guard let loader = store.loader, let interval, interval > .zero else { return nil }
        self.store = store
        self.paths = [loader.path]
        self.state = NIOLockedValueBox(State(throttle: RereadThrottle(interval: interval)))
        self.threadPool = threadPool
        self.logger = logger
        self.metrics = metrics
    }

    /// The table to answer an unknown token from, on `eventLoop`: the table in force when the files did not change,
    /// else the one read now. Waits at most one interval (plus the look) for it.
    func tableForUnknownToken(on eventLoop: EventLoop) -> EventLoopFuture<TargetTable> {
        enum Step {
            case join(EventLoopFuture<TargetTable>)
            case look(EventLoopPromise<TargetTable>, after: TimeAmount)
        }
        let step = self.state.withLockedValue { state -> Step in
            let delay: TimeAmount
            switch state.throttle.unknownToken(now: .now()) {
            case .join:
                guard let inFlight = state.inFlight else { preconditionFailure("a pending look without its future") }
                return .join(inFlight)
            case .look:
                delay = .zero
            case .lookAfter(let after):
                delay = after
            }
            let promise = eventLoop.makePromise(of: TargetTable.self)
            state.inFlight = promise.futureResult
            return .look(promise, after: delay)
        }
        switch step {
        case .join(let future):
            return future.hop(to: eventLoop)
        case .look(let promise, let delay):
            eventLoop.scheduleTask(in: delay) {
                self.state.withLockedValue { $0.throttle.lookStarted(now: .now()) }
                let read = self.threadPool.runIfActive(eventLoop: eventLoop) { self.lookAndRead() }
                read.whenComplete { _ in
                    self.state.withLockedValue { state in
                        state.inFlight = nil
                        state.throttle.lookFinished()
                    }
                }
                let store = self.store
                promise.completeWith(read.recover { _ in store.current })
            }
            return promise.futureResult
        }
    }

    /// Runs on the thread pool: `stat` first, the files only when they changed.
    private func lookAndRead() -> TargetTable {
        let before = FileWatcher.snapshot(self.paths)
        let seen = self.store.filesSeen
        guard before != seen else { return self.store.current }
        self.metrics.reread()
        let result = self.store.read()
        let after = FileWatcher.snapshot(self.paths)
        switch result {
        case .success(let table):
            if after == before, !before.shrank(since: seen) {
                self.logger.debug("unknown token: the targets files changed, re-read")
                self.store.markSeen(before)
                self.store.apply(.success(table), logger: self.logger, metrics: self.metrics)
            } else {
                self.logger.debug("unknown token: answered from the files as they are now (applied once stable)")
            }
            return table
        case .failure(let error):
            // The watcher logs it (at error level) once the files are stable.
            self.logger.debug("unknown token: re-reading the targets files failed", metadata: ["error": "\(error)"])
            return self.store.current
        }
    }
}
