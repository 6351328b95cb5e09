@testable import WSBridge

#if canImport(Glibc)
    import Glibc
#endif

// The harness of Fuzz/Sources/FuzzProxyHeader (whose FuzzProxyHeaderHarness.swift is a symlink to this file), compiled
// into the fuzzer by Fuzz/Package.swift and into WSBridgeTests, where FuzzCorpusReplayTests runs every seed of
// Fuzz/corpus/FuzzProxyHeader and every crash reproducer of Fuzz/reproducers/FuzzProxyHeader through it on each `swift test`:
// a finding traps (fatalError), which fails the run. The comments below are the harness's own.
enum FuzzProxyHeaderHarness {
    // Fuzzes the PROXY protocol header parser (`--proxy-protocol`) with arbitrary bytes.
    //
    // The harness traps when a header is accepted with a length outside the input, when the bytes of an accepted header
    // parse differently on their own, when a shorter prefix of an accepted header is anything but "incomplete", and when
    // an accepted header with addresses does not survive its own encoding.

    static func check(_ condition: Bool, _ message: @autoclosure () -> String) {
        if !condition { fatalError("fuzz finding: \(message())") }
    }

    static func testOneInput(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
        let bytes = Array(UnsafeBufferPointer(start: data, count: size))
        switch ProxyHeader.parse(bytes) {
        case .incomplete:
            check(bytes.count < 16 + 65535, "incomplete after \(bytes.count) bytes")
        case .invalid(let reason):
            check(!reason.isEmpty, "an empty reason")
        case .header(let header, let length):
            check(length >= 15 && length <= bytes.count, "length \(length) of \(bytes.count)")
            let own = Array(bytes[0..<length])
            check(ProxyHeader.parse(own) == .header(header, length: length), "the header alone parses differently")
            for cut in stride(from: 1, to: length, by: max(1, length / 16)) {
                check(ProxyHeader.parse(Array(own[0..<cut])) == .incomplete, "prefix of \(cut) bytes is not incomplete")
            }
            if header.addresses != .unknown {
                guard case .header(let again, let againLength) = ProxyHeader.parse(header.encoded()) else {
                    check(false, "re-encoded header refused: \(header)")
                    return 0
                }
                check(again.addresses == header.addresses, "re-encoded addresses differ: \(header) \(again)")
                check(againLength == header.encoded().count, "re-encoded length differs")
            }
        }
        return 0
    }
}
