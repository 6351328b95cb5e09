/// A problem in a targets file, located as `FILE:LINE`.
public struct TargetsFileError: Error, Equatable, Sendable, CustomStringConvertible {
    public var file: String
    public var line: Int?
    public var message: String

    public init(file: String, line: Int?, message: String) {
        self.file = file
        self.line = line
        self.message = message
    }

    public var description: String {
        if let line = self.line { return "\(self.file):\(line): \(self.message)" }
        return "\(self.file): \(self.message)"
    }
}

/// The targets read from one file, before they are merged into a `TargetTable`.
public struct TargetsFileContents: Sendable, Equatable {
    public struct Entry: Sendable, Equatable {
        public var token: String
        public var target: Target
        public var line: Int
        /// The line of the target's `tls:` setting, for errors in its files.
        public var tlsLine: Int? = nil
    }
    public var entries: [Entry] = []
    public var origins: [String] = []
    public var originsLine: Int?
    public init() {}
}
