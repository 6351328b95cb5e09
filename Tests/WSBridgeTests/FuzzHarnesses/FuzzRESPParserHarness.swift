@testable import WSBridge

#if canImport(Glibc)
    import Glibc
#endif

// The harness of Fuzz/Sources/FuzzRESPParser (whose FuzzRESPParserHarness.swift is a symlink to this file), compiled
// into the fuzzer by Fuzz/Package.swift and into WSBridgeTests, where FuzzCorpusReplayTests runs every seed of
// Fuzz/corpus/FuzzRESPParser and every crash reproducer of Fuzz/reproducers/FuzzRESPParser through it on each `swift test`:
// a finding traps (fatalError), which fails the run. The comments below are the harness's own.
enum FuzzRESPParserHarness {
    // Fuzzes what wsbridge reads from Redis and from token services: the RESP parser (RedisClient's replies), the
    // TokenRedis value and source parsers, and the token API's URL encoding.
    //
    // The harness traps when the parser claims more bytes than it got or none; when a prefix of the input gives another
    // answer than the whole (an error in a prefix must stay an error, a value complete in a prefix must be the same
    // value at the same length, since replies arrive cut into reads); and when the other parsers throw what they must
    // not or yield backends outside the contract.

    static func check(_ condition: Bool, _ message: @autoclosure () -> String) {
        if !condition { fatalError("fuzz finding: \(message())") }
    }

    static let parser = RESPParser(maxBulkLength: 1024, maxArrayCount: 64, maxDepth: 4, maxLineLength: 256)

    enum Outcome: Equatable {
        case incomplete
        case value(RESPValue, Int)
        case error
    }

    static func outcome(_ bytes: ArraySlice<UInt8>) -> Outcome {
        do {
            guard let (value, consumed) = try parser.parse(bytes) else { return .incomplete }
            check(consumed > 0 && consumed <= bytes.count, "consumed \(consumed) of \(bytes.count)")
            return .value(value, consumed)
        } catch {
            return .error
        }
    }

    static func testOneInput(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
        let bytes = Array(UnsafeBufferPointer(start: data, count: size))
        let whole = outcome(bytes[...])
        // Cut points: every one for short inputs, a sample for longer ones.
        let step = max(1, size / 64)
        for cut in stride(from: 0, to: size, by: step) {
            switch outcome(bytes[0..<cut]) {
            case .incomplete:
                break
            case .error:
                check(whole == .error, "an error in the first \(cut) bytes, but \(whole) for all \(size)")
            case .value(let value, let consumed):
                check(
                    whole == .value(value, consumed),
                    "\(value) in the first \(cut) bytes, but \(whole) for all \(size)"
                )
            }
        }

        if let backend = RedisTokenSource.backend(fromValue: bytes) {
            if case .tcp(let host, let port) = backend {
                check(!host.isEmpty && (1...65535).contains(port), "backend \(host):\(port)")
            } else {
                check(false, "a Redis value named a non-TCP backend: \(backend)")
            }
        }
        let text = String(decoding: bytes, as: UTF8.self)
        if let source = try? RedisTokenSource.parse(text) {
            check(!source.endpoint.host.isEmpty && (1...65535).contains(source.endpoint.port), "source \(source)")
        }
        let encoded = HTTPTokenResolver.percentEncode(text)
        check(
            encoded.utf8.allSatisfy { $0 < 128 && $0 != UInt8(ascii: "/") && $0 != UInt8(ascii: "?") },
            "encoded \(encoded)"
        )
        check(UpgradePolicy.percentDecode(encoded, plusIsSpace: false) == text, "percent-encoding does not round-trip")
        return 0
    }
}
