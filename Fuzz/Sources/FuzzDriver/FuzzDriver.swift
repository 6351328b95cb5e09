#if canImport(Glibc)
    import Glibc
#endif

// The one libFuzzer driver of the harnesses: SwiftPM gives each executable a main of its own, which replaces
// libFuzzer's, so each main.swift hands its test function to libFuzzer's driver through `runFuzzer`.

@_silgen_name("LLVMFuzzerRunDriver")
func LLVMFuzzerRunDriver(
    _ argc: UnsafeMutablePointer<Int32>,
    _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>>,
    _ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> Int32
) -> Int32

/// Runs libFuzzer (linked by `-sanitize=fuzzer`) on `testOneInput` with the process's arguments, and exits with its
/// status.
public func runFuzzer(_ testOneInput: @convention(c) (UnsafePointer<UInt8>?, Int) -> Int32) -> Never {
    var argc = CommandLine.argc
    var argv = CommandLine.unsafeArgv
    exit(LLVMFuzzerRunDriver(&argc, &argv, testOneInput))
}
