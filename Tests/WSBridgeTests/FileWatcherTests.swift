import Foundation
import Logging
import XCTest

@testable import WSBridge

final class FileWatcherTests: XCTestCase {
    var directory: String!

    override func setUp() {
        self.directory =
            FileManager.default.temporaryDirectory.appendingPathComponent("wsbridge-watch-\(UUID().uuidString)").path
        try! FileManager.default.createDirectory(atPath: self.directory, withIntermediateDirectories: true)
    }

    override func tearDown() {
        try? FileManager.default.removeItem(atPath: self.directory)
    }

    /// A Kubernetes ConfigMap volume: `targets -> ..data/targets`, `..data -> ..2026_x`; the update writes a new
    /// directory and renames a new `..data` symlink over the old one. Nothing at `targets` itself changes (its
    /// `lstat` is the same), yet the snapshot must.
    func testAKubernetesDataSwapIsNoticed() throws {
        let fm = FileManager.default
        let first = self.directory + "/..2026_x"
        try fm.createDirectory(atPath: first, withIntermediateDirectories: true)
        try "a: 127.0.0.1:1\n".write(toFile: first + "/targets", atomically: false, encoding: .utf8)
        try fm.createSymbolicLink(atPath: self.directory + "/..data", withDestinationPath: "..2026_x")
        try fm.createSymbolicLink(atPath: self.directory + "/targets", withDestinationPath: "..data/targets")
        let file = self.directory + "/targets"
        let before = FileWatcher.snapshot([file])
        let linkBefore = try fm.attributesOfItem(atPath: file)

        let second = self.directory + "/..2026_y"
        try fm.createDirectory(atPath: second, withIntermediateDirectories: true)
        // The same size and (possibly) the same mtime as the old file: only the inode and the resolved path differ.
        try "b: 127.0.0.1:1\n".write(toFile: second + "/targets", atomically: false, encoding: .utf8)
        try fm.createSymbolicLink(atPath: self.directory + "/..data_tmp", withDestinationPath: "..2026_y")
        XCTAssertEqual(rename(self.directory + "/..data_tmp", self.directory + "/..data"), 0)

        let after = FileWatcher.snapshot([file])
        XCTAssertNotEqual(before, after)
        XCTAssertEqual(after.entries.first?.resolved?.hasSuffix("/..2026_y/targets"), true, "\(after)")
        // What the old poller looked at (lstat of the symlink) did not change.
        let linkAfter = try fm.attributesOfItem(atPath: file)
        XCTAssertEqual(linkBefore[.systemFileNumber] as? Int, linkAfter[.systemFileNumber] as? Int)

        // A directory volume (`--targets DIR`) sees it through its entries too.
        XCTAssertNotEqual(FileWatcher.snapshot([self.directory]), FileWatcher.snapshot([self.directory]).withEntry(0))
        let directoryBefore = FileWatcher.snapshot([self.directory])
        let third = self.directory + "/..2026_z"
        try fm.createDirectory(atPath: third, withIntermediateDirectories: true)
        try "c: 127.0.0.1:1\n".write(toFile: third + "/targets", atomically: false, encoding: .utf8)
        try fm.createSymbolicLink(atPath: self.directory + "/..data_tmp", withDestinationPath: "..2026_z")
        XCTAssertEqual(rename(self.directory + "/..data_tmp", self.directory + "/..data"), 0)
        XCTAssertNotEqual(directoryBefore, FileWatcher.snapshot([self.directory]))
    }

    func testInPlaceRewriteAndRenameOverAreNoticed() throws {
        let file = self.directory + "/t.conf"
        try "a: 127.0.0.1:1\n".write(toFile: file, atomically: false, encoding: .utf8)
        let first = FileWatcher.snapshot([file])
        try "a: 127.0.0.1:2\n".write(toFile: file, atomically: true, encoding: .utf8)
        let second = FileWatcher.snapshot([file])
        XCTAssertNotEqual(first, second)
        XCTAssertEqual(FileWatcher.snapshot([file]), second, "a snapshot of unchanged files is the same")
        XCTAssertFalse(FileWatcher.snapshot([file]).shrank(since: second))
        let handle = try XCTUnwrap(FileHandle(forWritingAtPath: file))
        try handle.truncate(atOffset: 0)
        try handle.close()
        XCTAssertTrue(FileWatcher.snapshot([file]).shrank(since: second), "an emptied file may be half-written")
        try FileManager.default.removeItem(atPath: file)
        XCTAssertTrue(FileWatcher.snapshot([file]).shrank(since: second))
    }

    private func snapshot(size: Int64, inode: UInt64 = 1) -> FileWatcher.Snapshot {
        FileWatcher.Snapshot(entries: [
            .init(
                path: "/t",
                chain: [],
                resolved: "/t",
                exists: true,
                isDirectory: false,
                device: 1,
                inode: inode,
                size: size,
                modified: Int64(inode),
                changed: Int64(inode)
            )
        ])
    }

    func testDebouncerReadsOnlyStableFilesAndWaitsLongerAfterATruncation() {
        let timing = FileWatcher.Timing(interval: .seconds(1), quiet: .milliseconds(100), settle: .seconds(1))
        let start = ContinuousClock.now
        let applied = self.snapshot(size: 100)
        var debouncer = FileWatcher.Debouncer(timing: timing, applied: applied)
        XCTAssertEqual(debouncer.observe(applied, now: start), .idle)

        // `cat > file`: seen empty first; it must settle before anything is read.
        let empty = self.snapshot(size: 0, inode: 1)
        XCTAssertEqual(debouncer.observe(empty, now: start), .wait(.seconds(1)))
        XCTAssertEqual(debouncer.observe(empty, now: start + .milliseconds(500)), .wait(.milliseconds(500)))
        // The writer finishes: a new, larger content, which only needs the short quiet period.
        let written = self.snapshot(size: 120, inode: 2)
        XCTAssertEqual(debouncer.observe(written, now: start + .milliseconds(600)), .wait(.milliseconds(100)))
        XCTAssertEqual(debouncer.observe(written, now: start + .milliseconds(700)), .read)
        // It changed while being read: thrown away, read again once stable.
        let rewritten = self.snapshot(size: 130, inode: 3)
        XCTAssertFalse(debouncer.read(finished: rewritten, now: start + .milliseconds(710)))
        XCTAssertEqual(debouncer.observe(rewritten, now: start + .milliseconds(720)), .wait(.milliseconds(90)))
        XCTAssertEqual(debouncer.observe(rewritten, now: start + .milliseconds(820)), .read)
        XCTAssertTrue(debouncer.read(finished: rewritten, now: start + .milliseconds(830)))
        XCTAssertEqual(debouncer.applied, rewritten)
        XCTAssertEqual(debouncer.observe(rewritten, now: start + .seconds(2)), .idle)

        // An empty file that stays empty is applied, after the settle period.
        XCTAssertEqual(debouncer.observe(empty, now: start + .seconds(3)), .wait(.seconds(1)))
        XCTAssertEqual(debouncer.observe(empty, now: start + .seconds(4)), .read)
        XCTAssertTrue(debouncer.read(finished: empty, now: start + .seconds(4)))

        // SIGHUP reads even an unchanged file, once stable.
        debouncer.hangup()
        XCTAssertEqual(debouncer.observe(empty, now: start + .seconds(5)), .wait(.milliseconds(100)))
        XCTAssertEqual(debouncer.observe(empty, now: start + .seconds(6)), .read)
        XCTAssertTrue(debouncer.read(finished: empty, now: start + .seconds(6)))
        XCTAssertEqual(debouncer.observe(empty, now: start + .seconds(7)), .idle)

        // A change that goes back to what is applied before it settles is nothing to read.
        XCTAssertEqual(debouncer.observe(written, now: start + .seconds(8)), .wait(.milliseconds(100)))
        XCTAssertEqual(debouncer.observe(empty, now: start + .seconds(8) + .milliseconds(50)), .idle)
    }

    /// The whole loop: an in-place rewrite caught half-way is never applied empty.
    func testWatcherNeverAppliesATruncatedFileThatIsBeingWritten() async throws {
        let file = self.directory + "/t.conf"
        try "a: 127.0.0.1:1\nb: 127.0.0.1:2\n".write(toFile: file, atomically: false, encoding: .utf8)
        let watcher = FileWatcher(
            paths: [file],
            what: "test",
            logger: Logger(label: "test"),
            timing: .init(interval: .milliseconds(20), quiet: .milliseconds(50), settle: .milliseconds(600))
        )
        let applied = AppliedValues()
        let task = Task {
            await watcher.run(
                load: { try String(contentsOfFile: file, encoding: .utf8) },
                apply: { result in if case .success(let text) = result { await applied.add(text) } }
            )
        }
        defer { task.cancel() }
        try await Task.sleep(for: .milliseconds(100))
        // Truncate, pause (the watcher sees it empty), then write the new content.
        let handle = try XCTUnwrap(FileHandle(forWritingAtPath: file))
        try handle.truncate(atOffset: 0)
        try await Task.sleep(for: .milliseconds(300))
        try handle.write(contentsOf: Data("c: 127.0.0.1:3\n".utf8))
        try handle.close()
        let deadline = ContinuousClock.now + .seconds(5)
        while await applied.values.isEmpty, ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(20))
        }
        let values = await applied.values
        XCTAssertEqual(values, ["c: 127.0.0.1:3\n"])
    }
}

actor AppliedValues {
    var values: [String] = []
    func add(_ value: String) { self.values.append(value) }
}

extension FileWatcher.Snapshot {
    /// A copy with the entry at `index` marked changed (for inequality checks).
    fileprivate func withEntry(_ index: Int) -> FileWatcher.Snapshot {
        var copy = self
        copy.entries[index].changed += 1
        return copy
    }
}
