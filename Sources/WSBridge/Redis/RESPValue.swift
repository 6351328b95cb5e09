/// One RESP2 value, as a Redis server sends it (https://redis.io/docs/latest/develop/reference/protocol-spec/).
///
/// wsbridge talks to Redis with its own small client (`RedisClient`), because no Swift Redis client is among the
/// packages available to this project; it only needs GET, AUTH, SELECT, PING and SUBSCRIBE.
public enum RESPValue: Hashable, Sendable {
    case simpleString(String)
    case error(String)
    case integer(Int64)
    /// A bulk string; nil is Redis' null bulk string (`$-1`), e.g. GET of a missing key.
    case bulkString([UInt8]?)
    /// An array; nil is the null array (`*-1`).
    case array([RESPValue]?)

    /// The value as text, for simple and bulk strings.
    public var string: String? {
        switch self {
        case .simpleString(let text): return text
        case .bulkString(let bytes?): return String(decoding: bytes, as: UTF8.self)
        default: return nil
        }
    }

    /// A command as Redis expects it from clients: an array of bulk strings.
    public static func encodeCommand(_ arguments: [String]) -> [UInt8] {
        var out: [UInt8] = Array("*\(arguments.count)\r\n".utf8)
        for argument in arguments {
            let bytes = Array(argument.utf8)
            out += Array("$\(bytes.count)\r\n".utf8)
            out += bytes
            out += [13, 10]
        }
        return out
    }
}
