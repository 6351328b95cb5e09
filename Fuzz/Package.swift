// swift-tools-version:6.0
// libFuzzer harnesses for wsbridge, kept out of the main package so that `swift build` and `swift test` never see
// them. Built only by scripts/fuzz:
//   swift build --package-path Fuzz --scratch-path .build-fuzz -c release -Xswiftc -sanitize=fuzzer,address
// Each executable is a main.swift whose top-level code hands its test function to libFuzzer's driver
// (LLVMFuzzerRunDriver, linked by -sanitize=fuzzer) through FuzzDriver's runFuzzer: SwiftPM gives executables a main
// of their own, which replaces libFuzzer's. The test function is also exported as LLVMFuzzerTestOneInput, which libFuzzer's objects refer to.
// The harness itself (NAMEHarness.swift) is a symlink to Tests/WSBridgeTests/FuzzHarnesses/: the main package's
// tests replay every seed of corpus/NAME and every crash reproducer of reproducers/NAME through the same code
// (FuzzCorpusReplayTests), so that a regression of a fixed finding fails `swift test`.
import PackageDescription

let package = Package(
    name: "wsbridge-fuzz",
    platforms: [.macOS(.v14)],
    dependencies: [
        .package(name: "wsbridge", path: ".."),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
    ],
    targets: [
        .target(name: "FuzzDriver"),
        .executableTarget(
            name: "FuzzFrameParser",
            dependencies: [
                "FuzzDriver",
                .product(name: "WSBridge", package: "wsbridge"),
                .product(name: "NIOCore", package: "swift-nio"),
            ]
        ),
        .executableTarget(
            name: "FuzzUpgradePolicy",
            dependencies: [
                "FuzzDriver",
                .product(name: "WSBridge", package: "wsbridge"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
            ]
        ),
        .executableTarget(
            name: "FuzzRESPParser",
            dependencies: [
                "FuzzDriver",
                .product(name: "WSBridge", package: "wsbridge"),
            ]
        ),
        .executableTarget(
            name: "FuzzProxyHeader",
            dependencies: [
                "FuzzDriver",
                .product(name: "WSBridge", package: "wsbridge"),
            ]
        ),
        .executableTarget(
            name: "FuzzTargetsParsers",
            dependencies: [
                "FuzzDriver",
                .product(name: "WSBridge", package: "wsbridge"),
            ]
        ),
    ],
    swiftLanguageModes: [.v5]
)
