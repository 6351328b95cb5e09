@testable import WSBridge

#if canImport(Glibc)
    import Glibc
#endif

// The harness of Fuzz/Sources/FuzzTargetsParsers (whose FuzzTargetsParsersHarness.swift is a symlink to this file), compiled
// into the fuzzer by Fuzz/Package.swift and into WSBridgeTests, where FuzzCorpusReplayTests runs every seed of
// Fuzz/corpus/FuzzTargetsParsers and every crash reproducer of Fuzz/reproducers/FuzzTargetsParsers through it on each `swift test`:
// a finding traps (fatalError), which fails the run. The comments below are the harness's own.
enum FuzzTargetsParsersHarness {
    // Fuzzes the targets file parsers (websockify's token format and YAML) with arbitrary text.
    //
    // Input: byte 0 picks the parser (even: token file, odd: YAML); the rest, decoded as UTF-8 with replacement, is the
    // file. The harness traps when a parser throws anything but a TargetsFileError, when an error names a line that the
    // file does not have, and when a parsed entry is not what the contract allows (an empty token, a port out of range,
    // a relative Unix path).

    static func check(_ condition: Bool, _ message: @autoclosure () -> String) {
        if !condition { fatalError("fuzz finding: \(message())") }
    }

    static func testOneInput(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
        guard size >= 1 else { return 0 }
        let yaml = data[0] & 1 == 1
        let text = String(decoding: UnsafeBufferPointer(start: data + 1, count: size - 1), as: UTF8.self)
        let file = yaml ? "fuzz.yaml" : "fuzz.cfg"
        // YAML counts more line breaks than "\n": a lone "\r", NEL, LS and PS too. Lines are at most all of them + 1.
        let breaks: Set<Unicode.Scalar> = ["\n", "\r", "\u{85}", "\u{2028}", "\u{2029}"]
        let lines = text.unicodeScalars.filter { breaks.contains($0) }.count + 1
        do {
            let contents = try TargetsLoader.parse(text, file: file)
            for entry in contents.entries {
                check(!entry.token.isEmpty, "an empty token")
                check(entry.line >= 1 && entry.line <= lines, "entry line \(entry.line) of \(lines)")
                switch entry.target.backend {
                case .tcp(let host, let port):
                    check(!host.isEmpty && (1...65535).contains(port), "backend \(host):\(port)")
                case .unix(let path):
                    check(path.hasPrefix("/"), "relative unix path \(path)")
                case .echo:
                    check(yaml, "an echo target from a token file")
                }
            }
        } catch let error as TargetsFileError {
            check(error.file == file, "an error about another file: \(error)")
            // libyaml places an error at the end of input on the line after the last one when the file does not end
            // with a line break ("[[" is "fuzz.yaml:2"), as editors show the end of a file: one more line is allowed.
            if let line = error.line {
                check(line >= 0 && line <= lines + 1, "error line \(line) of \(lines): \(error)")
            }
            check(!error.description.isEmpty, "an empty error")
        } catch {
            check(false, "a parser threw something else than TargetsFileError: \(type(of: error)) \(error)")
        }
        return 0
    }
}
