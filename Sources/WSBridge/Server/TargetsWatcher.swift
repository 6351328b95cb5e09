import Logging
import ServiceLifecycle

/// Re-reads the targets files when they change (a `FileWatcher`: through symlinks, debounced, stable reads) and on
/// SIGHUP.
public struct TargetsWatcher: Service {
    public let store: TargetsStore
    public let logger: Logger
    public let interval: Duration
    public let metrics: BridgeMetrics?
    /// SIGHUP (a subscription to `HangupSignals`).
    public let hangups: AsyncStream<Void>?
    /// Also poll the files for changes (not only SIGHUP).
    public let polls: Bool

    public init(
        store: TargetsStore,
        logger: Logger,
        metrics: BridgeMetrics? = nil,
        hangups: AsyncStream<Void>? = nil,
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
        let watcher = FileWatcher(
            paths: [loader.path],
            what: "targets",
            logger: self.logger,
            hangups: self.hangups,
            polls: self.polls,
            timing: .init(interval: self.interval)
        )
        let store = self.store
        let logger = self.logger
        let metrics = self.metrics
        await watcher.run(
            load: { store.read() },
            apply: { result in
                // The watcher read them while they were stable: this is how they look.
                store.markSeen(FileWatcher.snapshot([loader.path]))
                switch result {
                case .success(let read): store.apply(read, logger: logger, metrics: metrics)
                case .failure(let error):
                    store.apply(
                        .failure(TargetsFileError(file: loader.path, line: nil, message: "\(error)")),
                        logger: logger,
                        metrics: metrics
                    )
                }
            }
        )
    }
}
