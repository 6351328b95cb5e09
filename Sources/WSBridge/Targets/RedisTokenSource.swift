import Foundation

/// websockify's `TokenRedis` source, `host[:port[:db[:password[:namespace]]]]`: empty fields keep their defaults
/// (6379, 0, no password, no namespace); a field may be wrapped in double quotes to contain `:` (the quotes are
/// removed); an IPv6 host is written in brackets (`[::1]:6379`). Tokens are stored under `namespace:token`
/// (just `token` without a namespace); values are JSON `{"host": "h:p"}` or plain `h:p`.
public struct RedisTokenSource: Sendable, Equatable {
    public var endpoint: RedisEndpoint
    public var namespace: String

    public init(endpoint: RedisEndpoint, namespace: String = "") {
        self.endpoint = endpoint
        self.namespace = namespace
    }

    public struct ParseError: Error, Equatable, CustomStringConvertible {
        public var message: String
        public var description: String { self.message }
    }

    public static let expectedFormat = "host[:port[:db[:password[:namespace]]]]"

    public static func parse(_ source: String) throws -> RedisTokenSource {
        let fields = try Self.fields(source)
        guard (1...5).contains(fields.count), let host = fields.first, !host.isEmpty else {
            throw ParseError(message: "--token-source '\(source)' is not \(Self.expectedFormat)")
        }
        var endpoint = RedisEndpoint(host: host)
        if fields.count > 1, !fields[1].isEmpty {
            guard let port = Int(fields[1]), (1...65535).contains(port) else {
                throw ParseError(message: "--token-source: invalid Redis port '\(fields[1])'")
            }
            endpoint.port = port
        }
        if fields.count > 2, !fields[2].isEmpty {
            guard let db = Int(fields[2]), db >= 0 else {
                throw ParseError(message: "--token-source: invalid Redis database '\(fields[2])'")
            }
            endpoint.database = db
        }
        if fields.count > 3, !fields[3].isEmpty { endpoint.password = fields[3] }
        return RedisTokenSource(endpoint: endpoint, namespace: fields.count > 4 ? fields[4] : "")
    }

    /// Splits on `:` outside double quotes and brackets; a quoted field loses its quotes.
    static func fields(_ source: String) throws -> [String] {
        var fields: [String] = []
        var current = ""
        var quoted = false
        var bracketed = false
        var wasQuoted = false
        for character in source {
            switch character {
            case "\"":
                quoted.toggle()
                wasQuoted = true
            case "[" where !quoted && current.isEmpty && fields.isEmpty:
                bracketed = true
            case "]" where !quoted && bracketed:
                bracketed = false
            case ":" where !quoted && !bracketed:
                fields.append(current)
                current = ""
                wasQuoted = false
            default:
                current.append(character)
            }
        }
        guard !quoted else { throw ParseError(message: "--token-source '\(source)': unbalanced double quote") }
        guard !bracketed else { throw ParseError(message: "--token-source '\(source)': unbalanced bracket") }
        _ = wasQuoted
        fields.append(current)
        return fields
    }

    /// The Redis key of `token`.
    public func key(for token: String) -> String {
        self.namespace.isEmpty ? token : "\(self.namespace):\(token)"
    }

    /// A stored value as websockify's `TokenRedis` reads it: JSON with `host` as `h:p` (or, as an extension,
    /// `host` and `port` apart, as JSONTokenApi answers), or plain `h:p`; surrounding white space is ignored and
    /// IPv6 hosts may be bracketed or bare (split on the last colon). Anything else is nil.
    public static func backend(fromValue bytes: [UInt8]) -> BackendAddress? {
        guard let text = String(validating: bytes, as: UTF8.self)?.trimmingWhitespace(), !text.isEmpty else {
            return nil
        }
        if text.hasPrefix("{") {
            guard let object = (try? JSONSerialization.jsonObject(with: Data(text.utf8))) as? [String: Any],
                let host = object["host"] as? String
            else { return nil }
            if let port = object["port"] {
                let portText = (port as? String) ?? (port as? NSNumber).map { "\($0.intValue)" } ?? ""
                let hostPart = host.contains(":" as Character) && !host.hasPrefix("[") ? "[\(host)]" : host
                return try? BackendAddress.parseHostPort("\(hostPart):\(portText)").get()
            }
            return try? BackendAddress.parseHostPort(host).get()
        }
        guard !text.contains(where: { $0.isWhitespace }) else { return nil }
        return try? BackendAddress.parseHostPort(text).get()
    }
}
