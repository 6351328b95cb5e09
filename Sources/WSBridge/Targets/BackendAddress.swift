/// Where a target's bytes go: a TCP host and port, a Unix-domain socket, or back to the client.
public enum BackendAddress: Hashable, Sendable, CustomStringConvertible {
    case tcp(host: String, port: Int)
    case unix(path: String)
    /// No backend: the bridge sends every message back to the client (client debugging, health probes and the
    /// Autobahn conformance suite).
    case echo

    /// Parses `host:port`, `[v6]:port` or a bare IPv6 address followed by `:port` (split on the last colon,
    /// as websockify does).
    public static func parseHostPort(_ text: String) -> Result<BackendAddress, AddressError> {
        let text = text.trimmingWhitespace()
        let parts: (host: String, bracketed: Bool, port: Int)
        switch Self.splitHostPort(text, ports: 1...65535, expected: "host:port") {
        case .success(let split): parts = split
        case .failure(let error): return .failure(error)
        }
        let host = parts.host
        guard !host.isEmpty else { return .failure(.init("missing host in '\(text)'")) }
        guard !host.contains(where: { $0 == " " || $0 == "\t" || $0 == "/" }) else {
            return .failure(.init("invalid host '\(host)'"))
        }
        return .success(.tcp(host: host, port: parts.port))
    }

    /// Splits `host:port` on the last colon; a host in brackets loses them (`bracketed` says so).
    static func splitHostPort(
        _ text: String,
        ports: ClosedRange<Int>,
        expected: String
    ) -> Result<(host: String, bracketed: Bool, port: Int), AddressError> {
        guard let colon = text.lastIndex(of: ":") else { return .failure(.init("expected \(expected), got '\(text)'")) }
        let host = String(text[..<colon])
        let portText = text[text.index(after: colon)...]
        guard let port = Int(portText), ports.contains(port) else {
            return .failure(.init("invalid port '\(portText)' in '\(text)'"))
        }
        if host.hasPrefix("[") && host.hasSuffix("]") {
            return .success((String(host.dropFirst().dropLast()), true, port))
        }
        if host.hasPrefix("[") || host.hasSuffix("]") {
            return .failure(.init("unbalanced brackets in '\(text)'"))
        }
        return .success((host, false, port))
    }

    public var description: String {
        switch self {
        case .tcp(let host, let port):
            return host.contains(":" as Character) ? "[\(host)]:\(port)" : "\(host):\(port)"
        case .unix(let path):
            return "unix:\(path)"
        case .echo:
            return "echo"
        }
    }

    public struct AddressError: Error, Equatable, Sendable, CustomStringConvertible {
        public var message: String
        public init(_ message: String) { self.message = message }
        public var description: String { self.message }
    }
}

extension StringProtocol {
    func trimmingWhitespace() -> String {
        // Most values (every header of a browser's request) have nothing to trim: no copy for them.
        guard let first = self.first, let last = self.last, first.isWhitespace || last.isWhitespace else {
            return String(self)
        }
        var slice = Substring(self)
        while let first = slice.first, first.isWhitespace { slice.removeFirst() }
        while let last = slice.last, last.isWhitespace { slice.removeLast() }
        return String(slice)
    }
}
