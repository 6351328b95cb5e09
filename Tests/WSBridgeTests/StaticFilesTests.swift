import Foundation
import NIOCore
import XCTest

@testable import WSBridge

final class StaticFilesTests: XCTestCase {
    /// Every one of these must be refused before any file-system call.
    static let traversalCorpus = [
        "/../etc/passwd", "/..", "/a/../../etc/passwd", "/%2e%2e/etc/passwd", "/%2E%2E/etc/passwd",
        "/%2e%2e%2fetc%2fpasswd", "/..%2fetc%2fpasswd", "/.%2e/etc/passwd", "/%2e./etc/passwd",
        "/%252e%252e/etc/passwd", "/%252e%252e%252fetc%252fpasswd", "/..%252f..%252fetc/passwd",
        "/..\\etc\\passwd", "/%5c..%5cetc%5cpasswd", "/..%5cetc", "/a%00.html", "/a\0.html", "/%00",
        "/.git/config", "/.env", "/%2egit/config", "/a/./b", "/./index.html", "/%2e/index.html",
        "/a/%2f/b", "/%2f%2fetc/passwd", "//..//etc/passwd", "/a/..;/b", "/..;/etc/passwd", "/%c0%ae%c0%ae/etc/passwd",
        "/%e0%80%ae%e0%80%ae/", "etc/passwd", "", "/%zz", "/%", "/%2", "/..%00/etc/passwd",
    ]

    func testTraversalCorpusIsRefused() {
        for uri in Self.traversalCorpus {
            let segments = StaticFiles.segments(of: uri)
            XCTAssertNil(segments, "not refused: \(uri.debugDescription) → \(String(describing: segments))")
        }
        XCTAssertEqual(StaticFiles.segments(of: "/vnc.html?path=websockify%3Ftoken%3Dx"), ["vnc.html"])
        XCTAssertEqual(StaticFiles.segments(of: "/app/ui.js"), ["app", "ui.js"])
        XCTAssertEqual(StaticFiles.segments(of: "/a%20b.html"), ["a b.html"])
        XCTAssertEqual(StaticFiles.segments(of: "/"), [])
    }

    func testResolveStaysInsideTheRootThroughSymlinks() throws {
        let base = FileManager.default.temporaryDirectory.appendingPathComponent("wsbridge-web-\(UUID())")
        let root = base.appendingPathComponent("root")
        let outside = base.appendingPathComponent("secret.txt")
        try FileManager.default.createDirectory(
            at: root.appendingPathComponent("sub"),
            withIntermediateDirectories: true
        )
        defer { try? FileManager.default.removeItem(at: base) }
        try "secret".write(to: outside, atomically: true, encoding: .utf8)
        try "<h1>hi</h1>".write(to: root.appendingPathComponent("index.html"), atomically: true, encoding: .utf8)
        try "x".write(to: root.appendingPathComponent("sub/file.js"), atomically: true, encoding: .utf8)
        try FileManager.default.createSymbolicLink(
            atPath: root.appendingPathComponent("out.txt").path,
            withDestinationPath: outside.path
        )
        try FileManager.default.createSymbolicLink(
            atPath: root.appendingPathComponent("outdir").path,
            withDestinationPath: base.path
        )
        try FileManager.default.createSymbolicLink(
            atPath: root.appendingPathComponent("in.js").path,
            withDestinationPath: "sub/file.js"
        )

        let files = try StaticFiles(root: root.path)
        XCTAssertEqual(files.resolve("/out.txt"), .notFound)
        XCTAssertEqual(files.resolve("/outdir/secret.txt"), .notFound)
        XCTAssertEqual(files.resolve("/sub"), .redirect("/sub/"))
        // Always a same-origin path: `//sub/` would be a URL of the host `sub`.
        XCTAssertEqual(files.resolve("//sub"), .redirect("/sub/"))
        XCTAssertEqual(files.resolve("///sub"), .redirect("/sub/"))
        XCTAssertEqual(files.resolve("//sub?a=1"), .redirect("/sub/?a=1"))
        XCTAssertEqual(files.resolve("/sub?a=b#frag"), .redirect("/sub/?a=b"))
        for uri in ["//sub", "///sub", "/./sub", "//sub?x=//evil"] {
            if case .redirect(let location) = files.resolve(uri) {
                XCTAssertTrue(
                    location.hasPrefix("/") && !location.hasPrefix("//") && !location.hasPrefix("/\\"),
                    "\(uri) -> \(location)"
                )
            }
        }
        XCTAssertEqual(files.resolve("/sub/"), .notFound, "no index.html and no listing")
        XCTAssertEqual(files.resolve("/missing.html"), .notFound)
        guard case .file(let path, let size, _) = files.resolve("/in.js") else { return XCTFail("symlink inside") }
        XCTAssertTrue(path.hasSuffix("/sub/file.js"))
        XCTAssertEqual(size, 1)
        guard case .file(let index, _, _) = files.resolve("/?x=1") else { return XCTFail("index") }
        XCTAssertTrue(index.hasSuffix("/index.html"))
        for uri in Self.traversalCorpus {
            if case .file(let path, _, _) = files.resolve(uri) {
                XCTAssertTrue(path.hasPrefix(files.root + "/"), "\(uri) escaped to \(path)")
            }
        }
        let listing = try StaticFiles(root: root.path, listDirectories: true)
        XCTAssertEqual(listing.resolve("/sub/"), .listing(path: "/sub/", names: ["file.js"]))
    }

    func testContentTypesAndDates() {
        XCTAssertEqual(StaticFiles.contentType(for: "/x/vnc.html"), "text/html; charset=utf-8")
        XCTAssertEqual(StaticFiles.contentType(for: "/x/app.JS"), "text/javascript; charset=utf-8")
        XCTAssertEqual(StaticFiles.contentType(for: "/x/a.wasm"), "application/wasm")
        XCTAssertEqual(StaticFiles.contentType(for: "/x/blob"), "application/octet-stream")
        let date = Date(timeIntervalSince1970: 784_111_777)
        XCTAssertEqual(StaticFiles.httpDate(date), "Sun, 06 Nov 1994 08:49:37 GMT")
        XCTAssertEqual(StaticFiles.parseHTTPDate("Sun, 06 Nov 1994 08:49:37 GMT"), date)
    }
}

final class SessionRecorderTests: XCTestCase {
    func testEscapingMatchesWebsockify() {
        // Python: bytes(range(256)).decode('latin1').encode('unicode_escape').decode('ascii').replace("'", "\\'")
        XCTAssertEqual(SessionRecorder.escape(Array("RFB 003.008\n".utf8)), "RFB 003.008\\n")
        XCTAssertEqual(
            SessionRecorder.escape([0x00, 0x09, 0x0D, 0x27, 0x5C, 0x7F, 0x80, 0xFF]),
            "\\x00\\t\\r\\'\\\\\\x7f\\x80\\xff"
        )
    }

    /// Recordings are never overwritten and a planted symlink is neither followed nor its target truncated.
    func testRecorderNeverFollowsSymlinksNorTruncatesAndNumbersAfterTheHighest() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("wsbridge-rec-\(UUID())").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let prefix = dir + "/session"
        try "earlier".write(toFile: prefix + ".1", atomically: false, encoding: .utf8)
        try "earlier 7".write(toFile: prefix + ".7", atomically: false, encoding: .utf8)
        try "x".write(toFile: prefix + ".notes", atomically: false, encoding: .utf8)
        let victim = dir + "/victim"
        try "precious".write(toFile: victim, atomically: false, encoding: .utf8)
        try FileManager.default.createSymbolicLink(atPath: prefix + ".8", withDestinationPath: victim)

        XCTAssertThrowsError(try SessionRecorder(path: prefix + ".8", limit: 10)) { error in
            XCTAssertTrue((error as? SessionRecorder.RecorderError)?.exists == true, "\(error)")
        }
        XCTAssertThrowsError(try SessionRecorder(path: prefix + ".1", limit: 10))
        XCTAssertEqual(RecordingPolicy.highestNumber(prefix: prefix), 8)
        let policy = RecordingPolicy(prefix: prefix, limit: 10)
        // A name taken after the start (a symlink planted at the next number) is skipped, not followed.
        try FileManager.default.createSymbolicLink(atPath: prefix + ".9", withDestinationPath: victim)
        let recorder = try policy.makeRecorder()
        XCTAssertEqual(recorder.path, prefix + ".10")
        recorder.finish()
        XCTAssertEqual(try String(contentsOfFile: victim, encoding: .utf8), "precious")
        XCTAssertEqual(try String(contentsOfFile: prefix + ".1", encoding: .utf8), "earlier")
        XCTAssertEqual(try String(contentsOfFile: prefix + ".7", encoding: .utf8), "earlier 7")
    }

    /// The recording stops at the first message that does not fit in the limit: a smaller later one is left out
    /// too, so the file is a prefix of the session, never a stream with a hole.
    func testRecordLimitKeepsAPrefixOfTheSession() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("wsbridge-rec-\(UUID()).1").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        let recorder = try SessionRecorder(path: path, limit: 100)
        for (byte, toClient) in [(UInt8(ascii: "a"), false), (UInt8(ascii: "a"), true), (UInt8(ascii: "b"), false)] {
            let buffer = ByteBuffer(bytes: [UInt8](repeating: byte, count: 30))
            toClient ? recorder.toClient(buffer) : recorder.fromClient(buffer)
        }
        recorder.toClient(ByteBuffer(bytes: [UInt8](repeating: UInt8(ascii: "b"), count: 30)))  // 120 > 100: the end
        recorder.fromClient(ByteBuffer(bytes: [UInt8](repeating: UInt8(ascii: "d"), count: 5)))  // would fit: left out
        recorder.finish()
        var text = ""
        for _ in 0..<200 where !text.hasSuffix("'EOF'];\n") {
            Thread.sleep(forTimeInterval: 0.01)  // the recorder writes on a queue of its own
            text = (try? String(contentsOfFile: path, encoding: .utf8)) ?? ""
        }
        let data = text.split(separator: "\n").dropFirst(2).dropLast().map {
            $0.replacingOccurrences(of: #"\d+"#, with: "", options: .regularExpression)
        }
        let a = String(repeating: "a", count: 30)
        let b = String(repeating: "b", count: 30)
        XCTAssertEqual(data, ["'}}\(a)',", "'{{\(a)',", "'}}\(b)',"], text)
    }
}
