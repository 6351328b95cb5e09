import Logging
import ServiceLifecycle
import UnixSignals

/// Reopens the `--log-file` on SIGHUP, so that logrotate can rename it and signal (as for `copytruncate`-free
/// rotation): later lines go to a new file at the same path.
public struct LogFileReopener: Service {
    public let file: LogFile
    public let logger: Logger
    /// SIGHUP, trapped by the caller before anything listens.
    public let hangups: UnixSignalsSequence

    public init(file: LogFile, logger: Logger, hangups: UnixSignalsSequence) {
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
