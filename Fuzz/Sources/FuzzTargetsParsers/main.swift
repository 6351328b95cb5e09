import FuzzDriver

@testable import WSBridge

// libFuzzer's entry points around the harness in FuzzTargetsParsersHarness.swift (a symlink to
// Tests/WSBridgeTests/FuzzHarnesses/FuzzTargetsParsersHarness.swift, which XCTest replays the corpus through).

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzTargetsParsers(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    FuzzTargetsParsersHarness.testOneInput(data, size)
}

runFuzzer { data, size in data.map { fuzzTargetsParsers($0, size) } ?? 0 }
