import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOSSL
import ServiceLifecycle
import UnixSignals

/// The listener's TLS context in force, replaced atomically when the certificate files change or on SIGHUP.
///
/// Each new connection takes the current context when its first byte shows a TLS handshake; live connections keep
/// the context they started with, so a reload never touches open sessions. A new set of files that cannot be used
/// leaves the previous context in force and is logged.
public final class ServerTLSStore: Sendable {
    public let settings: ServerTLSSettings
    private let state: NIOLockedValueBox<(loaded: ServerTLSContext, fingerprint: String)>

    /// Loads the files now; throws `TLSFileError` when they cannot be used.
    public init(settings: ServerTLSSettings) throws {
        self.settings = settings
        let fingerprint = Self.fingerprint(settings.files)
        self.state = NIOLockedValueBox((try settings.load(), fingerprint))
    }

    public var current: ServerTLSContext { self.state.withLockedValue { $0.loaded } }
    public var context: NIOSSLContext { self.current.context }

    /// Reloads when a file changed since the last attempt (or always with `force`). Returns nil when nothing was
    /// tried, else whether the new files are in force.
    @discardableResult
    public func reload(logger: Logger, force: Bool = false) -> Bool? {
        let fingerprint = Self.fingerprint(self.settings.files)
        let changed = self.state.withLockedValue { state -> Bool in
            guard force || state.fingerprint != fingerprint else { return false }
            state.fingerprint = fingerprint
            return true
        }
        guard changed else { return nil }
        do {
            let loaded = try self.settings.load()
            self.state.withLockedValue { $0.loaded = loaded }
            Self.logLoaded(loaded, logger: logger, message: "TLS certificates reloaded")
            return true
        } catch {
            logger.error("\(error) (the previous certificates stay in force)")
            return false
        }
    }

    static func logLoaded(_ loaded: ServerTLSContext, logger: Logger, message: String) {
        let now = time(nil)
        for certificate in loaded.certificates {
            logger.info(
                "\(message)",
                metadata: [
                    "certificate": "\(certificate.file)", "names": "\(certificate.names.joined(separator: ","))",
                    "expires": "\(Date(timeIntervalSince1970: TimeInterval(certificate.notValidAfter)))",
                ]
            )
            if certificate.notValidAfter < now {
                logger.warning("certificate \(certificate.file) has expired")
            }
        }
    }

    /// Logs what is served (at start).
    public func logCurrent(logger: Logger) {
        Self.logLoaded(self.current, logger: logger, message: "TLS certificates loaded")
    }

    /// Names, sizes, modification times and inodes of the files (a renamed-over file changes its inode).
    static func fingerprint(_ files: [String]) -> String {
        files.map { file -> String in
            var info = stat()
            guard stat(file, &info) == 0 else { return "\(file)|missing" }
            return "\(file)|\(info.st_size)|\(info.st_mtim.tv_sec).\(info.st_mtim.tv_nsec)|\(info.st_ino)"
        }.joined(separator: "\n")
    }
}

/// Reloads the listener's certificates when their files change (polled every `interval`) and on SIGHUP.
public struct ServerTLSWatcher: Service {
    public let store: ServerTLSStore
    public let logger: Logger
    public let interval: Duration
    /// SIGHUP, trapped by the caller before anything listens (a SIGHUP right after start must reload, not kill).
    public let hangups: UnixSignalsSequence?

    public init(store: ServerTLSStore, logger: Logger, hangups: UnixSignalsSequence? = nil, interval: Duration = .seconds(1)) {
        self.store = store
        self.logger = logger
        self.hangups = hangups
        self.interval = interval
    }

    public func run() async throws {
        await cancelWhenGracefulShutdown {
            await withTaskGroup(of: Void.self) { group in
                if let hangups = self.hangups {
                    group.addTask {
                        for await _ in hangups {
                            self.logger.info("SIGHUP: reloading TLS certificates")
                            self.store.reload(logger: self.logger, force: true)
                        }
                    }
                }
                group.addTask {
                    while !Task.isCancelled {
                        try? await Task.sleep(for: self.interval)
                        self.store.reload(logger: self.logger)
                    }
                }
                await group.waitForAll()
            }
        }
    }
}
