// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "wsbridge",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "wsbridge", targets: ["WSBridgeCLI"]),
        .library(name: "WSBridge", targets: ["WSBridge"]),
        // Benchmarks/run's load generator and TCP backend; not part of the wsbridge binary.
        .executable(name: "wsbridge-bench", targets: ["WSBridgeBench"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.5.0"),
        // 1.16: LogEvent (with its error), which StderrLogHandler formats as StreamLogHandler does.
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.6.0"),
        .package(url: "https://github.com/jpsim/Yams.git", from: "6.0.0"),
        // Metrics: the swift-metrics API in the library, exposed in Prometheus text format.
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.5.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.0.0"),
        // TLS (wss:// termination, mutual TLS, TLS to backends): BoringSSL through SwiftNIO's own TLS handlers,
        // so no crypto is written here and TLS sits in the same pipelines as everything else.
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.37.6"),
        // Signed tokens (JWTTokenApi): JWS verification, HS256/384/512, RS256, ES256, EdDSA, JWK sets.
        .package(url: "https://github.com/vapor/jwt-kit.git", from: "5.7.1"),
        // HMAC for JWT secrets shorter than their hash (jwt-kit asserts on them; websockify accepts them). Already
        // jwt-kit's own dependency.
        .package(url: "https://github.com/apple/swift-crypto.git", from: "4.0.0"),
        // Token HTTP API (BaseTokenAPI/JSONTokenApi): GET with timeouts, pooled connections, TLS.
        .package(url: "https://github.com/swift-server/async-http-client.git", from: "1.21.0"),
        // permessage-deflate (RFC 7692): streaming raw deflate and inflate over the system's zlib, on ByteBuffers.
        .package(url: "https://github.com/adam-fowler/compress-nio.git", from: "1.5.0"),
    ],
    targets: [
        .target(
            name: "WSBridge",
            dependencies: [
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOWebSocket", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
                .product(name: "Yams", package: "Yams"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOTLS", package: "swift-nio"),
                "CCrypt",
                "CBoringSSLCiphers",
                .product(name: "JWTKit", package: "jwt-kit"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "CompressNIO", package: "compress-nio"),
                // The command line's declarations (BridgeOptions) live in the library, so that tests build a
                // Configuration from a command line as the executable does.
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        // crypt(3) from the system's libcrypt (libxcrypt): bcrypt, SHA-256/512-crypt and yescrypt password hashes
        // for the credentials file, without a crypto library of our own.
        .systemLibrary(name: "CCrypt", path: "Sources/CCrypt"),
        // Declarations of BoringSSL functions that NIOSSL links in (Sources/CBoringSSLCiphers/ciphers.h): checking
        // --ssl-ciphers, which NIOSSL cannot do without stopping the process.
        .systemLibrary(name: "CBoringSSLCiphers", path: "Sources/CBoringSSLCiphers"),
        .executableTarget(
            name: "WSBridgeCLI",
            dependencies: [
                "WSBridge",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
            ]
        ),
        // The load generator and backend use SwiftNIO only, so they measure any bridge the same way; its `micro`
        // mode also links the library to time the frame decoder against NIO's.
        .executableTarget(
            name: "WSBridgeBench",
            dependencies: [
                "WSBridge",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOWebSocket", package: "swift-nio"),
            ]
        ),
        .testTarget(
            name: "WSBridgeTests",
            dependencies: [
                "WSBridge",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOWebSocket", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "JWTKit", package: "jwt-kit"),
                .product(name: "Crypto", package: "swift-crypto"),
            ]
        ),
    ],
    swiftLanguageModes: [.v5]
)
