import Foundation
import XCTest

/// Replays the fuzz corpora (the seeds of `Fuzz/corpus/NAME`) and every crash reproducer (`Fuzz/reproducers/NAME`,
/// the inputs of findings once fixed) through the fuzz harnesses themselves, compiled into this target (the
/// harness files of `Fuzz/Sources` are symlinks to the ones beside this file). Cheap, no sanitizer build: it runs
/// with every `swift test`, so a regression of a fixed finding fails CI. A finding traps (`fatalError`, with the
/// harness's message), which ends the test run as a failure.
final class FuzzCorpusReplayTests: XCTestCase {
    static let fuzzDirectory = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fuzz")

    /// The inputs for one harness: its seeds (there must be some) and its reproducers (there may be none).
    func inputs(_ harness: String) throws -> [(name: String, bytes: [UInt8])] {
        var found: [(String, [UInt8])] = []
        for (folder, required) in [("corpus", true), ("reproducers", false)] {
            let directory = Self.fuzzDirectory.appendingPathComponent(folder).appendingPathComponent(harness)
            guard let names = try? FileManager.default.contentsOfDirectory(atPath: directory.path) else {
                if required { XCTFail("no seeds at \(directory.path)") }
                continue
            }
            for name in names.sorted() where !name.hasPrefix(".") {
                let bytes = try [UInt8](Data(contentsOf: directory.appendingPathComponent(name)))
                found.append(("\(folder)/\(harness)/\(name)", bytes))
            }
        }
        return found
    }

    func replay(_ harness: String, _ testOneInput: (UnsafePointer<UInt8>, Int) -> CInt) throws {
        let inputs = try self.inputs(harness)
        XCTAssertFalse(inputs.isEmpty, "no inputs for \(harness)")
        for (name, bytes) in inputs {
            // An empty input still needs a valid pointer.
            let result = (bytes.isEmpty ? [0] : bytes).withUnsafeBufferPointer { buffer in
                testOneInput(buffer.baseAddress!, bytes.count)
            }
            XCTAssertEqual(result, 0, name)
        }
    }

    func testFrameParserCorpus() throws { try self.replay("FuzzFrameParser", FuzzFrameParserHarness.testOneInput) }
    func testProxyHeaderCorpus() throws { try self.replay("FuzzProxyHeader", FuzzProxyHeaderHarness.testOneInput) }
    func testRESPParserCorpus() throws { try self.replay("FuzzRESPParser", FuzzRESPParserHarness.testOneInput) }
    func testTargetsParsersCorpus() throws {
        try self.replay("FuzzTargetsParsers", FuzzTargetsParsersHarness.testOneInput)
    }
    func testUpgradePolicyCorpusAndReproducers() throws {
        try self.replay("FuzzUpgradePolicy", FuzzUpgradePolicyHarness.testOneInput)
    }
}
