import Logging
import ServiceLifecycle

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// Watches files and directories for changes and hands a stable read of them to `apply`: the one implementation
/// behind targets files, TLS certificates, JWT keys and credential files.
///
/// - Changes are seen through symlinks: each path's symlink chain, its resolved path (`realpath`) and `stat` of
///   the file it resolves to (device, inode, size, modification and change times). A Kubernetes ConfigMap or
///   Secret volume (files that are symlinks into `..data`, itself a symlink swapped by an atomic `rename`) is
///   noticed, as is a file renamed over the old one or rewritten in place. A directory stands for its entries
///   (those not starting with `.`).
/// - Woken by SIGHUP as well as by its poll; a SIGHUP reloads even when nothing seems to have changed.
/// - Debounced: a change is read only once the files have stayed the same for `quiet`; when a file shrank or
///   emptied (`cat > file` truncates before it writes) or went missing, for `settle`.
/// - A read during which the files changed is thrown away and done again once they are stable.
public struct FileWatcher: Sendable {
    /// How often and how patiently the files are looked at.
    public struct Timing: Sendable, Equatable {
        /// How often the files are polled (when polling).
        public var interval: Duration
        /// How long a change must stay unchanged before it is read.
        public var quiet: Duration
        /// The same, when a file shrank, emptied or disappeared: a writer may be half-way.
        public var settle: Duration

        public init(
            interval: Duration = .seconds(1),
            quiet: Duration = .milliseconds(150),
            settle: Duration = .seconds(2)
        ) {
            self.interval = interval
            self.quiet = quiet
            self.settle = settle
        }
    }

    /// What is watched (computed at each look: a directory's entries come and go).
    public let paths: [String]
    public let timing: Timing
    /// Also poll (else only SIGHUP wakes the watcher).
    public let polls: Bool
    /// SIGHUP (a subscription to `HangupSignals`).
    public let hangups: AsyncStream<Void>?
    /// What the files are, for log lines ("targets", "TLS certificates", "JWT keys").
    public let what: String
    public let logger: Logger

    public init(
        paths: [String],
        what: String,
        logger: Logger,
        hangups: AsyncStream<Void>? = nil,
        polls: Bool = true,
        timing: Timing = .init()
    ) {
        self.paths = paths
        self.what = what
        self.logger = logger
        self.hangups = hangups
        self.polls = polls
        self.timing = timing
    }

    // MARK: snapshots

    /// What is known of one path: its symlink chain, where it resolves, and `stat` of that.
    public struct Entry: Sendable, Equatable {
        public var path: String
        /// `link -> target` for each symlink followed from `path`.
        public var chain: [String]
        /// `realpath(path)`, nil when it does not resolve.
        public var resolved: String?
        public var exists: Bool
        public var isDirectory: Bool
        public var device: UInt64
        public var inode: UInt64
        public var size: Int64
        public var modified: Int64
        public var changed: Int64
    }

    /// Everything looked at once, in a stable order.
    public struct Snapshot: Sendable, Equatable {
        public var entries: [Entry]

        /// Whether a file of `previous` is now missing, empty or smaller: possibly a writer half-way.
        public func shrank(since previous: Snapshot?) -> Bool {
            guard let previous else { return false }
            var before: [String: Entry] = [:]
            for entry in previous.entries { before[entry.path] = entry }
            var now: [String: Entry] = [:]
            for entry in self.entries { now[entry.path] = entry }
            for (path, old) in before where old.exists && !old.isDirectory && old.size > 0 {
                guard let new = now[path], new.exists else { return true }
                if new.size < old.size { return true }
            }
            return false
        }
    }

    /// Looks at `paths` now; a directory adds its entries not starting with `.` (sorted).
    public static func snapshot(_ paths: [String]) -> Snapshot {
        var entries: [Entry] = []
        for path in paths {
            let entry = Self.entry(path)
            if entry.isDirectory {
                // The directory's own times change with every temporary file an editor makes: not compared.
                var directory = entry
                directory.modified = 0
                directory.changed = 0
                directory.size = 0
                entries.append(directory)
                for name in Self.names(in: path) where !name.hasPrefix(".") {
                    entries.append(Self.entry(path.hasSuffix("/") ? path + name : path + "/" + name))
                }
            } else {
                entries.append(entry)
            }
        }
        return Snapshot(entries: entries)
    }

    static func names(in directory: String) -> [String] {
        guard let handle = opendir(directory) else { return [] }
        defer { closedir(handle) }
        var names: [String] = []
        while let item = readdir(handle) {
            let name = withUnsafePointer(to: item.pointee.d_name) { pointer in
                pointer.withMemoryRebound(to: CChar.self, capacity: MemoryLayout.size(ofValue: item.pointee.d_name)) {
                    String(cString: $0)
                }
            }
            if name != "." && name != ".." { names.append(name) }
        }
        return names.sorted()
    }

    static func entry(_ path: String) -> Entry {
        var chain: [String] = []
        var current = path
        for _ in 0..<40 {
            var link = stat()
            guard lstat(current, &link) == 0, (link.st_mode & S_IFMT) == S_IFLNK else { break }
            let capacity = Int(PATH_MAX)
            var buffer = [CChar](repeating: 0, count: capacity + 1)
            let count = readlink(current, &buffer, capacity)
            guard count >= 0 else { break }
            let target = String(decoding: buffer[0..<count].map { UInt8(bitPattern: $0) }, as: UTF8.self)
            chain.append("\(current) -> \(target)")
            if target.hasPrefix("/") {
                current = target
            } else if let slash = current.lastIndex(of: "/") {
                current = String(current[...slash]) + target
            } else {
                current = target
            }
        }
        var resolved: String?
        if let real = realpath(path, nil) {
            resolved = String(cString: real)
            free(real)
        }
        var info = stat()
        guard stat(path, &info) == 0 else {
            return Entry(
                path: path,
                chain: chain,
                resolved: resolved,
                exists: false,
                isDirectory: false,
                device: 0,
                inode: 0,
                size: 0,
                modified: 0,
                changed: 0
            )
        }
        #if canImport(Darwin)
            let modified = Int64(info.st_mtimespec.tv_sec) * 1_000_000_000 + Int64(info.st_mtimespec.tv_nsec)
            let changed = Int64(info.st_ctimespec.tv_sec) * 1_000_000_000 + Int64(info.st_ctimespec.tv_nsec)
        #else
            let modified = Int64(info.st_mtim.tv_sec) * 1_000_000_000 + Int64(info.st_mtim.tv_nsec)
            let changed = Int64(info.st_ctim.tv_sec) * 1_000_000_000 + Int64(info.st_ctim.tv_nsec)
        #endif
        return Entry(
            path: path,
            chain: chain,
            resolved: resolved,
            exists: true,
            isDirectory: (info.st_mode & S_IFMT) == S_IFDIR,
            device: UInt64(info.st_dev),
            inode: UInt64(info.st_ino),
            size: Int64(info.st_size),
            modified: modified,
            changed: changed
        )
    }

    // MARK: the decision, as a value

    /// When to read: a state machine fed with snapshots and the clock, tested without files.
    public struct Debouncer: Sendable {
        public enum Action: Sendable, Equatable {
            /// Nothing to do until the next poll or SIGHUP.
            case idle
            /// A change is settling: look again after this long.
            case wait(Duration)
            /// Stable: read the files now, then call `read(finished:)` with a snapshot taken after the read.
            case read
        }

        let timing: Timing
        /// The files as they were when last read (whether or not that read could be used).
        public private(set) var applied: Snapshot?
        private var pending: Snapshot?
        private var pendingSince: ContinuousClock.Instant?
        private var forced = false
        private var reading: Snapshot?

        public init(timing: Timing, applied: Snapshot?) {
            self.timing = timing
            self.applied = applied
        }

        /// SIGHUP: read once the files are stable, even if they look unchanged.
        public mutating func hangup() {
            self.forced = true
        }

        /// A look at the files at `now`.
        public mutating func observe(_ snapshot: Snapshot, now: ContinuousClock.Instant) -> Action {
            if snapshot == self.applied && !self.forced {
                self.pending = nil
                self.pendingSince = nil
                return .idle
            }
            guard snapshot == self.pending, let since = self.pendingSince else {
                self.pending = snapshot
                self.pendingSince = now
                return .wait(self.required(snapshot))
            }
            let required = self.required(snapshot)
            let waited = now - since
            guard waited >= required else { return .wait(required - waited) }
            self.reading = snapshot
            return .read
        }

        /// After a read: true when the files did not change during it (use what was read), false when they did
        /// (throw it away; the watcher looks again once they are stable).
        public mutating func read(finished after: Snapshot, now: ContinuousClock.Instant) -> Bool {
            guard let before = self.reading else { return false }
            self.reading = nil
            guard after == before else {
                self.pending = after
                self.pendingSince = now
                return false
            }
            self.applied = before
            self.pending = nil
            self.pendingSince = nil
            self.forced = false
            return true
        }

        private func required(_ snapshot: Snapshot) -> Duration {
            snapshot.shrank(since: self.applied) ? self.timing.settle : self.timing.quiet
        }
    }

    // MARK: running

    /// Watches until cancelled (or graceful shutdown): each stable change is read with `load` and handed to
    /// `apply` (a failed read too, so that it can be logged; the previous state stays in the caller's hands).
    public func run<Value: Sendable>(
        load: @escaping @Sendable () async throws -> Value,
        apply: @escaping @Sendable (Result<Value, any Error>) async -> Void
    ) async {
        let (events, continuation) = AsyncStream.makeStream(
            of: FileWatcherEvent.self,
            bufferingPolicy: .bufferingNewest(8)
        )
        let paths = self.paths
        let initial = Self.snapshot(paths)
        await cancelWhenGracefulShutdown {
            await withTaskGroup(of: Void.self) { group in
                if let hangups = self.hangups {
                    group.addTask {
                        for await _ in hangups { continuation.yield(.hangup) }
                    }
                }
                if self.polls {
                    group.addTask {
                        while !Task.isCancelled {
                            try? await Task.sleep(for: self.timing.interval)
                            continuation.yield(.tick)
                        }
                    }
                }
                group.addTask {
                    var debouncer = Debouncer(timing: self.timing, applied: initial)
                    for await event in events {
                        if event == .hangup {
                            self.logger.info("SIGHUP: reloading \(self.what)")
                            debouncer.hangup()
                        }
                        // Follow the change until it has been read (or has gone back to what was applied).
                        settling: while !Task.isCancelled {
                            switch debouncer.observe(Self.snapshot(paths), now: .now) {
                            case .idle:
                                break settling
                            case .wait(let delay):
                                try? await Task.sleep(for: min(delay, self.timing.quiet))
                            case .read:
                                let result: Result<Value, any Error>
                                do { result = .success(try await load()) } catch { result = .failure(error) }
                                guard debouncer.read(finished: Self.snapshot(paths), now: .now) else {
                                    self.logger.debug(
                                        "\(self.what) changed while being read: reading again once stable"
                                    )
                                    continue settling
                                }
                                await apply(result)
                                break settling
                            }
                        }
                    }
                }
                await group.waitForAll()
                continuation.finish()
            }
        }
    }
}

/// What wakes a `FileWatcher`.
private enum FileWatcherEvent: Sendable {
    case tick
    case hangup
}
