#if canImport(Glibc)
import Glibc
#endif
import NIOCore

@testable import WSBridge

// libFuzzer's entry points around the harness in FuzzFrameParserHarness.swift (a symlink to
// Tests/WSBridgeTests/FuzzHarnesses/FuzzFrameParserHarness.swift, which XCTest replays the corpus through).

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzFrameParser(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    FuzzFrameParserHarness.testOneInput(data, size)
}

// MARK: entry point

@_silgen_name("LLVMFuzzerRunDriver")
func LLVMFuzzerRunDriver(
    _ argc: UnsafeMutablePointer<Int32>,
    _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>>,
    _ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> Int32
) -> Int32

var argc = CommandLine.argc
var argv = CommandLine.unsafeArgv
exit(LLVMFuzzerRunDriver(&argc, &argv) { data, size in
    guard let data else { return 0 }
    return fuzzFrameParser(data, size)
})
