import Foundation
import Logging
import NIOConcurrencyHelpers

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// Sends log lines to syslog as websockify's `--syslog SERVER` does: to a local datagram socket (`/dev/log`) or over
/// UDP to `host:port`, in RFC 5424 (`<PRI>1 TIMESTAMP HOST wsbridge PID - - MSG`) or, with `legacy`, the old BSD
/// format (`<PRI>wsbridge[PID]: MSG`). Facility `user`, or `daemon` when running as one. A message that cannot be
/// sent is dropped (logging never blocks or fails the bridge); a local socket is reconnected at the next message.
public final class SyslogWriter: Sendable {
    public enum Facility: Int, Sendable {
        case user = 1
        case daemon = 3
    }

    public enum Destination: Sendable, Equatable {
        case local(path: String)
        case udp(host: String, port: Int)

        /// websockify's reading: `host:port` (split at the last colon) when the text has a colon, else a socket path.
        public static func parse(_ text: String) -> Result<Destination, SyslogDestinationError> {
            guard let colon = text.lastIndex(of: ":") else { return .success(.local(path: text)) }
            var host = String(text[..<colon])
            if host.hasPrefix("["), host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
            guard let port = Int(text[text.index(after: colon)...]), (1...65535).contains(port), !host.isEmpty else {
                return .failure(SyslogDestinationError(text: text))
            }
            return .success(.udp(host: host, port: port))
        }
    }

    public let destination: Destination
    public let facility: Facility
    public let legacy: Bool
    private let identity = "wsbridge"
    private let socket = NIOLockedValueBox<CInt>(-1)

    public init(destination: Destination, facility: Facility = .user, legacy: Bool = false) {
        self.destination = destination
        self.facility = facility
        self.legacy = legacy
    }

    deinit {
        let descriptor = self.socket.withLockedValue { $0 }
        if descriptor >= 0 { close(descriptor) }
    }

    /// The datagram for `message` at `level` (public for tests).
    public func datagram(_ message: String, level: Logger.Level, now: Date = Date()) -> [UInt8] {
        let priority = self.facility.rawValue * 8 + Self.severity(level)
        let text = message.replacingOccurrences(of: "\n", with: " ")
        if self.legacy {
            return Array("<\(priority)>\(self.identity)[\(getpid())]: \(text)".utf8)
        }
        let timestamp = now.formatted(Self.timestamp)
        return Array("<\(priority)>1 \(timestamp) \(Self.hostname) \(self.identity) \(getpid()) - - \(text)".utf8)
    }

    /// Sends one message.
    public func send(_ message: String, level: Logger.Level) {
        let bytes = self.datagram(message, level: level)
        self.socket.withLockedValue { descriptor in
            if descriptor < 0 { descriptor = self.connect() }
            guard descriptor >= 0 else { return }
            let sent = bytes.withUnsafeBytes { Glibc.send(descriptor, $0.baseAddress, $0.count, CInt(MSG_NOSIGNAL)) }
            if sent < 0, case .local = self.destination {
                // syslogd restarted: connect again once.
                close(descriptor)
                descriptor = self.connect()
                if descriptor >= 0 {
                    _ = bytes.withUnsafeBytes { Glibc.send(descriptor, $0.baseAddress, $0.count, CInt(MSG_NOSIGNAL)) }
                }
            }
        }
    }

    private func connect() -> CInt {
        switch self.destination {
        case .local(let path):
            let descriptor = Glibc.socket(AF_UNIX, CInt(SOCK_DGRAM.rawValue) | CInt(SOCK_CLOEXEC.rawValue), 0)
            guard descriptor >= 0 else { return -1 }
            var address = sockaddr_un()
            address.sun_family = sa_family_t(AF_UNIX)
            let capacity = MemoryLayout.size(ofValue: address.sun_path)
            guard path.utf8.count < capacity else {
                close(descriptor)
                return -1
            }
            withUnsafeMutableBytes(of: &address.sun_path) { buffer in
                for (index, byte) in path.utf8.enumerated() { buffer[index] = byte }
            }
            let connected = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    Glibc.connect(descriptor, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
                }
            }
            guard connected == 0 else {
                close(descriptor)
                return -1
            }
            return descriptor
        case .udp(let host, let port):
            var hints = addrinfo()
            hints.ai_socktype = CInt(SOCK_DGRAM.rawValue)
            var result: UnsafeMutablePointer<addrinfo>?
            guard getaddrinfo(host, String(port), &hints, &result) == 0, let info = result else { return -1 }
            defer { freeaddrinfo(result) }
            let descriptor = Glibc.socket(
                info.pointee.ai_family,
                CInt(SOCK_DGRAM.rawValue) | CInt(SOCK_CLOEXEC.rawValue),
                0
            )
            guard descriptor >= 0 else { return -1 }
            // A connected UDP socket: send() goes to the server, and nothing else is read.
            guard Glibc.connect(descriptor, info.pointee.ai_addr, info.pointee.ai_addrlen) == 0 else {
                close(descriptor)
                return -1
            }
            return descriptor
        }
    }

    /// RFC 5424 severities.
    static func severity(_ level: Logger.Level) -> Int {
        switch level {
        case .trace, .debug: return 7
        case .info: return 6
        case .notice: return 5
        case .warning: return 4
        case .error: return 3
        case .critical: return 2
        }
    }

    private static let timestamp = Date.ISO8601FormatStyle(includingFractionalSeconds: false, timeZone: .gmt)
    private static let hostname: String = {
        var buffer = [CChar](repeating: 0, count: 256)
        guard gethostname(&buffer, buffer.count - 1) == 0 else { return "-" }
        let name = String(cString: buffer)
        return name.isEmpty ? "-" : String(name.prefix(255))
    }()
}

/// A `--syslog` value that is neither a socket path nor `host:port`.
public struct SyslogDestinationError: Error, CustomStringConvertible, Sendable {
    public var text: String
    public var description: String { "--syslog \(self.text): expected a socket path (/dev/log) or host:port" }
}
