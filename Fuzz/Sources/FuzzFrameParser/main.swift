import FuzzDriver
import NIOCore

@testable import WSBridge

// libFuzzer's entry points around the harness in FuzzFrameParserHarness.swift (a symlink to
// Tests/WSBridgeTests/FuzzHarnesses/FuzzFrameParserHarness.swift, which XCTest replays the corpus through).

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzFrameParser(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    FuzzFrameParserHarness.testOneInput(data, size)
}

runFuzzer { data, size in data.map { fuzzFrameParser($0, size) } ?? 0 }
