import Logging
import NIOConcurrencyHelpers

/// The targets snapshot in force, replaced atomically on reload.
///
/// Admission reads `current` on the event loop (a lock and a copy-on-write reference, no I/O); reloads read
/// files on a background task and swap the snapshot only when the new one parsed completely.
public final class TargetsStore: Sendable {
    private let snapshot: NIOLockedValueBox<TargetTable>
    private let observers = NIOLockedValueBox<[@Sendable (TargetTable) -> Void]>([])
    public let loader: TargetsLoader?

    /// A fixed table (single-target mode, tests).
    public init(fixed table: TargetTable) {
        self.snapshot = NIOLockedValueBox(table)
        self.loader = nil
    }

    /// Loads `loader`'s files now; throws `TargetsFileError` when they are invalid.
    public init(loader: TargetsLoader) throws {
        self.snapshot = NIOLockedValueBox(try loader.load())
        self.loader = loader
    }

    public var current: TargetTable { self.snapshot.withLockedValue { $0 } }

    /// Calls `observer` with every table that replaces the current one (after the swap).
    public func onReload(_ observer: @escaping @Sendable (TargetTable) -> Void) {
        self.observers.withLockedValue { $0.append(observer) }
    }

    /// Re-reads the files. On success the new table replaces the old one; on failure the old one stays and the
    /// error is returned.
    @discardableResult
    public func reload(logger: Logger, metrics: BridgeMetrics? = nil) -> Result<TargetTable, TargetsFileError> {
        guard let loader = self.loader else { return .success(self.current) }
        let result = self.reloadFiles(loader: loader, logger: logger)
        if case .success = result { metrics?.reloaded(ok: true) } else { metrics?.reloaded(ok: false) }
        return result
    }

    private func reloadFiles(loader: TargetsLoader, logger: Logger) -> Result<TargetTable, TargetsFileError> {
        do {
            let table = try loader.load()
            self.snapshot.withLockedValue { $0 = table }
            for observer in self.observers.withLockedValue({ $0 }) { observer(table) }
            logger.info("targets reloaded", metadata: ["targets": "\(table.targetCount)", "source": "\(loader.path)"])
            return .success(table)
        } catch let error as TargetsFileError {
            logger.error("\(error.description) (previous targets stay in force)")
            return .failure(error)
        } catch {
            let wrapped = TargetsFileError(file: loader.path, line: nil, message: "\(error)")
            logger.error("\(wrapped.description) (previous targets stay in force)")
            return .failure(wrapped)
        }
    }
}
