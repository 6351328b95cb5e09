import Foundation
import NIOConcurrencyHelpers
import NIOCore

/// Writes one session's traffic in websockify's `--record` format, which noVNC's playback page reads:
///
/// ```
/// var VNC_frame_encoding = 'binary';
/// var VNC_frame_data = [
/// '{12{RFB 003.008\n',      // to the client, 12 ms after the start
/// '}15}RFB 003.008\n',      // from the client
/// 'EOF'];
/// ```
///
/// Payload bytes are escaped as websockify does (latin-1 through Python's `unicode_escape`, then `'` → `\'`).
/// Writes happen on a serial queue of the recorder's own, never on the event loop; from the first message that
/// would take the payload recorded beyond `limit` bytes, later traffic is left out (the file stays valid
/// JavaScript, and what it holds is a prefix of the session).
public final class SessionRecorder: Sendable {
    private let queue: DispatchQueue
    private let handle: FileHandle
    private let start: NIODeadline
    private let limit: Int
    private let recorded = NIOLockedValueBox((total: 0, full: false))
    public let path: String

    /// Creates `PREFIX.N` (mode 0600: recordings contain everything typed, passwords included). The file must not
    /// exist: an earlier recording is never overwritten, and a symlink planted at the path is neither followed nor
    /// its target truncated (`O_EXCL`, `O_NOFOLLOW`).
    public init(path: String, limit: Int) throws {
        let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600)
        guard fd >= 0 else {
            throw RecorderError(
                message: "cannot create \(path): \(String(cString: strerror(errno)))",
                exists: errno == EEXIST
            )
        }
        self.handle = FileHandle(fileDescriptor: fd, closeOnDealloc: true)
        self.path = path
        self.limit = limit
        self.start = .now()
        self.queue = DispatchQueue(label: "wsbridge.record")
        self.write("var VNC_frame_encoding = 'binary';\nvar VNC_frame_data = [\n")
    }

    public struct RecorderError: Error, CustomStringConvertible {
        public var message: String
        /// Something (a file, a symlink) is already at the path.
        public var exists = false
        public var description: String { self.message }
    }

    /// Bytes the bridge sent to the client.
    func toClient(_ buffer: ByteBuffer) { self.record("{", buffer) }

    /// Bytes the client sent.
    func fromClient(_ buffer: ByteBuffer) { self.record("}", buffer) }

    /// Ends the array; the file is complete.
    func finish() {
        let handle = self.handle
        self.queue.async {
            handle.write(Data("'EOF'];\n".utf8))
            try? handle.close()
        }
    }

    private func record(_ marker: String, _ buffer: ByteBuffer) {
        let count = buffer.readableBytes
        let allowed = self.recorded.withLockedValue { recorded -> Bool in
            // The first message that does not fit ends the recording: a smaller one after it would leave a hole
            // in the stream, and a replay of RFB with a hole in it is garbage.
            guard !recorded.full, count <= self.limit - recorded.total else {
                recorded.full = true
                return false
            }
            recorded.total += count
            return true
        }
        guard allowed else { return }
        let millis = (NIODeadline.now() - self.start).nanoseconds / 1_000_000
        let bytes = Array(buffer.readableBytesView)
        self.queue.async { [handle] in
            handle.write(Data("'\(marker)\(millis)\(marker)\(Self.escape(bytes))',\n".utf8))
        }
    }

    private func write(_ text: String) {
        let handle = self.handle
        self.queue.async { handle.write(Data(text.utf8)) }
    }

    /// Python's `bytes.decode('latin1').encode('unicode_escape')`, then `'` → `\'`.
    static func escape(_ bytes: [UInt8]) -> String {
        var out = ""
        out.reserveCapacity(bytes.count)
        let hex = Array("0123456789abcdef")
        for byte in bytes {
            switch byte {
            case UInt8(ascii: "\\"): out += "\\\\"
            case UInt8(ascii: "'"): out += "\\'"
            case 0x09: out += "\\t"
            case 0x0A: out += "\\n"
            case 0x0D: out += "\\r"
            case 0x20...0x7E: out.unicodeScalars.append(Unicode.Scalar(byte))
            default:
                out += "\\x"
                out.append(hex[Int(byte >> 4)])
                out.append(hex[Int(byte & 0x0F)])
            }
        }
        return out
    }
}

/// Names recordings `PREFIX.1`, `PREFIX.2`, … in session order, as websockify does, starting after the highest
/// number already there (a restart never overwrites earlier recordings); a name taken meanwhile is skipped.
public final class RecordingPolicy: Sendable {
    public let prefix: String
    public let limit: Int
    private let counter: NIOLockedValueBox<Int>

    public init(prefix: String, limit: Int) {
        self.prefix = prefix
        self.limit = limit
        self.counter = NIOLockedValueBox(Self.highestNumber(prefix: prefix))
    }

    /// The highest N of the existing `PREFIX.N` entries (files, symlinks, anything), or 0.
    static func highestNumber(prefix: String) -> Int {
        let url = URL(fileURLWithPath: prefix)
        let directory = url.deletingLastPathComponent().path
        let base = url.lastPathComponent + "."
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        return names.compactMap { name -> Int? in
            guard name.hasPrefix(base) else { return nil }
            let rest = name.dropFirst(base.count)
            guard !rest.isEmpty, rest.allSatisfy(\.isASCII), rest.allSatisfy(\.isNumber) else { return nil }
            return Int(rest)
        }.max() ?? 0
    }

    func makeRecorder() throws -> SessionRecorder {
        var lastError: (any Error)?
        for _ in 0..<100 {
            let number = self.counter.withLockedValue { value -> Int in
                value += 1
                return value
            }
            do {
                return try SessionRecorder(path: "\(self.prefix).\(number)", limit: self.limit)
            } catch let error as SessionRecorder.RecorderError where error.exists {
                lastError = error
                continue
            }
        }
        throw lastError ?? SessionRecorder.RecorderError(message: "cannot create a recording at \(self.prefix).N")
    }
}
