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
        switch BackendAddress.splitHostPort(text, ports: 0...65535, expected: "[SOURCE_ADDR:]SOURCE_PORT") {
        case .failure(let error):
            return .failure(error)
        case .success(let parts):
            if !parts.bracketed && parts.host.contains(":" as Character) {
                return .failure(.init("write an IPv6 listen address in brackets, as [\(parts.host)]:\(parts.port)"))
            }
            return .success(.init(host: parts.host.isEmpty ? nil : parts.host, port: parts.port))
        }
    }
}
