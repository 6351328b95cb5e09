import FuzzDriver
import Logging
import NIOCore
import NIOEmbedded
import NIOHTTP1

@testable import WSBridge

// libFuzzer's entry points around the harness in FuzzUpgradePolicyHarness.swift (a symlink to
// Tests/WSBridgeTests/FuzzHarnesses/FuzzUpgradePolicyHarness.swift, which XCTest replays the corpus through).

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzUpgradePolicy(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    FuzzUpgradePolicyHarness.testOneInput(data, size)
}

runFuzzer { data, size in data.map { fuzzUpgradePolicy($0, size) } ?? 0 }
