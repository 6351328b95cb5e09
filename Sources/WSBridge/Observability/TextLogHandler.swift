import Foundation
import Logging

/// swift-log's text format (`StreamLogHandler`'s: time, level, label, metadata, message) written to any line sink:
/// a `LogFile`, or syslog without the time (syslog adds its own).
public struct TextLogHandler: LogHandler {
    public var logLevel: Logger.Level
    public var metadata: Logger.Metadata = [:]
    public var metadataProvider: Logger.MetadataProvider?
    /// How much of the line is written.
    public enum Style: Sendable {
        /// Time, level, label, metadata, message (a file).
        case full
        /// Message and metadata only: syslog has its own time, level and program name.
        case syslog
    }

    private let label: String
    private let style: Style
    private let sink: @Sendable (Logger.Level, String) -> Void

    public init(
        label: String,
        level: Logger.Level = .info,
        style: Style = .full,
        sink: @escaping @Sendable (Logger.Level, String) -> Void
    ) {
        self.label = label
        self.logLevel = level
        self.style = style
        self.sink = sink
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { self.metadata[key] }
        set { self.metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        let fields = Logger.Metadata.merged(self.metadata, provider: self.metadataProvider, event: event.metadata)
        let rendered = fields.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ")
        switch self.style {
        case .full:
            let metadata = rendered.isEmpty ? "" : " " + rendered
            self.sink(
                event.level,
                "\(Date().formatted(Self.timestamp)) \(event.level) \(self.label) :\(metadata) \(event.message)"
            )
        case .syslog:
            self.sink(event.level, rendered.isEmpty ? "\(event.message)" : "\(event.message) \(rendered)")
        }
    }

    private static let timestamp = Date.ISO8601FormatStyle(timeZone: .current)
}
