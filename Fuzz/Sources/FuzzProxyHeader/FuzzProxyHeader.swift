#if canImport(Glibc)
import Glibc
#endif
@testable import WSBridge

// Fuzzes the PROXY protocol header parser (`--proxy-protocol`) with arbitrary bytes.
//
// The harness traps when a header is accepted with a length outside the input, when the bytes of an accepted header
// parse differently on their own, when a shorter prefix of an accepted header is anything but "incomplete", and when
// an accepted header with addresses does not survive its own encoding.

func check(_ condition: Bool, _ message: @autoclosure () -> String) {
    if !condition { fatalError("fuzz finding: \(message())") }
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzProxyHeader(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
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
    return fuzzProxyHeader(data, size)
})
