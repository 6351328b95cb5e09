import ArgumentParser

/// Whether a target's sessions may be compressed (RFC 7692 permessage-deflate): the global `--compression`, or a
/// YAML target's `compression:`.
public enum CompressionMode: String, Sendable, Hashable, CaseIterable, ExpressibleByArgument {
    /// Accept a client's permessage-deflate offer.
    case deflate
    /// Never answer the offer: the session is not compressed.
    case off
}

/// What a session compresses with, as negotiated at the handshake (RFC 7692 §7.1).
///
/// "Server" is the bridge's direction to the client (backend bytes, compressed by the bridge); "client" is the
/// client's direction (inflated by the bridge).
public struct DeflateParameters: Equatable, Sendable {
    /// The bridge resets its compressor after each message (it may free it between messages).
    public var serverNoContextTakeover: Bool
    /// The client resets its compressor after each message: the bridge's inflater may be freed between messages.
    public var clientNoContextTakeover: Bool
    /// The LZ77 window the bridge compresses with (9...15).
    public var serverWindowBits: Int
    /// The window the bridge inflates with: what it told the client to stay within, else 15.
    public var clientWindowBits: Int
    /// The `Sec-WebSocket-Extensions` value of the 101.
    public var response: String

    public init(
        serverNoContextTakeover: Bool = false,
        clientNoContextTakeover: Bool = false,
        serverWindowBits: Int = DeflateNegotiation.preferredWindowBits,
        clientWindowBits: Int = 15,
        response: String = "permessage-deflate"
    ) {
        self.serverNoContextTakeover = serverNoContextTakeover
        self.clientNoContextTakeover = clientNoContextTakeover
        self.serverWindowBits = serverWindowBits
        self.clientWindowBits = clientWindowBits
        self.response = response
    }
}

/// The server's side of the permessage-deflate negotiation (RFC 7692 §5 and §7.1), as a pure function of the
/// request's `Sec-WebSocket-Extensions` headers.
///
/// The client lists offers in its order of preference; the first acceptable one is accepted, and the others, as
/// every other extension, are left unanswered. An offer is declined (never the handshake failed: §7 leaves that to
/// the client) when it has a parameter the RFC does not define for offers, a parameter twice, a value that is not
/// allowed, or asks for what zlib cannot do: `server_max_window_bits=8` (zlib's raw deflate has no 256-byte window).
public enum DeflateNegotiation {
    public static let extensionName = "permessage-deflate"

    /// The window the bridge compresses with unless the client asks for less, and asks the client to stay within
    /// when the client allows it (`client_max_window_bits` in its offer): 4 KiB windows keep a session's zlib state
    /// near 50 KiB (docs/behaviour.md), and repeated lines of a terminal or a log fall within them.
    public static let preferredWindowBits = 12

    /// The parameters of the accepted offer, or nil when no offer is acceptable (or none was made).
    public static func negotiate(offers headerValues: [String]) -> DeflateParameters? {
        for offer in Self.extensions(in: headerValues) where offer.name == Self.extensionName {
            if let accepted = Self.accept(offer.parameters) { return accepted }
        }
        return nil
    }

    // MARK: the offer

    /// An extension of the header: its name and its parameters in order, values unquoted (nil: no value).
    struct Extension: Equatable {
        var name: String
        var parameters: [(name: String, value: String?)]

        static func == (lhs: Extension, rhs: Extension) -> Bool {
            lhs.name == rhs.name && lhs.parameters.elementsEqual(rhs.parameters) { $0 == $1 }
        }
    }

    /// The extensions of every header value (RFC 6455 §9.1: `extension *( ";" param )`, comma separated, values a
    /// token or a quoted string). An extension whose syntax is broken is left out: it cannot be accepted.
    static func extensions(in headerValues: [String]) -> [Extension] {
        var result: [Extension] = []
        for value in headerValues {
            for item in Self.split(value, on: ",") {
                var parts = Self.split(item, on: ";").map { $0.trimmingSpaces() }
                guard !parts.isEmpty else { continue }
                let name = parts.removeFirst().lowercased()
                guard Self.isToken(name) else { continue }
                var parameters: [(name: String, value: String?)] = []
                var valid = true
                for part in parts {
                    guard let parameter = Self.parameter(part) else {
                        valid = false
                        break
                    }
                    parameters.append(parameter)
                }
                if valid { result.append(Extension(name: name, parameters: parameters)) }
            }
        }
        return result
    }

    private static func parameter(_ text: String) -> (name: String, value: String?)? {
        guard let equals = text.firstIndex(of: "=") else {
            return Self.isToken(text) ? (text.lowercased(), nil) : nil
        }
        let name = String(text[..<equals]).trimmingSpaces().lowercased()
        var value = String(text[text.index(after: equals)...]).trimmingSpaces()
        guard Self.isToken(name) else { return nil }
        if value.hasPrefix("\"") {
            guard value.count >= 2, value.hasSuffix("\"") else { return nil }
            value = String(value.dropFirst().dropLast()).replacingBackslashEscapes()
        }
        // RFC 6455 §9.1: a quoted value, once unquoted, must be a token too.
        return Self.isToken(value) ? (name, value) : nil
    }

    /// Splits on `separator` outside quoted strings.
    private static func split(_ text: String, on separator: Character) -> [String] {
        var parts: [String] = []
        var current = ""
        var quoted = false
        var escaped = false
        for character in text {
            if escaped {
                escaped = false
            } else if quoted && character == "\\" {
                escaped = true
            } else if character == "\"" {
                quoted.toggle()
            } else if !quoted && character == separator {
                parts.append(current)
                current = ""
                continue
            }
            current.append(character)
        }
        parts.append(current)
        return parts.filter { !$0.trimmingSpaces().isEmpty }
    }

    private static func isToken(_ text: String) -> Bool {
        !text.isEmpty && text.utf8.allSatisfy(RequestHeadParser.isTokenByte)
    }

    // MARK: accepting

    /// The response to one permessage-deflate offer, or nil to decline it (RFC 7692 §7.1).
    static func accept(_ parameters: [(name: String, value: String?)]) -> DeflateParameters? {
        var seen = Set<String>()
        var serverNoContextTakeover = false
        var clientNoContextTakeover = false
        var serverMaxWindowBits: Int?
        // Offered without a value: .some(nil).
        var clientMaxWindowBits: Int??
        for (name, value) in parameters {
            guard seen.insert(name).inserted else { return nil }  // §7: a parameter twice
            switch name {
            case "server_no_context_takeover":
                guard value == nil else { return nil }
                serverNoContextTakeover = true
            case "client_no_context_takeover":
                guard value == nil else { return nil }
                clientNoContextTakeover = true
            case "server_max_window_bits":
                guard let bits = value.flatMap(Self.windowBits) else { return nil }
                serverMaxWindowBits = bits
            case "client_max_window_bits":
                if let value {
                    guard let bits = Self.windowBits(value) else { return nil }
                    clientMaxWindowBits = .some(bits)
                } else {
                    clientMaxWindowBits = .some(nil)
                }
            default:
                return nil  // §7: a parameter not defined for offers
            }
        }
        // zlib's raw deflate cannot compress within a 256-byte window (deflateInit2 refuses windowBits 8).
        if serverMaxWindowBits == 8 { return nil }

        var response = [Self.extensionName]
        // §7.1.1.1: the bridge honours server_no_context_takeover and says so.
        if serverNoContextTakeover { response.append("server_no_context_takeover") }
        // §7.1.1.2: the client announced that it resets; saying so back costs nothing.
        if clientNoContextTakeover { response.append("client_no_context_takeover") }
        let serverWindowBits = min(serverMaxWindowBits ?? 15, Self.preferredWindowBits)
        // §7.1.2.1: answered only when offered (Firefox fails the connection on an unrequested one).
        if serverMaxWindowBits != nil { response.append("server_max_window_bits=\(serverWindowBits)") }
        var clientWindowBits = 15
        if case .some(let limit) = clientMaxWindowBits {
            // §7.1.2.2: with a value in the response, never more than the offer's. A client that offers 8 may use
            // 9 (zlib rounds it up), which an 8-bit inflater rejects: the bridge then leaves its offer as it is and
            // inflates with 15.
            let bits = min(limit ?? 15, Self.preferredWindowBits)
            if bits >= 9 {
                clientWindowBits = bits
                response.append("client_max_window_bits=\(bits)")
            }
        }
        return DeflateParameters(
            serverNoContextTakeover: serverNoContextTakeover,
            clientNoContextTakeover: clientNoContextTakeover,
            serverWindowBits: serverWindowBits,
            clientWindowBits: clientWindowBits,
            response: response.joined(separator: "; ")
        )
    }

    /// RFC 7692 §7.1.2: a decimal integer from 8 to 15, without leading zeros.
    private static func windowBits(_ value: String) -> Int? {
        guard value.count <= 2, value.first != "0", value.utf8.allSatisfy({ (48...57).contains($0) }),
            let bits = Int(value), (8...15).contains(bits)
        else { return nil }
        return bits
    }
}

extension String {
    fileprivate func trimmingSpaces() -> String {
        var scalars = Substring(self)
        while let first = scalars.first, first == " " || first == "\t" { scalars.removeFirst() }
        while let last = scalars.last, last == " " || last == "\t" { scalars.removeLast() }
        return String(scalars)
    }

    fileprivate func replacingBackslashEscapes() -> String {
        var result = ""
        var escaped = false
        for character in self {
            if !escaped && character == "\\" {
                escaped = true
                continue
            }
            escaped = false
            result.append(character)
        }
        return result
    }
}
