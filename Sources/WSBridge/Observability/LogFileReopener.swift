import Logging
import ServiceLifecycle

/// Reopens the `--log-file` on SIGHUP, so that logrotate can rename it and signal (as for `copytruncate`-free
/// rotation): later lines go to a new file at the same path.
public struct LogFileReopener: Service {
    public let file: LogFile
    public let logger: Logger
    /// SIGHUP (a subscription to `HangupSignals`).
    public let hangups: AsyncStream<Void>

    public init(file: LogFile, logger: Logger, hangups: AsyncStream<Void>) {
        self.file = file
        self.logger = logger
        self.hangups = hangups
    }

    public func run() async throws {
        await cancelWhenGracefulShutdown {
            for await _ in self.hangups {
                if let error = self.file.reopen() {
                    self.logger.error("\(error) (logging goes on to the old file)")
                } else {
                    self.logger.info("SIGHUP: log file reopened", metadata: ["file": "\(self.file.path)"])
                }
            }
        }
    }
}
