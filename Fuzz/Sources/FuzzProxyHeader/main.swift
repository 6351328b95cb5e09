import FuzzDriver

@testable import WSBridge

// libFuzzer's entry points around the harness in FuzzProxyHeaderHarness.swift (a symlink to
// Tests/WSBridgeTests/FuzzHarnesses/FuzzProxyHeaderHarness.swift, which XCTest replays the corpus through).

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzProxyHeader(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    FuzzProxyHeaderHarness.testOneInput(data, size)
}

runFuzzer { data, size in data.map { fuzzProxyHeader($0, size) } ?? 0 }
