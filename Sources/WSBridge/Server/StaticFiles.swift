import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix

/// Serves the files of one directory (`--web DIR`) beside the WebSocket endpoint, so noVNC's page can come from
/// the same port: GET and HEAD, content types, `ETag`/`Last-Modified` with `304`, `index.html` for directories,
/// listings only when asked, and never a byte from outside the directory.
///
/// Path handling refuses, with 404, anything that could step outside: `..` and `.` segments (raw or
/// percent-encoded), double encoding, backslashes, NUL, hidden (`.`-prefixed) names, and symlinks whose target
/// lies outside the root (checked on the resolved real path).
public struct StaticFiles: Sendable {
    /// The root directory, as a resolved real path.
    public let root: String
    /// Whether directories without `index.html` are listed.
    public let listDirectories: Bool
    private let fileIO: NonBlockingFileIO
    private let threadPool: NIOThreadPool

    public init(root: String, listDirectories: Bool = false, threadPool: NIOThreadPool = .singleton) throws {
        guard let real = Self.realPath(root) else {
            throw StaticFilesError(message: "--web \(root): no such directory")
        }
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: real, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw StaticFilesError(message: "--web \(root): not a directory")
        }
        self.root = real
        self.listDirectories = listDirectories
        self.threadPool = threadPool
        self.fileIO = NonBlockingFileIO(threadPool: threadPool)
    }

    public struct StaticFilesError: Error, CustomStringConvertible {
        public var message: String
        public var description: String { self.message }
    }

    /// The path segments of a request URI, decoded once; nil when the path must be refused.
    public static func segments(of uri: String) -> [String]? {
        var path = Substring(uri)
        if let end = path.firstIndex(where: { $0 == "?" || $0 == "#" }) { path = path[..<end] }
        guard path.hasPrefix("/") else { return nil }
        var segments: [String] = []
        for raw in path.split(separator: "/", omittingEmptySubsequences: true) {
            guard let decoded = UpgradePolicy.percentDecode(String(raw), plusIsSpace: false) else { return nil }
            if decoded.isEmpty || decoded.hasPrefix(".") || decoded.contains("/" as Character) || decoded.contains("\\")
                || decoded.contains("\0") || decoded.contains("%" as Character)
            {
                return nil
            }
            segments.append(decoded)
        }
        return segments
    }

    enum Resolution: Equatable {
        case file(path: String, size: Int64, modified: Date)
        case redirect(String)
        case listing(path: String, names: [String])
        case notFound
    }

    /// Maps a URI to what to send (blocking file-system calls: run it on the thread pool).
    func resolve(_ uri: String) -> Resolution {
        guard let segments = Self.segments(of: uri) else { return .notFound }
        let joined = ([self.root] + segments).joined(separator: "/")
        guard let real = Self.realPath(joined), real == self.root || real.hasPrefix(self.root + "/") else {
            return .notFound
        }
        var info = stat()
        guard stat(real, &info) == 0 else { return .notFound }
        if (info.st_mode & S_IFMT) == S_IFDIR {
            let path = String(uri.prefix { $0 != "?" && $0 != "#" })
            if !path.hasSuffix("/") { return .redirect(Self.directoryLocation(segments, uri: uri)) }
            let index = real + "/index.html"
            var indexInfo = stat()
            if stat(index, &indexInfo) == 0, (indexInfo.st_mode & S_IFMT) == S_IFREG {
                return .file(path: index, size: Int64(indexInfo.st_size), modified: Self.modified(indexInfo))
            }
            guard self.listDirectories else { return .notFound }
            let names = ((try? FileManager.default.contentsOfDirectory(atPath: real)) ?? [])
                .filter { !$0.hasPrefix(".") }.sorted()
            return .listing(path: path, names: names)
        }
        guard (info.st_mode & S_IFMT) == S_IFREG else { return .notFound }
        return .file(path: real, size: Int64(info.st_size), modified: Self.modified(info))
    }

    /// The answer for a GET or HEAD of `head.uri`.
    func answer(_ head: HTTPRequestHead, on eventLoop: EventLoop) -> EventLoopFuture<HTTPAnswer> {
        self.threadPool.runIfActive(eventLoop: eventLoop) { self.resolve(head.uri) }
            .flatMap { resolution -> EventLoopFuture<HTTPAnswer> in
                switch resolution {
                case .notFound:
                    return eventLoop.makeSucceededFuture(HTTPAnswer(.notFound, "not found"))
                case .redirect(let location):
                    return eventLoop.makeSucceededFuture(
                        HTTPAnswer(.movedPermanently, "moved", headers: [("Location", location)])
                    )
                case .listing(let path, let names):
                    var answer = HTTPAnswer(.ok, "")
                    answer.contentType = "text/html; charset=utf-8"
                    let items = names.map {
                        "<li><a href=\"\(Self.htmlEscape(Self.percentEncode($0)))\">\(Self.htmlEscape($0))</a></li>"
                    }
                    answer.body = ByteBuffer(
                        string: "<!doctype html><title>\(Self.htmlEscape(path))</title><ul>\(items.joined())</ul>\n"
                    )
                    return eventLoop.makeSucceededFuture(answer)
                case .file(let path, let size, let modified):
                    let etag =
                        "\"\(String(size, radix: 16))-\(String(Int64(modified.timeIntervalSince1970 * 1000), radix: 16))\""
                    let lastModified = Self.httpDate(modified)
                    var headers: [(String, String)] = [("ETag", etag), ("Last-Modified", lastModified)]
                    headers.append(("Cache-Control", "no-cache"))
                    if Self.notModified(head, etag: etag, modified: modified) {
                        var answer = HTTPAnswer(.notModified, "", headers: headers)
                        answer.body = ByteBuffer()
                        return eventLoop.makeSucceededFuture(answer)
                    }
                    var answer = HTTPAnswer(.ok, "", headers: headers)
                    answer.contentType = Self.contentType(for: path)
                    answer.body = ByteBuffer()
                    answer.contentLength = Int(size)
                    guard head.method != .HEAD else { return eventLoop.makeSucceededFuture(answer) }
                    return self.fileIO.openFile(path: path, eventLoop: eventLoop).map { handle, region in
                        answer.file = FileBody(handle: handle, region: region, fileIO: self.fileIO)
                        return answer
                    }.recover { _ in HTTPAnswer(.notFound, "not found") }
                }
            }
            .recover { _ in HTTPAnswer(.internalServerError, "cannot read the file") }
    }

    static func notModified(_ head: HTTPRequestHead, etag: String, modified: Date) -> Bool {
        if let match = head.headers.first(name: "if-none-match") {
            return match.split(separator: ",").contains {
                $0.trimmingWhitespace() == etag || $0.trimmingWhitespace() == "*"
            }
        }
        if let since = head.headers.first(name: "if-modified-since"), let date = Self.parseHTTPDate(since) {
            return floor(modified.timeIntervalSince1970) <= date.timeIntervalSince1970
        }
        return false
    }

    static func contentType(for path: String) -> String {
        let ext = (path as NSString).pathExtension.lowercased()
        switch ext {
        case "html", "htm": return "text/html; charset=utf-8"
        case "js", "mjs": return "text/javascript; charset=utf-8"
        case "css": return "text/css; charset=utf-8"
        case "json", "map": return "application/json"
        case "txt", "md": return "text/plain; charset=utf-8"
        case "svg": return "image/svg+xml"
        case "png": return "image/png"
        case "jpg", "jpeg": return "image/jpeg"
        case "gif": return "image/gif"
        case "ico": return "image/x-icon"
        case "webp": return "image/webp"
        case "wasm": return "application/wasm"
        case "woff": return "font/woff"
        case "woff2": return "font/woff2"
        case "ttf": return "font/ttf"
        case "xml": return "application/xml"
        case "oga", "ogg": return "audio/ogg"
        case "mp3": return "audio/mpeg"
        default: return "application/octet-stream"
        }
    }

    private static func realPath(_ path: String) -> String? {
        guard let resolved = realpath(path, nil) else { return nil }
        defer { free(resolved) }
        return String(cString: resolved)
    }

    private static func modified(_ info: stat) -> Date {
        Date(timeIntervalSince1970: Double(info.st_mtim.tv_sec) + Double(info.st_mtim.tv_nsec) / 1e9)
    }

    private static let dateFormat = "EEE, dd MMM yyyy HH:mm:ss 'GMT'"

    static func httpDate(_ date: Date) -> String {
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone(identifier: "GMT")
        formatter.dateFormat = Self.dateFormat
        return formatter.string(from: date)
    }

    static func parseHTTPDate(_ text: String) -> Date? {
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone(identifier: "GMT")
        formatter.dateFormat = Self.dateFormat
        return formatter.date(from: text)
    }

    private static func htmlEscape(_ text: String) -> String {
        text.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;")
            .replacingOccurrences(of: ">", with: "&gt;").replacingOccurrences(of: "\"", with: "&quot;")
    }

    /// Where a directory request without its final `/` is sent: a path of this origin built from the decoded
    /// segments (so `//app` or `/%2Fevil` can never become a protocol-relative `//host/` URL), then the query.
    static func directoryLocation(_ segments: [String], uri: String) -> String {
        let path = "/" + segments.map(Self.percentEncode).map { $0 + "/" }.joined()
        guard let question = uri.firstIndex(of: "?") else { return path }
        let query = uri[uri.index(after: question)...].prefix { $0 != "#" }
        return query.isEmpty ? path : path + "?" + query
    }

    private static func percentEncode(_ name: String) -> String {
        name.addingPercentEncoding(
            withAllowedCharacters: .urlPathAllowed.subtracting(CharacterSet(charactersIn: "/?#"))
        ) ?? name
    }
}

/// An open file sent as the body of an answer (sendfile on plain sockets); the handle closes after the write.
///
/// `@unchecked`: made on the connection's event loop and used only there (the answer future completes on it), by
/// one answer; the handle is never shared.
struct FileBody: @unchecked Sendable {
    let handle: NIOFileHandle
    let region: FileRegion
    /// Reads the file in chunks where a FileRegion cannot be sent (TLS).
    let fileIO: NonBlockingFileIO
}
