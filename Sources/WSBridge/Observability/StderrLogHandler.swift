import Logging
import NIOConcurrencyHelpers

#if canImport(Glibc)
    import Glibc
#endif

/// The text log lines on standard error, byte for byte as swift-log's `StreamLogHandler.standardError` writes them
/// (`TIME LEVEL LABEL: KEY=VALUE ... [SOURCE] MESSAGE`, keys sorted, the time in local time as
/// `%Y-%m-%dT%H:%M:%S%z`), at a fraction of its cost.
///
/// Every session writes two lines, so their cost is part of every handshake's: callgrind counted 31k instructions a
/// line in `StreamLogHandler` (string interpolation of each metadata value, `strftime` of the time for every line;
/// docs/benchmarks.md, item 10). This one formats the time once a second and appends the metadata to one string.
/// Written by hand because swift-log has no cheaper handler with this format and the format is what users parse.
public struct StderrLogHandler: LogHandler {
    public var logLevel: Logger.Level
    public var metadata: Logger.Metadata = [:]
    public var metadataProvider: Logger.MetadataProvider?
    private let label: String

    public init(label: String, level: Logger.Level = .info, metadataProvider: Logger.MetadataProvider? = nil) {
        self.label = label
        self.logLevel = level
        self.metadataProvider = metadataProvider
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { self.metadata[key] }
        set { self.metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        Self.write(self.line(for: event))
    }

    /// The line `log` writes, with its newline, as UTF-8.
    func line(for event: LogEvent) -> [UInt8] {
        // The handler's metadata, the provider's, the event's (later ones win), sorted by key: as pairs, which
        // costs less than merging dictionaries for the handful of fields of a line.
        var pairs: [(key: String, value: Logger.MetadataValue)] = []
        let provided = self.metadataProvider?.get() ?? [:]
        let explicit = event.metadata ?? [:]
        pairs.reserveCapacity(self.metadata.count + provided.count + explicit.count + 2)
        for (key, value) in self.metadata where provided[key] == nil && explicit[key] == nil {
            pairs.append((key, value))
        }
        for (key, value) in provided where explicit[key] == nil { pairs.append((key, value)) }
        for (key, value) in explicit { pairs.append((key, value)) }
        if let error = event.error {
            pairs.removeAll { $0.key == "error.message" || $0.key == "error.type" }
            pairs.append(("error.message", "\(error)"))
            pairs.append(("error.type", "\(String(reflecting: type(of: error)))"))
        }
        pairs.sort { $0.key < $1.key }

        var line: [UInt8] = []
        line.reserveCapacity(256)
        line += Self.clock.timestamp().utf8
        line.append(UInt8(ascii: " "))
        line += event.level.rawValue.utf8
        if !self.label.isEmpty {
            line.append(UInt8(ascii: " "))
            line += self.label.utf8
        }
        line.append(UInt8(ascii: ":"))
        for (key, value) in pairs {
            line.append(UInt8(ascii: " "))
            line += key.utf8
            line.append(UInt8(ascii: "="))
            Self.append(value, to: &line)
        }
        line += " [".utf8
        line += event.source.utf8
        line += "] ".utf8
        line += event.message.description.utf8
        line.append(UInt8(ascii: "\n"))
        return line
    }

    /// A value as `Logger.MetadataValue.description` writes it, without going through string interpolation.
    static func append(_ value: Logger.MetadataValue, to line: inout [UInt8]) {
        switch value {
        case .string(let text): line += text.utf8
        case .stringConvertible(let convertible): line += convertible.description.utf8
        case .array, .dictionary: line += value.description.utf8
        }
    }

    private static func write(_ line: [UInt8]) {
        line.withUnsafeBufferPointer { bytes in
            var offset = 0
            while offset < bytes.count {
                let written = Glibc.write(STDERR_FILENO, bytes.baseAddress! + offset, bytes.count - offset)
                if written > 0 {
                    offset += written
                } else if written < 0 && errno == EINTR {
                    continue
                } else {
                    return  // nowhere to report a failing stderr
                }
            }
        }
    }

    /// The local time of the current second, formatted once per second.
    private final class Clock: Sendable {
        private let cached = NIOLockedValueBox<(second: time_t, text: String)>((-1, ""))

        func timestamp() -> String {
            var now = time(nil)
            if let text = self.cached.withLockedValue({ $0.second == now ? $0.text : nil }) { return text }
            var parts = tm()
            guard localtime_r(&now, &parts) != nil else { return "<unknown>" }
            var buffer = [CChar](repeating: 0, count: 64)
            strftime(&buffer, buffer.count, "%Y-%m-%dT%H:%M:%S%z", &parts)
            let text = String(cString: buffer)
            self.cached.withLockedValue { $0 = (now, text) }
            return text
        }
    }

    private static let clock = Clock()
}
