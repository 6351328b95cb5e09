/// A strict RESP2 parser: a pure value with no I/O, so that it is tested (and fuzzed) on plain byte arrays.
///
/// `parse` returns nil while the bytes are a valid but incomplete prefix of a value, the value and the number of
/// bytes it took when one is complete, and throws on anything that is not RESP2: an unknown type byte, a line not
/// ended by CRLF, a bare CR or LF inside a line, a malformed or overflowing integer, a negative length other than
/// -1, a bulk string not followed by CRLF, or a value beyond the limits below (a server, or something pretending
/// to be one, cannot make the bridge allocate without bound).
public struct RESPParser: Sendable {
    public struct Error: Swift.Error, Equatable, Sendable, CustomStringConvertible {
        public var message: String
        init(_ message: String) { self.message = message }
        public var description: String { "malformed RESP: \(self.message)" }
    }

    /// Longest bulk string accepted (GET answers here are a `host:port` or a small JSON object).
    public var maxBulkLength: Int
    /// Most elements in one array.
    public var maxArrayCount: Int
    /// Deepest nesting of arrays.
    public var maxDepth: Int
    /// Longest simple string, error or integer line.
    public var maxLineLength: Int

    public init(maxBulkLength: Int = 1 << 20, maxArrayCount: Int = 1024, maxDepth: Int = 4, maxLineLength: Int = 4096) {
        self.maxBulkLength = maxBulkLength
        self.maxArrayCount = maxArrayCount
        self.maxDepth = maxDepth
        self.maxLineLength = maxLineLength
    }

    public func parse<Bytes: RandomAccessCollection>(_ bytes: Bytes) throws -> (value: RESPValue, consumed: Int)?
    where Bytes.Element == UInt8, Bytes.Index == Int {
        var index = bytes.startIndex
        guard let value = try self.value(bytes, at: &index, depth: 0) else { return nil }
        return (value, index - bytes.startIndex)
    }

    private func value<Bytes: RandomAccessCollection>(_ bytes: Bytes, at index: inout Int, depth: Int) throws
        -> RESPValue?
    where Bytes.Element == UInt8, Bytes.Index == Int {
        guard index < bytes.endIndex else { return nil }
        let type = bytes[index]
        var cursor = index + 1
        guard let line = try self.line(bytes, at: &cursor) else { return nil }
        let result: RESPValue
        switch type {
        case UInt8(ascii: "+"):
            result = .simpleString(String(decoding: line, as: UTF8.self))
        case UInt8(ascii: "-"):
            result = .error(String(decoding: line, as: UTF8.self))
        case UInt8(ascii: ":"):
            result = .integer(try Self.integer(line))
        case UInt8(ascii: "$"):
            let length = try Self.integer(line)
            if length == -1 {
                result = .bulkString(nil)
                break
            }
            guard length >= 0 else { throw Error("negative bulk length \(length)") }
            guard length <= self.maxBulkLength else { throw Error("bulk string of \(length) bytes is too long") }
            let count = Int(length)
            guard bytes.endIndex - cursor >= count + 2 else {
                // Incomplete, but whatever already arrived after the payload must be the start of CRLF.
                let available = bytes.endIndex - cursor
                if available > count, bytes[cursor + count] != 13 { throw Error("bulk string not followed by CRLF") }
                return nil
            }
            guard bytes[cursor + count] == 13, bytes[cursor + count + 1] == 10 else {
                throw Error("bulk string not followed by CRLF")
            }
            result = .bulkString(Array(bytes[cursor..<(cursor + count)]))
            cursor += count + 2
        case UInt8(ascii: "*"):
            let count = try Self.integer(line)
            if count == -1 {
                result = .array(nil)
                break
            }
            guard count >= 0 else { throw Error("negative array length \(count)") }
            guard count <= self.maxArrayCount else { throw Error("array of \(count) elements is too long") }
            guard depth < self.maxDepth else { throw Error("arrays nested too deep") }
            var elements: [RESPValue] = []
            elements.reserveCapacity(Int(count))
            for _ in 0..<count {
                guard let element = try self.value(bytes, at: &cursor, depth: depth + 1) else { return nil }
                elements.append(element)
            }
            result = .array(elements)
        default:
            throw Error("unknown type byte \(type)")
        }
        index = cursor
        return result
    }

    /// The bytes up to CRLF (cursor moves past it), nil when CRLF has not arrived yet.
    private func line<Bytes: RandomAccessCollection>(_ bytes: Bytes, at cursor: inout Int) throws -> Bytes.SubSequence?
    where Bytes.Element == UInt8, Bytes.Index == Int {
        var end = cursor
        while end < bytes.endIndex {
            let byte = bytes[end]
            if byte == 13 {
                guard end + 1 < bytes.endIndex else { return nil }
                guard bytes[end + 1] == 10 else { throw Error("CR not followed by LF") }
                let line = bytes[cursor..<end]
                cursor = end + 2
                return line
            }
            if byte == 10 { throw Error("LF without CR") }
            end += 1
            if end - cursor > self.maxLineLength { throw Error("line longer than \(self.maxLineLength) bytes") }
        }
        return nil
    }

    /// A decimal integer: an optional `-`, then 1 to 19 digits, no overflow.
    static func integer<Line: Collection>(_ line: Line) throws -> Int64 where Line.Element == UInt8 {
        var negative = false
        var digits = line[...]
        if digits.first == UInt8(ascii: "-") {
            negative = true
            digits = digits.dropFirst()
        }
        guard !digits.isEmpty, digits.count <= 19 else { throw Error("bad integer") }
        var value: Int64 = 0
        for digit in digits {
            guard (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(digit) else { throw Error("bad integer") }
            let (times, overflow1) = value.multipliedReportingOverflow(by: 10)
            let (sum, overflow2) = times.addingReportingOverflow(Int64(digit - UInt8(ascii: "0")))
            guard !overflow1, !overflow2 else { throw Error("integer overflow") }
            value = sum
        }
        return negative ? -value : value
    }
}
