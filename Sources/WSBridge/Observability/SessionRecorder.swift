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
/// Writes happen on a serial queue of the recorder's own, never on the event loop; once `limit` bytes of payload
/// were recorded, later traffic is left out (the file stays valid JavaScript).
public final class SessionRecorder: Sendable {
    private let queue: DispatchQueue
    private let handle: FileHandle
    private let start: NIODeadline
    private let limit: Int
    private let recorded = NIOLockedValueBox(0)
    public let path: String

    /// Creates `PREFIX.N` (mode 0600: recordings contain everything typed, passwords included).
    public init(path: String, limit: Int) throws {
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard fd >= 0 else {
            throw RecorderError(message: "cannot create \(path): \(String(cString: strerror(errno)))")
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
        let allowed = self.recorded.withLockedValue { total -> Bool in
            guard total + count <= self.limit else { return false }
            total += count
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

/// Names recordings `PREFIX.1`, `PREFIX.2`, … in session order, as websockify does.
public final class RecordingPolicy: Sendable {
    public let prefix: String
    public let limit: Int
    private let counter = NIOLockedValueBox(0)

    public init(prefix: String, limit: Int) {
        self.prefix = prefix
        self.limit = limit
    }

    func makeRecorder() throws -> SessionRecorder {
        let number = self.counter.withLockedValue { value -> Int in
            value += 1
            return value
        }
        return try SessionRecorder(path: "\(self.prefix).\(number)", limit: self.limit)
    }
}
