import Logging
import NIOConcurrencyHelpers

/// The targets snapshot in force, replaced atomically on reload.
///
/// Admission reads `current` on the event loop (a lock and a copy-on-write reference, no I/O); reloads read
/// files on a background task and swap the snapshot only when the new one parsed completely.
public final class TargetsStore: Sendable {
    private let snapshot: NIOLockedValueBox<TargetTable>
    private let observers = NIOLockedValueBox<[@Sendable (TargetTable) -> Void]>([])
    /// The files as they were when the table in force was read (nil for a fixed table): an unknown token re-reads
    /// them only when they no longer look like this (`TargetsRereader`).
    private let seen = NIOLockedValueBox<FileWatcher.Snapshot?>(nil)
    public let loader: TargetsLoader?

    /// A fixed table (single-target mode, tests).
    public init(fixed table: TargetTable) {
        self.snapshot = NIOLockedValueBox(table)
        self.loader = nil
    }

    /// Loads `loader`'s files now; throws `TargetsFileError` when they are invalid.
    public init(loader: TargetsLoader) throws {
        // Looked at before the read: a change during it makes the next look differ, and read again.
        let seen = FileWatcher.snapshot([loader.path])
        self.snapshot = NIOLockedValueBox(try loader.load())
        self.seen.withLockedValue { $0 = seen }
        self.loader = loader
    }

    public var current: TargetTable { self.snapshot.withLockedValue { $0 } }

    /// How the files looked when the table in force was read.
    var filesSeen: FileWatcher.Snapshot? { self.seen.withLockedValue { $0 } }

    /// Records how the files looked when the table about to be applied was read.
    func markSeen(_ snapshot: FileWatcher.Snapshot) {
        self.seen.withLockedValue { $0 = snapshot }
    }

    /// Logs what the load in force read past (skipped lines, tokens defined again, a missing file) and sets
    /// `wsbridge_targets_warnings`; for the first load, whose store had no logger yet.
    public func reportWarnings(logger: Logger, metrics: BridgeMetrics?) {
        Self.report(self.current, logger: logger, metrics: metrics)
    }

    private static func report(_ table: TargetTable, logger: Logger, metrics: BridgeMetrics?) {
        for warning in table.warnings { logger.warning("\(warning.description)") }
        metrics?.targetsWarnings(table.warnings.count)
    }

    /// Calls `observer` with every table that replaces the current one (after the swap).
    public func onReload(_ observer: @escaping @Sendable (TargetTable) -> Void) {
        self.observers.withLockedValue { $0.append(observer) }
    }

    /// Re-reads the files. On success the new table replaces the old one; on failure the old one stays and the
    /// error is returned.
    @discardableResult
    public func reload(logger: Logger, metrics: BridgeMetrics? = nil) -> Result<TargetTable, TargetsFileError> {
        guard self.loader != nil else { return .success(self.current) }
        return self.apply(self.read(), logger: logger, metrics: metrics)
    }

    /// Reads the files without using them (a `FileWatcher` checks they did not change meanwhile).
    public func read() -> Result<TargetTable, TargetsFileError> {
        guard let loader = self.loader else { return .success(self.current) }
        do {
            return .success(try loader.load())
        } catch let error as TargetsFileError {
            return .failure(error)
        } catch {
            return .failure(TargetsFileError(file: loader.path, line: nil, message: "\(error)"))
        }
    }

    /// Puts a table read by `read` in force, or logs why it cannot be (the previous one stays).
    @discardableResult
    public func apply(_ result: Result<TargetTable, TargetsFileError>, logger: Logger, metrics: BridgeMetrics? = nil)
        -> Result<TargetTable, TargetsFileError>
    {
        switch result {
        case .success(let table):
            self.snapshot.withLockedValue { $0 = table }
            for observer in self.observers.withLockedValue({ $0 }) { observer(table) }
            logger.info(
                "targets reloaded",
                metadata: ["targets": "\(table.targetCount)", "source": "\(self.loader?.path ?? "")"]
            )
            Self.report(table, logger: logger, metrics: metrics)
            metrics?.reloaded(ok: true)
        case .failure(let error):
            logger.error("\(error.description) (previous targets stay in force)")
            metrics?.reloaded(ok: false)
        }
        return result
    }
}
