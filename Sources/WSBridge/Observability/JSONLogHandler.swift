import Foundation
import Logging

/// One JSON object per line on standard error: `ts`, `level`, `msg`, `source` and every metadata key at the top
/// level (for log shippers in containers). Written by hand: swift-log ships only a text handler.
public struct JSONLogHandler: LogHandler {
    public var logLevel: Logger.Level
    public var metadata: Logger.Metadata = [:]
    public var metadataProvider: Logger.MetadataProvider?
    private let label: String
    private let stream: @Sendable (String) -> Void

    public init(
        label: String,
        level: Logger.Level = .info,
        stream: @escaping @Sendable (String) -> Void = JSONLogHandler.standardError
    ) {
        self.label = label
        self.logLevel = level
        self.stream = stream
    }

    public static let standardError: @Sendable (String) -> Void = { line in
        FileHandle.standardError.write(Data(line.utf8))
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { self.metadata[key] }
        set { self.metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        let fields = Logger.Metadata.merged(self.metadata, provider: self.metadataProvider, event: event.metadata)
        var object: [String: Any] = [
            "ts": Date().formatted(Self.timestamp),
            "level": event.level.rawValue,
            "msg": event.message.description,
            "logger": self.label,
        ]
        for (key, value) in fields where object[key] == nil {
            object[key] = Self.plain(value)
        }
        guard
            let data = try? JSONSerialization.data(
                withJSONObject: object,
                options: [.sortedKeys, .withoutEscapingSlashes]
            ),
            let line = String(data: data, encoding: .utf8)
        else { return }
        self.stream(line + "\n")
    }

    private static let timestamp = Date.ISO8601FormatStyle(includingFractionalSeconds: true, timeZone: .gmt)

    private static func plain(_ value: Logger.MetadataValue) -> Any {
        switch value {
        case .string(let string): return string
        case .stringConvertible(let convertible):
            // Numbers stay numbers, so that log queries can compare them.
            switch convertible {
            case let number as Int: return number
            case let number as UInt64: return number
            case let number as UInt16: return number
            case let number as Double: return number
            default: return convertible.description
            }
        case .array(let array): return array.map(Self.plain)
        case .dictionary(let dictionary): return dictionary.mapValues(Self.plain)
        }
    }
}

extension Logger.Metadata {
    /// A handler's metadata, then what its provider adds, then the event's own (later keys win): what every
    /// wsbridge log handler writes.
    static func merged(_ base: Logger.Metadata, provider: Logger.MetadataProvider?, event: Logger.Metadata?)
        -> Logger.Metadata
    {
        var fields = base
        if let provided = provider?.get() { fields.merge(provided) { $1 } }
        if let event { fields.merge(event) { $1 } }
        return fields
    }
}
