import Foundation

/// Reads a targets file or a directory of them into a `TargetTable`, completely or not at all.
public struct TargetsLoader: Sendable {
    public var path: String
    /// Origins given on the command line; merged with a YAML file's top-level `origins`.
    public var extraOrigins: [String]
    /// TLS for every TCP target that does not say (`--ssl-target`).
    public var defaultTLS: BackendTLS?

    public init(path: String, extraOrigins: [String] = []) {
        self.path = path
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
            throw TargetsFileError(file: self.path, line: nil, message: "cannot list directory: \(error.localizedDescription)")
        }
        return names.filter { !$0.hasPrefix(".") }.sorted().compactMap { name in
            let full = (self.path as NSString).appendingPathComponent(name)
            var isDir: ObjCBool = false
            guard FileManager.default.fileExists(atPath: full, isDirectory: &isDir), !isDir.boolValue else { return nil }
            return full
        }
    }

    /// A fingerprint of the files' names, sizes and modification times, to notice changes cheaply.
    public func fingerprint() -> String {
        guard let files = try? self.files() else { return "missing" }
        return files.map { file -> String in
            let attributes = try? FileManager.default.attributesOfItem(atPath: file)
            let size = (attributes?[.size] as? NSNumber)?.intValue ?? -1
            let modified = (attributes?[.modificationDate] as? Date)?.timeIntervalSince1970 ?? 0
            return "\(file)|\(size)|\(modified)"
        }.joined(separator: "\n")
    }

    /// Loads every file; throws the first error with its location.
    public func load() throws -> TargetTable {
        var map: [String: Target] = [:]
        var origins = self.extraOrigins
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
            let contents = try Self.parse(text, file: file)
            origins += contents.origins
            for var entry in contents.entries {
                if entry.target.tls == nil, let tls = self.defaultTLS, case .tcp = entry.target.backend {
                    entry.target.tls = tls
                }
                if let tls = entry.target.tls {
                    do {
                        entry.target.tls = try tls.load()
                    } catch let error as TLSFileError {
                        throw TargetsFileError(file: file, line: entry.tlsLine ?? entry.line, message: "tls: \(error)")
                    }
                }
                if let existing = map[entry.token] {
                    throw TargetsFileError(
                        file: file,
                        line: entry.line,
                        message: "token \(Target.redact(entry.token)) is already defined at \(existing.definedAt ?? "?")"
                    )
                }
                map[entry.token] = entry.target
            }
        }
        let allowList = origins.isEmpty ? nil : try YAMLTargetsParser.origins(origins, file: self.path, line: nil)
        return TargetTable(mode: .tokens(map), origins: allowList)
    }

    /// Parses one file's text, choosing the format by its name: `.yaml`/`.yml` is YAML, anything else is
    /// websockify's token format.
    public static func parse(_ text: String, file: String) throws -> TargetsFileContents {
        let lower = file.lowercased()
        if lower.hasSuffix(".yaml") || lower.hasSuffix(".yml") {
            return try YAMLTargetsParser.parse(text, file: file)
        }
        return try TokenFileParser.parse(text, file: file)
    }
}
