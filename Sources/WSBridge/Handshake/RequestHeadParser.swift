import NIOCore
import NIOHTTP1

/// Finds and parses an HTTP/1 request head in the bytes a client sends, keeping at most `limit` bytes.
///
/// The handshake owner feeds it every read until it reports a head; bytes after the head are handed back, never
/// parsed (a WebSocket client's first frames, or a body the upgrade refuses). Strict where RFC 9112 allows it:
/// CRLF line ends, no obsolete line folding, no control characters in field values, single spaces in the request
/// line.
struct RequestHeadParser {
    enum Result: Equatable {
        /// More bytes are needed; everything given was kept.
        case incomplete
        /// A complete head; `rest` holds the bytes that followed it.
        case head(HTTPRequestHead, rest: ByteBuffer)
        /// The head is larger than `limit` bytes or has more than `maxFields` fields (431).
        case tooLarge
        /// Not an HTTP/1 request head (400).
        case malformed(String)

        /// The answer to a head that cannot be read (431 or 400); nil otherwise.
        var rejection: HTTPRejection? {
            switch self {
            case .incomplete, .head: return nil
            case .tooLarge:
                return HTTPRejection(.headTooLarge, .init(statusCode: 431), "request header fields too large")
            case .malformed(let reason):
                return HTTPRejection(.malformed, .badRequest, "malformed HTTP request: \(reason)")
            }
        }
    }

    /// Largest head accepted, in bytes, the final empty line included.
    let limit: Int
    let maxFields: Int
    private var pending: [UInt8] = []
    /// Where the search for the end of the head resumes.
    private var scanned = 0
    private var finished = false

    init(limit: Int, maxFields: Int = 256) {
        self.limit = max(16, limit)
        self.maxFields = maxFields
    }

    /// Bytes kept while the head is incomplete (at most `limit`).
    var bufferedBytes: Int { self.pending.count }

    mutating func feed(_ incoming: inout ByteBuffer) -> Result {
        precondition(!self.finished, "a request head parser reports one head")
        let room = self.limit - self.pending.count
        let take = min(incoming.readableBytes, room)
        if take > 0 { self.pending += incoming.readBytes(length: take)! }
        // Empty lines before the request line are ignored (RFC 9112 §2.2).
        while self.scanned == 0, self.pending.count >= 2, self.pending[0] == 0x0D, self.pending[1] == 0x0A {
            self.pending.removeFirst(2)
        }
        var end: Int?
        var index = max(0, self.scanned - 3)
        while index + 4 <= self.pending.count {
            if self.pending[index] == 0x0D, self.pending[index + 1] == 0x0A, self.pending[index + 2] == 0x0D,
                self.pending[index + 3] == 0x0A
            {
                end = index
                break
            }
            index += 1
        }
        guard let end else {
            self.scanned = self.pending.count
            if self.pending.count >= self.limit { return self.finish(.tooLarge) }
            return .incomplete
        }
        var rest = ByteBufferAllocator().buffer(capacity: self.pending.count - end - 4 + incoming.readableBytes)
        rest.writeBytes(self.pending[(end + 4)...])
        rest.writeBuffer(&incoming)
        let result = Self.parse(self.pending[..<end], maxFields: self.maxFields)
        switch result {
        case .success(let head): return self.finish(.head(head, rest: rest))
        case .failure(let failure): return self.finish(failure.result)
        }
    }

    private mutating func finish(_ result: Result) -> Result {
        self.finished = true
        self.pending = []
        return result
    }

    private struct Failure: Error {
        var result: Result
    }

    private static func parse(_ bytes: ArraySlice<UInt8>, maxFields: Int) -> Swift.Result<HTTPRequestHead, Failure> {
        func malformed(_ reason: String) -> Swift.Result<HTTPRequestHead, Failure> {
            .failure(Failure(result: .malformed(reason)))
        }
        var lines: [ArraySlice<UInt8>] = []
        var start = bytes.startIndex
        var index = bytes.startIndex
        while index < bytes.endIndex {
            if bytes[index] == 0x0A { return malformed("bare LF in request head") }
            if bytes[index] == 0x0D {
                guard index + 1 < bytes.endIndex, bytes[index + 1] == 0x0A else {
                    return malformed("bare CR in request head")
                }
                lines.append(bytes[start..<index])
                index += 2
                start = index
                continue
            }
            index += 1
        }
        lines.append(bytes[start..<bytes.endIndex])
        guard lines.count - 1 <= maxFields else { return .failure(Failure(result: .tooLarge)) }

        let requestLine = lines[0].split(separator: 0x20, omittingEmptySubsequences: false)
        guard requestLine.count == 3, !requestLine[0].isEmpty, requestLine[0].allSatisfy(Self.isTokenByte),
            !requestLine[1].isEmpty, requestLine[1].allSatisfy({ $0 > 0x20 && $0 < 0x7F })
        else { return malformed("malformed request line") }
        let versionBytes = Array(requestLine[2])
        guard versionBytes.count == 8, versionBytes.starts(with: Array("HTTP/".utf8)),
            versionBytes[6] == UInt8(ascii: "."),
            let major = Self.digit(versionBytes[5]), let minor = Self.digit(versionBytes[7])
        else { return malformed("malformed HTTP version") }
        guard major == 1 else { return malformed("unsupported HTTP version") }

        var headers: [(String, String)] = []
        for line in lines.dropFirst() {
            guard let colon = line.firstIndex(of: UInt8(ascii: ":")) else {
                return malformed("header line without a colon")
            }
            let name = line[line.startIndex..<colon]
            guard !name.isEmpty, name.allSatisfy(Self.isTokenByte) else {
                // A leading space or tab is obsolete line folding (RFC 9112 §5.2), also refused.
                return malformed("malformed header name")
            }
            var value = line[(colon + 1)...]
            while let first = value.first, first == 0x20 || first == 0x09 { value = value.dropFirst() }
            while let last = value.last, last == 0x20 || last == 0x09 { value = value.dropLast() }
            guard value.allSatisfy({ $0 == 0x09 || ($0 >= 0x20 && $0 != 0x7F) }) else {
                return malformed("control character in a header value")
            }
            headers.append((String(decoding: name, as: UTF8.self), String(decoding: value, as: UTF8.self)))
        }
        let method = HTTPMethod(rawValue: String(decoding: requestLine[0], as: UTF8.self))
        let uri = String(decoding: requestLine[1], as: UTF8.self)
        return .success(
            HTTPRequestHead(
                version: HTTPVersion(major: major, minor: minor),
                method: method,
                uri: uri,
                headers: HTTPHeaders(headers)
            )
        )
    }

    private static func digit(_ byte: UInt8) -> Int? {
        (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte) ? Int(byte - UInt8(ascii: "0")) : nil
    }

    /// `tchar` of RFC 9110 §5.6.2 (also what extension names and parameters are made of, RFC 6455 §9.1).
    static func isTokenByte(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
            UInt8(ascii: "0")...UInt8(ascii: "9"):
            return true
        default:
            return "!#$%&'*+-.^_`|~".utf8.contains(byte)
        }
    }
}
