/// A WebSocket close status code (RFC 6455 §7.4) with the reasons wsbridge uses.
public struct CloseCode: Hashable, Sendable, CustomStringConvertible {
    public var rawValue: UInt16

    public init(_ rawValue: UInt16) { self.rawValue = rawValue }

    public static let normal = CloseCode(1000)
    public static let goingAway = CloseCode(1001)
    public static let protocolError = CloseCode(1002)
    public static let unsupportedData = CloseCode(1003)
    /// Never sent on the wire: the peer closed without a status code.
    public static let noStatus = CloseCode(1005)
    /// Never sent on the wire: the connection was lost without a Close frame.
    public static let abnormal = CloseCode(1006)
    public static let invalidPayload = CloseCode(1007)
    public static let policyViolation = CloseCode(1008)
    public static let tooBig = CloseCode(1009)
    public static let internalError = CloseCode(1011)
    public static let badGateway = CloseCode(1014)

    /// Whether a peer may send this code in a Close frame (RFC 6455 §7.4.1/§7.4.2 and the IANA registry).
    public var isValidOnWire: Bool {
        switch self.rawValue {
        case 1000...1003, 1007...1014: return true
        case 3000...4999: return true
        default: return false
        }
    }

    public var description: String { String(self.rawValue) }
}
