import Logging

extension BridgeApplication {
    /// Sets up the process's logging as `configuration.logging` says: stderr (text or JSON), and also the log
    /// file and syslog when given. Call once per process, before `run()`; returns the log file, for
    /// `init(logFile:)` (it is reopened on SIGHUP). Throws when the log file cannot be opened.
    public static func bootstrapLogging(_ logging: Configuration.Logging) throws -> LogFile? {
        let level = logging.level
        let json = logging.format == .json
        let logFile = try logging.file.map { try LogFile(path: $0) }
        let syslog = logging.syslog.map {
            SyslogWriter(
                destination: $0,
                facility: logging.daemonFacility ? .daemon : .user,
                legacy: logging.legacySyslog
            )
        }
        LoggingSystem.bootstrap { label in
            var handlers: [any LogHandler] = []
            if json {
                handlers.append(JSONLogHandler(label: label, level: level))
            } else {
                handlers.append(StderrLogHandler(label: label, level: level))
            }
            if let logFile {
                if json {
                    handlers.append(JSONLogHandler(label: label, level: level, stream: { logFile.write($0) }))
                } else {
                    handlers.append(
                        TextLogHandler(label: label, level: level, sink: { _, line in logFile.write(line + "\n") })
                    )
                }
            }
            if let syslog {
                handlers.append(
                    TextLogHandler(
                        label: label,
                        level: level,
                        style: .syslog,
                        sink: { level, line in syslog.send(line, level: level) }
                    )
                )
            }
            return handlers.count == 1 ? handlers[0] : MultiplexLogHandler(handlers)
        }
        return logFile
    }
}
