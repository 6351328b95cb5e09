/// websockify's listen argument: `[SOURCE_ADDR:]SOURCE_PORT`, IPv6 in brackets (`[::1]:6080`).
public struct ListenAddress: Equatable, Sendable {
    /// nil means every address, IPv4 and IPv6.
    public var host: String?
    public var port: Int

    public init(host: String?, port: Int) {
        self.host = host
        self.port = port
    }

    public static func parse(_ text: String) -> Result<ListenAddress, BackendAddress.AddressError> {
        if let port = Int(text) {
            guard (0...65535).contains(port) else { return .failure(.init("invalid port '\(text)'")) }
            return .success(.init(host: nil, port: port))
        }
        guard let colon = text.lastIndex(of: ":") else {
            return .failure(.init("expected [SOURCE_ADDR:]SOURCE_PORT, got '\(text)'"))
        }
        var host = String(text[..<colon])
        let portText = text[text.index(after: colon)...]
        guard let port = Int(portText), (0...65535).contains(port) else {
            return .failure(.init("invalid port '\(portText)' in '\(text)'"))
        }
        if host.hasPrefix("[") && host.hasSuffix("]") {
            host = String(host.dropFirst().dropLast())
        } else if host.contains(":") {
            return .failure(.init("write an IPv6 listen address in brackets, as [\(host)]:\(port)"))
        }
        return .success(.init(host: host.isEmpty ? nil : host, port: port))
    }
}
