import NIOConcurrencyHelpers

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// A log file opened for appending (`--log-file`), reopened on request (SIGHUP) so that logrotate can move it away:
/// lines written after `reopen` go to a new file at the same path.
public final class LogFile: Sendable {
    public let path: String
    private let descriptor: NIOLockedValueBox<CInt>

    /// Opens (creating, mode 0640) `path` for appending; throws `LogFileError` when it cannot be opened.
    public init(path: String) throws {
        self.path = path
        self.descriptor = NIOLockedValueBox(try Self.open(path))
    }

    deinit {
        let descriptor = self.descriptor.withLockedValue { $0 }
        if descriptor >= 0 { close(descriptor) }
    }

    /// Writes `line` whole (one `write` call, so that lines of several threads do not interleave).
    public func write(_ line: String) {
        self.descriptor.withLockedValue { descriptor in
            var bytes = Array(line.utf8)
            var offset = 0
            while offset < bytes.count {
                let written = bytes.withUnsafeMutableBytes { buffer in
                    systemWrite(descriptor, buffer.baseAddress! + offset, buffer.count - offset)
                }
                if written < 0 {
                    if errno == EINTR { continue }
                    return
                }
                offset += written
            }
            bytes.removeAll()
        }
    }

    /// Opens the path again (after logrotate renamed the file); on failure the old file stays in use and the error
    /// is returned.
    @discardableResult
    public func reopen() -> LogFileError? {
        do {
            let new = try Self.open(self.path)
            let old = self.descriptor.withLockedValue { descriptor in
                defer { descriptor = new }
                return descriptor
            }
            close(old)
            return nil
        } catch let error as LogFileError {
            return error
        } catch {
            return LogFileError(path: self.path, errno: EIO)
        }
    }

    private static func open(_ path: String) throws -> CInt {
        let descriptor = systemOpen(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0o640)
        guard descriptor >= 0 else { throw LogFileError(path: path, errno: errno) }
        return descriptor
    }
}

/// A log file that cannot be opened.
public struct LogFileError: Error, CustomStringConvertible, Sendable {
    public var path: String
    public var errno: CInt
    public var description: String { "\(self.path): cannot open log file: \(String(cString: strerror(self.errno)))" }
}

#if canImport(Glibc)
    private let systemWrite = Glibc.write
    private func systemOpen(_ path: String, _ flags: CInt, _ mode: mode_t) -> CInt { Glibc.open(path, flags, mode) }
#elseif canImport(Darwin)
    private let systemWrite = Darwin.write
    private func systemOpen(_ path: String, _ flags: CInt, _ mode: mode_t) -> CInt { Darwin.open(path, flags, mode) }
#endif
