import Logging
import NIOCore
import NIOEmbedded
import NIOHTTP1

@testable import WSBridge

#if canImport(Glibc)
    import Glibc
#endif

// The harness of Fuzz/Sources/FuzzUpgradePolicy (whose FuzzUpgradePolicyHarness.swift is a symlink to this file), compiled
// into the fuzzer by Fuzz/Package.swift and into WSBridgeTests, where FuzzCorpusReplayTests runs every seed of
// Fuzz/corpus/FuzzUpgradePolicy and every crash reproducer of Fuzz/reproducers/FuzzUpgradePolicy through it on each `swift test`:
// a finding traps (fatalError), which fails the run. The comments below are the harness's own.
enum FuzzUpgradePolicyHarness {
    // Fuzzes what a client sends before and right after the upgrade.
    //
    // Input: byte 0 seeds how the rest is cut into reads; the rest is the client's bytes. Two harnesses run on it:
    //   1. NIO's HTTP request decoder (with the bridge's limits) turns the bytes into request heads, and
    //      UpgradePolicy.decide judges each against a table with tokens, per-target origins and an echo target.
    //      It traps when a decision is not one the contract allows (status, target, subprotocol).
    //   2. The whole client pipeline of BridgeServer, in memory (EmbeddedChannel; the relay target's backend is an
    //      EmbeddedChannel too): the bytes go in, timers are run to their ends. It traps when the bridge answers
    //      something that is neither an HTTP/1.1 response nor (after a 101) WebSocket frames, and on any crash.

    static func check(_ condition: Bool, _ message: @autoclosure () -> String) {
        if !condition { fatalError("fuzz finding: \(message())") }
    }

    struct SplitMix {
        var state: UInt64
        mutating func next() -> UInt64 {
            self.state &+= 0x9E37_79B9_7F4A_7C15
            var z = self.state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
    }

    static let relayTarget = Target(name: "relay", backend: .tcp(host: "127.0.0.1", port: 1))
    static let echoTarget = Target(
        name: "selftest",
        backend: .echo,
        origins: try! OriginAllowList(["https://*.example.com"])
    )
    static let table = TargetTable(
        mode: .tokens(["relay": relayTarget, "echo": echoTarget]),
        origins: try! OriginAllowList(["https://app.example.com", "http://localhost:8080"])
    )
    static let allowedStatuses: Set<UInt> = [400, 403, 404, 405, 426]

    final class HeadCollector: ChannelInboundHandler {
        typealias InboundIn = HTTPServerRequestPart
        var heads: [HTTPRequestHead] = []
        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            if case .head(let head) = self.unwrapInboundIn(data) { self.heads.append(head) }
        }
        func errorCaught(context: ChannelHandlerContext, error: Error) {
            context.close(promise: nil)
        }
    }

    static func cut(_ bytes: [UInt8], seed: UInt8) -> [ArraySlice<UInt8>] {
        var random = SplitMix(state: UInt64(seed) &* 0x1000_0001)
        var pieces: [ArraySlice<UInt8>] = []
        var offset = 0
        while offset < bytes.count {
            let n = random.next() % 4 == 0 ? Int(random.next() % 8) + 1 : Int(random.next() % 512) + 1
            pieces.append(bytes[offset..<min(bytes.count, offset + n)])
            offset += n
        }
        return pieces
    }

    static func fuzzAdmission(_ pieces: [ArraySlice<UInt8>]) {
        let channel = EmbeddedChannel()
        var limits = NIOHTTPDecoderLimitConfiguration()
        limits.maxHeaderListSize = 16 << 10
        limits.maxHeaderFieldSize = 16 << 10
        limits.maxHeaderFieldCount = 256
        let collector = HeadCollector()
        try! channel.pipeline.syncOperations.addHandler(
            ByteToMessageHandler(HTTPRequestDecoder(leftOverBytesStrategy: .dropBytes, limitConfiguration: limits))
        )
        try! channel.pipeline.syncOperations.addHandler(collector)
        for piece in pieces where channel.isActive {
            _ = try? channel.writeInbound(ByteBuffer(bytes: piece))
        }
        // Every token source: query, path template, Bearer, subprotocol, cookie; and the Host header alone.
        let policies = [
            UpgradePolicy(requireOrigin: false),
            UpgradePolicy(requireOrigin: true, tokenSources: .init(pathTemplate: "/t/{token}")),
            UpgradePolicy(requireOrigin: false, tokenSources: .init(hostToken: true)),
        ]
        for head in collector.heads {
            for policy in policies {
                let decision = policy.decide(head, targets: table, client: "10.0.0.1")
                switch decision {
                case .accept(let admission):
                    check(head.method == .GET, "accepted \(head.method)")
                    check([relayTarget, echoTarget].contains(admission.target), "accepted to an unknown target")
                    check(
                        admission.subprotocol == nil || admission.subprotocol == "binary",
                        "subprotocol \(String(describing: admission.subprotocol))"
                    )
                    let token = policy.token(in: head)
                    check(token == "relay" || token == "echo", "accepted with token \(String(describing: token))")
                    check(
                        admission.token == token,
                        "admitted with token \(String(describing: admission.token)), not \(String(describing: token))"
                    )
                case .reject(let rejection):
                    check(allowedStatuses.contains(rejection.status.code), "refused with \(rejection.status.code)")
                    check(
                        !rejection.reason.isEmpty && !rejection.reason.contains("\n"),
                        "not one line: \(rejection.reason)"
                    )
                }
            }
        }
        _ = try? channel.finish()
    }

    /// One server for all runs, as in the real bridge (one server, many connections): what a connection leaves
    /// behind in it would add up here.
    nonisolated(unsafe) static var currentBackend: EmbeddedChannel?
    static let server: BridgeServer = {
        let connector = BackendConnector { _, eventLoop in
            let handler = BackendHandler()
            let channel = EmbeddedChannel(loop: eventLoop as! EmbeddedEventLoop)
            try! channel.pipeline.syncOperations.addHandler(handler)
            _ = channel.connect(to: try! SocketAddress(ipAddress: "127.0.0.1", port: 1))
            currentBackend = channel
            return eventLoop.makeSucceededFuture(handler)
        }
        var configuration = BridgeConfiguration(pingInterval: .seconds(5), pongTimeout: .seconds(5))
        configuration.maxFrameSize = 1 << 16
        return BridgeServer(
            configuration: configuration,
            targets: TargetsStore(fixed: table),
            group: EmbeddedEventLoop(),
            logger: Logger(label: "fuzz", factory: { _ in SwiftLogNoOpLogHandler() }),
            connector: connector
        )
    }()

    static func fuzzPipeline(_ pieces: [ArraySlice<UInt8>]) {
        let loop = EmbeddedEventLoop()
        let client = EmbeddedChannel(loop: loop)
        currentBackend = nil
        try! server.initializeConnection(client)
        _ = try? client.connect(to: SocketAddress(ipAddress: "10.0.0.1", port: 5555)).wait()

        var output: [UInt8] = []
        func drain() {
            while let part = try? client.readOutbound(as: IOData.self) {
                if case .byteBuffer(let buffer) = part { output += buffer.readableBytesView }
            }
            if let backend = currentBackend {
                while (try? backend.readOutbound(as: ByteBuffer.self)) != nil {}
            }
        }
        for piece in pieces where client.isActive {
            _ = try? client.writeInbound(ByteBuffer(bytes: piece))
            loop.run()
            drain()
        }
        if let backend = currentBackend, backend.isActive {
            _ = try? backend.writeInbound(ByteBuffer(string: "backend bytes"))
            backend.pipeline.fireUserInboundEventTriggered(ChannelEvent.inputClosed)
            loop.run()
        }
        loop.advanceTime(by: .seconds(120))  // handshake, ping, pong and close timers all fire
        drain()
        if !output.isEmpty {
            check(
                output.starts(with: Array("HTTP/1.1 ".utf8)),
                "the bridge answered something that is not HTTP/1.1: \(output.prefix(40))"
            )
        }
        _ = try? client.close().wait()
        if let backend = currentBackend { _ = try? backend.close().wait() }
        loop.run()
        _ = try? loop.syncShutdownGracefully()
    }

    /// FUZZ_ONLY=admission or pipeline runs one half (to tell which one a finding or a memory growth comes from).
    static let only = getenv("FUZZ_ONLY").map { String(cString: $0) }

    static func testOneInput(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
        guard size >= 1 else { return 0 }
        let input = Array(UnsafeBufferPointer(start: data, count: size))
        let pieces = cut(Array(input[1...]), seed: input[0])
        if only != "pipeline" { fuzzAdmission(pieces) }
        if only != "admission" { fuzzPipeline(pieces) }
        return 0
    }
}
