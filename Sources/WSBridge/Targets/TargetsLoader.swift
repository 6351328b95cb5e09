import Foundation

/// Reads a targets file or a directory of them into a `TargetTable`, completely or not at all.
public struct TargetsLoader: Sendable {
    /// How the files at `path` name targets (websockify's token plugins).
    public enum Format: String, Sendable, CaseIterable {
        /// A targets file or a directory of them: YAML (`.yaml`/`.yml`) or `token: host:port` lines
        /// (websockify's `TokenFile`).
        case targetsFiles
        /// A directory whose file names are tokens and whose contents are `host:port` (websockify's
        /// `TokenFileName`).
        case tokenFileNames
        /// A directory of Unix sockets: the token is a socket's file name (websockify's
        /// `UnixDomainSocketDirectory`). Symlinks and other files are not targets.
        case unixSocketDirectory
    }

    public var path: String
    public var format: Format
    /// Origins given on the command line; merged with a YAML file's top-level `origins`.
    public var extraOrigins: [String]
    /// TLS for every TCP target that does not say (`--ssl-target`).
    public var defaultTLS: BackendTLS?

    public init(path: String, format: Format = .targetsFiles, extraOrigins: [String] = []) {
        self.path = path
        self.format = format
        self.extraOrigins = extraOrigins
    }

    /// The files that make up the source, sorted by name.
    public func files() throws -> [String] {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: self.path, isDirectory: &isDirectory) else {
            throw TargetsFileError(file: self.path, line: nil, message: "no such file or directory")
        }
        guard isDirectory.boolValue else { return [self.path] }
        let names: [String]
        do {
            names = try FileManager.default.contentsOfDirectory(atPath: self.path)
        } catch {
            throw TargetsFileError(
                file: self.path,
                line: nil,
                message: "cannot list directory: \(error.localizedDescription)"
            )
        }
        return names.filter { !$0.hasPrefix(".") }.sorted().compactMap { name in
            let full = (self.path as NSString).appendingPathComponent(name)
            var isDir: ObjCBool = false
            guard FileManager.default.fileExists(atPath: full, isDirectory: &isDir), !isDir.boolValue else {
                return nil
            }
            return full
        }
    }

    /// Whether `path` names a YAML targets file (ours, read strictly) rather than websockify's token format.
    static func isYAML(_ path: String) -> Bool {
        let lower = path.lowercased()
        return lower.hasSuffix(".yaml") || lower.hasSuffix(".yml")
    }

    /// Loads every file; throws the first error with its location. Token files are read as websockify reads them:
    /// a malformed line is skipped, a token defined again in a later token file replaces the earlier one, and a
    /// token file or directory that does not exist yet is an empty table; each is in the table's `warnings`. YAML
    /// files stay strict: any error there, or a YAML token defined twice, fails the load.
    public func load() throws -> TargetTable {
        var map: [String: Target] = [:]
        var origins = self.extraOrigins
        var warnings: [TargetsFileError] = []
        if !Self.isYAML(self.path), !FileManager.default.fileExists(atPath: self.path) {
            // websockify starts without it and answers every token as unknown until the file appears.
            var table = TargetTable(mode: .tokens([:]), origins: try self.allowList(origins))
            table.warnings = [
                TargetsFileError(
                    file: self.path,
                    line: nil,
                    message: "no such file or directory: every token is unknown until it exists"
                )
            ]
            return table
        }
        switch self.format {
        case .targetsFiles:
            break
        case .tokenFileNames:
            map = try self.loadTokenFileNames()
            if let tls = self.defaultTLS {
                let loaded: BackendTLS
                do { loaded = try tls.load() } catch {
                    throw TargetsFileError(file: self.path, line: nil, message: "--ssl-target: \(error)")
                }
                for (token, target) in map { map[token]?.tls = target.tls ?? loaded }
            }
            return TargetTable(mode: .tokens(Self.identified(map)), origins: try self.allowList(origins))
        case .unixSocketDirectory:
            map = try self.loadSocketDirectory()
            return TargetTable(mode: .tokens(Self.identified(map)), origins: try self.allowList(origins))
        }
        // --ssl-target: one context for every TCP target without its own `tls:`.
        let defaultTLS: BackendTLS?
        do { defaultTLS = try self.defaultTLS.map { try $0.load() } } catch {
            throw TargetsFileError(file: self.path, line: nil, message: "--ssl-target: \(error)")
        }
        var definedInYAML: Set<String> = []
        for file in try self.files() {
            let text: String
            do {
                let data = try Data(contentsOf: URL(fileURLWithPath: file))
                guard let decoded = String(data: data, encoding: .utf8) else {
                    throw TargetsFileError(file: file, line: nil, message: "not valid UTF-8 text")
                }
                text = decoded
            } catch let error as TargetsFileError {
                throw error
            } catch {
                throw TargetsFileError(file: file, line: nil, message: "cannot read: \(error.localizedDescription)")
            }
            let yaml = Self.isYAML(file)
            let contents: TargetsFileContents
            if yaml {
                contents = try YAMLTargetsParser.parse(text, file: file)
            } else {
                var skipped: [TargetsFileError] = []
                contents = TokenFileParser.parse(text, file: file, errors: &skipped)
                warnings += skipped.map {
                    TargetsFileError(file: $0.file, line: $0.line, message: "\($0.message); line skipped")
                }
            }
            origins += contents.origins
            for var entry in contents.entries {
                if entry.target.tls == nil, let tls = defaultTLS, case .tcp = entry.target.backend {
                    entry.target.tls = tls
                }
                if let tls = entry.target.tls, tls.context == nil {
                    do {
                        entry.target.tls = try tls.load()
                    } catch let error as TLSFileError {
                        throw TargetsFileError(file: file, line: entry.tlsLine ?? entry.line, message: "tls: \(error)")
                    }
                }
                if let existing = map[entry.token] {
                    let message =
                        "token \(Target.redact(entry.token)) is already defined at \(existing.definedAt ?? "?")"
                    if yaml || definedInYAML.contains(entry.token) {
                        throw TargetsFileError(file: file, line: entry.line, message: message)
                    }
                    // websockify's dictionary keeps the last definition read.
                    warnings.append(
                        TargetsFileError(file: file, line: entry.line, message: "\(message); this later one is used")
                    )
                }
                if yaml { definedInYAML.insert(entry.token) }
                map[entry.token] = entry.target
            }
        }
        var table = TargetTable(mode: .tokens(Self.identified(map)), origins: try self.allowList(origins))
        table.warnings = warnings
        return table
    }

    /// Gives every target its identity (its token: limits count by it) and a metric label of its own: targets
    /// whose names collide (two tokens with the same first characters, or one name in two files) get `#1`, `#2`…
    /// in the order of their definitions, so their series do not merge.
    static func identified(_ map: [String: Target]) -> [String: Target] {
        var result = map
        for (token, target) in map {
            result[token]?.identity = Target.identity(token: token)
            result[token]?.metricLabel = target.name
        }
        let groups = Dictionary(grouping: map.keys, by: { map[$0]!.name })
        for (_, tokens) in groups where tokens.count > 1 {
            let ordered = tokens.sorted { first, second in
                let a = map[first]!.definedAt ?? ""
                let b = map[second]!.definedAt ?? ""
                if a != b { return a.compare(b, options: .numeric) == .orderedAscending }
                return first < second
            }
            for (index, token) in ordered.enumerated() {
                result[token]?.metricLabel = "\(map[token]!.name)#\(index + 1)"
            }
        }
        return result
    }

    private func allowList(_ origins: [String]) throws -> OriginAllowList? {
        origins.isEmpty ? nil : try YAMLTargetsParser.origins(origins, file: self.path, line: nil)
    }

    private func requireDirectory() throws {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: self.path, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw TargetsFileError(
                file: self.path,
                line: nil,
                message: "not a directory (\(self.format.pluginName) needs one)"
            )
        }
    }

    /// `TokenFileName`: each regular file's name is a token, its first line `host:port`.
    private func loadTokenFileNames() throws -> [String: Target] {
        try self.requireDirectory()
        var map: [String: Target] = [:]
        for file in try self.files() {
            let token = (file as NSString).lastPathComponent
            guard let data = FileManager.default.contents(atPath: file), let text = String(data: data, encoding: .utf8)
            else {
                throw TargetsFileError(file: file, line: nil, message: "cannot read as UTF-8 text")
            }
            let line = TokenFileParser.lines(text).first { !$0.isEmpty }.map { String($0).trimmingWhitespace() } ?? ""
            switch BackendAddress.parseHostPort(line) {
            case .success(let backend):
                map[token] = Target(name: Target.redact(token), backend: backend, definedAt: "\(file):1")
            case .failure(let error):
                throw TargetsFileError(file: file, line: 1, message: error.message)
            }
        }
        return map
    }

    /// `UnixDomainSocketDirectory`: each socket (not a symlink) in the directory is a target named by its file name.
    private func loadSocketDirectory() throws -> [String: Target] {
        try self.requireDirectory()
        var map: [String: Target] = [:]
        let names = (try? FileManager.default.contentsOfDirectory(atPath: self.path)) ?? []
        for name in names where !name.hasPrefix(".") {
            let full = (self.path as NSString).appendingPathComponent(name)
            var info = stat()
            guard lstat(full, &info) == 0, (info.st_mode & S_IFMT) == S_IFSOCK else { continue }
            map[name] = Target(name: Target.redact(name), backend: .unix(path: full), definedAt: full)
        }
        return map
    }

    /// Everything `wsbridge check` reports: the table when the source is valid, else every error found (all bad
    /// lines of token files, all bad targets of YAML files, duplicate tokens).
    public func check() -> (table: TargetTable?, errors: [TargetsFileError]) {
        guard self.format == .targetsFiles else {
            do {
                let table = try self.load()
                return table.warnings.isEmpty ? (table, []) : (nil, table.warnings)
            } catch let error as TargetsFileError { return (nil, [error]) } catch {
                return (nil, [TargetsFileError(file: self.path, line: nil, message: "\(error)")])
            }
        }
        var errors: [TargetsFileError] = []
        var seen: [String: Target] = [:]
        let files: [String]
        do { files = try self.files() } catch let error as TargetsFileError { return (nil, [error]) } catch {
            return (nil, [TargetsFileError(file: self.path, line: nil, message: "\(error)")])
        }
        for file in files {
            guard let data = FileManager.default.contents(atPath: file), let text = String(data: data, encoding: .utf8)
            else {
                errors.append(TargetsFileError(file: file, line: nil, message: "cannot read as UTF-8 text"))
                continue
            }
            var contents = TargetsFileContents()
            if Self.isYAML(file) {
                do {
                    contents = try YAMLTargetsParser.parse(text, file: file, errors: &errors)
                } catch let error as TargetsFileError {
                    errors.append(error)
                } catch {
                    errors.append(TargetsFileError(file: file, line: nil, message: "\(error)"))
                }
            } else {
                contents = TokenFileParser.parse(text, file: file, errors: &errors)
            }
            for entry in contents.entries {
                if let existing = seen[entry.token] {
                    errors.append(
                        TargetsFileError(
                            file: file,
                            line: entry.line,
                            message:
                                "token \(Target.redact(entry.token)) is already defined at \(existing.definedAt ?? "?")"
                        )
                    )
                } else {
                    seen[entry.token] = entry.target
                }
            }
        }
        guard errors.isEmpty else { return (nil, errors) }
        do { return (try self.load(), []) } catch let error as TargetsFileError { return (nil, [error]) } catch {
            return (nil, [TargetsFileError(file: self.path, line: nil, message: "\(error)")])
        }
    }

    /// Parses one file's text, choosing the format by its name: `.yaml`/`.yml` is YAML, anything else is
    /// websockify's token format.
    public static func parse(_ text: String, file: String) throws -> TargetsFileContents {
        if Self.isYAML(file) {
            return try YAMLTargetsParser.parse(text, file: file)
        }
        return try TokenFileParser.parse(text, file: file)
    }
}

extension TargetsLoader.Format {
    /// websockify's name for this format (`--token-plugin NAME`).
    public var pluginName: String {
        switch self {
        case .targetsFiles: return "TokenFile"
        case .tokenFileNames: return "TokenFileName"
        case .unixSocketDirectory: return "UnixDomainSocketDirectory"
        }
    }
}
