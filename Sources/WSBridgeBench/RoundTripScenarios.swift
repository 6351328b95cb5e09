import NIOCore
import NIOPosix

#if canImport(Glibc)
    import Glibc
#endif

// MARK: - Echo round trips

/// `sessions` connections, each with one message of `size` bytes in flight: send, wait for all of it to come back
/// (verified), record the round-trip time, send the next.
final class EchoScenario: Scenario {
    let options: ClientOptions
    let group: EventLoopGroup
    var stream: OutgoingStream?
    var connections: [ClientConnection] = []
    var nextMessage: [Int] = []
    var rtts: [UInt64] = []
    var measureFrom: UInt64 = 0
    var completed = 0
    var allRoundTrips = 0
    var mismatch = false
    var errors: [String] = []
    var stopping = false
    var ids = 0

    init(options: ClientOptions, group: EventLoopGroup) {
        self.options = options
        self.group = group
        self.rtts.reserveCapacity(1 << 20)
    }

    func start() {
        self.measureFrom = nowNanos() + UInt64(options.warmup * 1e9)
        let (bootstrap, _) = makeClientBootstrap(
            group: group,
            endpoint: options.endpoint,
            driver: self,
            nextID: {
                defer { self.ids += 1 }
                return self.ids
            }
        )
        self.nextMessage = Array(repeating: 0, count: options.sessions)
        for _ in 0..<options.sessions {
            bootstrap.connect(host: options.endpoint.host, port: options.endpoint.port).whenFailure {
                self.errors.append("connect: \($0)")
            }
        }
    }

    func opened(_ connection: ClientConnection) {
        if self.stream == nil {
            self.stream = OutgoingStream(
                kind: options.endpoint.kind,
                size: options.size,
                allocator: connection.allocator
            )
        }
        self.send(connection)
    }

    private func send(_ connection: ClientConnection) {
        guard let messages = self.stream?.messages, !self.stopping else { return }
        let index = self.nextMessage[connection.id]
        self.nextMessage[connection.id] = (index + 1) % messages.count
        connection.counter = 0
        connection.sentAt = nowNanos()
        connection.write(messages[index])
        connection.flush()
    }

    func payload(_ connection: ClientConnection, _ buffer: ByteBuffer) {
        if !connection.verifier.consume(buffer) { self.mismatch = true }
        connection.counter += UInt64(buffer.readableBytes)
        if connection.counter >= UInt64(options.size) {
            let now = nowNanos()
            self.allRoundTrips += 1
            if now >= self.measureFrom && !self.stopping {
                self.rtts.append(now - connection.sentAt)
            }
            self.send(connection)
        }
    }

    func closed(_ connection: ClientConnection, error: Error?) {
        if !self.stopping { self.errors.append(error.map { "\($0)" } ?? "connection closed early") }
    }

    func finish() -> [(String, String)] {
        self.stopping = true
        let elapsed = Double(nowNanos() - self.measureFrom) / 1e9
        let sorted = self.rtts.sorted()
        func percentile(_ p: Double) -> Double {
            guard !sorted.isEmpty else { return .nan }
            let index = min(sorted.count - 1, Int((p * Double(sorted.count)).rounded(.up)) - 1)
            return Double(sorted[max(0, index)]) / 1000
        }
        return [
            ("msgs_per_s", jsonNumber(Double(sorted.count) / elapsed)),
            ("p50_us", jsonNumber(percentile(0.50))),
            ("p99_us", jsonNumber(percentile(0.99))),
            ("round_trips", "\(sorted.count)"),
            ("all_round_trips", "\(self.allRoundTrips)"),
            ("mismatch", self.mismatch ? "true" : "false"),
        ]
    }
}

// MARK: - Handshakes

/// `sessions` loops, each: connect, upgrade, Close, wait for the server's Close and the end of the connection,
/// again. In raw TCP mode: connect, one byte to the echo backend and back, close.
final class HandshakeScenario: Scenario {
    let options: ClientOptions
    let group: EventLoopGroup
    var bootstrap: ClientBootstrap?
    var completions: [UInt64] = []
    var measureFrom: UInt64 = 0
    var errors: [String] = []
    var stopping = false
    var closeReceived: Set<ObjectIdentifier> = []

    init(options: ClientOptions, group: EventLoopGroup) {
        self.options = options
        self.group = group
    }

    func start() {
        self.measureFrom = nowNanos() + UInt64(options.warmup * 1e9)
        let (bootstrap, _) = makeClientBootstrap(group: group, endpoint: options.endpoint, driver: self, nextID: { 0 })
        self.bootstrap = bootstrap
        for _ in 0..<options.sessions { self.connect() }
    }

    private func connect() {
        guard !self.stopping, let bootstrap = self.bootstrap else { return }
        bootstrap.connect(host: options.endpoint.host, port: options.endpoint.port).whenFailure { error in
            self.errors.append("connect: \(error)")
            // Keep the loop going (bounded by the run's duration).
            self.group.next().scheduleTask(in: .milliseconds(10)) { self.connect() }
        }
    }

    func opened(_ connection: ClientConnection) {
        switch options.endpoint.kind {
        case .webSocket:
            connection.sendClose()
        case .rawTCP:
            var byte = connection.allocator.buffer(capacity: 1)
            byte.writeInteger(UInt8(42))
            connection.write(byte)
            connection.flush()
        }
    }

    func payload(_ connection: ClientConnection, _ buffer: ByteBuffer) {
        if options.endpoint.kind == .rawTCP {
            self.closeReceived.insert(ObjectIdentifier(connection))
            connection.channel?.close(promise: nil)
        }
    }

    func closeReceived(_ connection: ClientConnection) {
        // The server closes the TCP connection after the closing handshake (RFC 6455 §7.1.1); wait for that.
        self.closeReceived.insert(ObjectIdentifier(connection))
    }

    func closed(_ connection: ClientConnection, error: Error?) {
        let complete = self.closeReceived.remove(ObjectIdentifier(connection)) != nil
        if complete {
            let now = nowNanos()
            if now >= self.measureFrom { self.completions.append(now) }
        } else if !self.stopping {
            self.errors.append(error.map { "\($0)" } ?? "closed before the closing handshake")
        }
        self.connect()
    }

    func finish() -> [(String, String)] {
        self.stopping = true
        let elapsed = Double(nowNanos() - self.measureFrom) / 1e9
        return [
            ("handshakes_per_s", jsonNumber(Double(self.completions.count) / elapsed)),
            ("handshakes", "\(self.completions.count)"),
        ]
    }
}
