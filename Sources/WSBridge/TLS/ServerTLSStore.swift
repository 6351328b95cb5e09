import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOSSL
import ServiceLifecycle

/// The listener's TLS context in force, replaced atomically when the certificate files change or on SIGHUP.
///
/// Each new connection takes the current context when its first byte shows a TLS handshake; live connections keep
/// the context they started with, so a reload never touches open sessions. A new set of files that cannot be used
/// leaves the previous context in force and is logged.
public final class ServerTLSStore: Sendable {
    public let settings: ServerTLSSettings
    private let state: NIOLockedValueBox<ServerTLSContext>

    /// Loads the files now; throws `TLSFileError` when they cannot be used.
    public init(settings: ServerTLSSettings) throws {
        self.settings = settings
        self.state = NIOLockedValueBox(try settings.load())
    }

    public var current: ServerTLSContext { self.state.withLockedValue { $0 } }
    public var context: NIOSSLContext { self.current.context }

    /// Reads the files again now. Returns whether the new files are in force.
    @discardableResult
    public func reload(logger: Logger) -> Bool {
        self.apply(Result { try self.settings.load() }, logger: logger)
    }

    /// Puts certificates read from the files in force, or logs why they cannot be (the previous ones stay).
    @discardableResult
    public func apply(_ result: Result<ServerTLSContext, any Error>, logger: Logger) -> Bool {
        switch result {
        case .success(let loaded):
            self.state.withLockedValue { $0 = loaded }
            Self.logLoaded(loaded, logger: logger, message: "TLS certificates reloaded")
            return true
        case .failure(let error):
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
}

/// Reloads the listener's certificates when their files change (a `FileWatcher`: polled every `interval`, through
/// symlinks, debounced, so that a certificate and its key replaced one after the other are read together) and on
/// SIGHUP.
public struct ServerTLSWatcher: Service {
    public let store: ServerTLSStore
    public let logger: Logger
    public let interval: Duration
    /// SIGHUP (a subscription to `HangupSignals`).
    public let hangups: AsyncStream<Void>?

    public init(
        store: ServerTLSStore,
        logger: Logger,
        hangups: AsyncStream<Void>? = nil,
        interval: Duration = .seconds(1)
    ) {
        self.store = store
        self.logger = logger
        self.hangups = hangups
        self.interval = interval
    }

    public func run() async throws {
        let watcher = FileWatcher(
            paths: self.store.settings.files,
            what: "TLS certificates",
            logger: self.logger,
            hangups: self.hangups,
            timing: .init(interval: self.interval)
        )
        let store = self.store
        let logger = self.logger
        await watcher.run(
            load: { try store.settings.load() },
            apply: { result in store.apply(result, logger: logger) }
        )
    }
}
