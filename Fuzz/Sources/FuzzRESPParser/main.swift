import FuzzDriver

@testable import WSBridge

// libFuzzer's entry points around the harness in FuzzRESPParserHarness.swift (a symlink to
// Tests/WSBridgeTests/FuzzHarnesses/FuzzRESPParserHarness.swift, which XCTest replays the corpus through).

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzRESPParser(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    FuzzRESPParserHarness.testOneInput(data, size)
}

runFuzzer { data, size in data.map { fuzzRESPParser($0, size) } ?? 0 }
