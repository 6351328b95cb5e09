import Logging
import ServiceLifecycle

/// Re-reads the credentials file (`--auth-file`) when it changes and on SIGHUP (a `FileWatcher`: through
/// symlinks, as a mounted Kubernetes Secret is, debounced, stable reads). A file that cannot be used leaves the
/// previous users in force and is logged.
public struct CredentialsWatcher: Service {
    public let path: String
    public let authenticator: BasicAuthenticator
    public let logger: Logger
    /// SIGHUP (a subscription to `HangupSignals`).
    public let hangups: AsyncStream<Void>?
    public let timing: FileWatcher.Timing

    public init(
        path: String,
        authenticator: BasicAuthenticator,
        logger: Logger,
        hangups: AsyncStream<Void>? = nil,
        timing: FileWatcher.Timing = .init()
    ) {
        self.path = path
        self.authenticator = authenticator
        self.logger = logger
        self.hangups = hangups
        self.timing = timing
    }

    public func run() async throws {
        let watcher = FileWatcher(
            paths: [self.path],
            what: "credentials",
            logger: self.logger,
            hangups: self.hangups,
            timing: self.timing
        )
        let path = self.path
        let authenticator = self.authenticator
        let logger = self.logger
        await watcher.run(
            load: { try BasicAuthenticator.loadFile(path) },
            apply: { result in
                switch result {
                case .success(let users):
                    authenticator.replaceUsers(users)
                    logger.info("credentials reloaded", metadata: ["users": "\(users.count)", "source": "\(path)"])
                case .failure(let error):
                    logger.error("\(error) (the previous credentials stay in force)")
                }
            }
        )
    }
}
