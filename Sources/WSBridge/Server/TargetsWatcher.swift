import Logging
import ServiceLifecycle
import UnixSignals

/// Re-reads the targets files when they change (polled every `interval`) and on SIGHUP.
public struct TargetsWatcher: Service {
    public let store: TargetsStore
    public let logger: Logger
    public let interval: Duration
    public let metrics: BridgeMetrics?
    /// SIGHUP, trapped by the caller before anything listens (so that a SIGHUP right after start reloads
    /// instead of killing the process).
    public let hangups: UnixSignalsSequence?
    /// Also poll the files for changes (not only SIGHUP).
    public let polls: Bool

    public init(
        store: TargetsStore,
        logger: Logger,
        metrics: BridgeMetrics? = nil,
        hangups: UnixSignalsSequence? = nil,
        polls: Bool = true,
        interval: Duration = .seconds(1)
    ) {
        self.store = store
        self.logger = logger
        self.metrics = metrics
        self.hangups = hangups
        self.polls = polls
        self.interval = interval
    }

    public func run() async throws {
        guard let loader = self.store.loader else { return }
        await cancelWhenGracefulShutdown {
            await withTaskGroup(of: Void.self) { group in
                if let hangups = self.hangups {
                    group.addTask {
                        for await _ in hangups {
                            self.logger.info("SIGHUP: reloading targets")
                            self.store.reload(logger: self.logger, metrics: self.metrics)
                        }
                    }
                }
                if self.polls {
                    group.addTask {
                    var last = loader.fingerprint()
                    while !Task.isCancelled {
                        try? await Task.sleep(for: self.interval)
                        let now = loader.fingerprint()
                        if now != last {
                            last = now
                            self.store.reload(logger: self.logger, metrics: self.metrics)
                        }
                    }
                    }
                }
                await group.waitForAll()
            }
        }
    }
}
