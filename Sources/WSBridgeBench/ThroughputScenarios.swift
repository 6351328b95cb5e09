import NIOCore
import NIOPosix

#if canImport(Glibc)
    import Glibc
#endif

// MARK: - Throughput

/// Upload: the client sends the pattern as fast as it can; the sink backend acks every few MiB, and throughput is
/// the slope between the first ack after the warm-up and the last ack of the run (both timed by the client).
final class UploadScenario: Scenario {
    let options: ClientOptions
    let group: EventLoopGroup
    var stream: OutgoingStream?
    var next = 0
    var ackBytes = ByteBuffer()
    var acks: [(time: UInt64, bytes: UInt64)] = []
    var mismatch = false
    var errors: [String] = []
    var startedAt: UInt64 = 0
    var stopping = false

    init(options: ClientOptions, group: EventLoopGroup) {
        self.options = options
        self.group = group
    }

    func start() {
        let (bootstrap, _) = makeClientBootstrap(group: group, endpoint: options.endpoint, driver: self, nextID: { 0 })
        self.startedAt = nowNanos()
        bootstrap.connect(host: options.endpoint.host, port: options.endpoint.port).whenFailure {
            self.errors.append("connect: \($0)")
        }
    }

    func opened(_ connection: ClientConnection) {
        self.stream = OutgoingStream(kind: options.endpoint.kind, size: options.size, allocator: connection.allocator)
        self.pump(connection)
    }

    func pump(_ connection: ClientConnection) {
        guard let messages = self.stream?.messages, !self.stopping else { return }
        var wrote = false
        while connection.isWritable {
            connection.write(messages[self.next])
            self.next = (self.next + 1) % messages.count
            wrote = true
        }
        if wrote { connection.flush() }
    }

    func writable(_ connection: ClientConnection) { self.pump(connection) }

    func payload(_ connection: ClientConnection, _ buffer: ByteBuffer) {
        var buffer = buffer
        self.ackBytes.writeBuffer(&buffer)
        while let value = self.ackBytes.readInteger(as: UInt64.self) {
            if value & (1 << 63) != 0 { self.mismatch = true }
            self.acks.append((nowNanos(), value & ~(1 << 63)))
        }
        self.ackBytes.discardReadBytes()
    }

    func closed(_ connection: ClientConnection, error: Error?) {
        if let error, !self.stopping { self.errors.append("\(error)") }
    }

    func finish() -> [(String, String)] {
        self.stopping = true
        let from = self.startedAt + UInt64(options.warmup * 1e9)
        let measured = self.acks.filter { $0.time >= from }
        var rate = Double.nan
        if let first = measured.first, let last = measured.last, last.time > first.time {
            rate = Double(last.bytes - first.bytes) / (Double(last.time - first.time) / 1e9)
        }
        return [
            ("mib_per_s", jsonNumber(rate / 1_048_576)),
            ("acked_bytes", "\(self.acks.last?.bytes ?? 0)"),
            ("mismatch", self.mismatch ? "true" : "false"),
        ]
    }
}

/// Download: the source backend writes the pattern; the client verifies every byte and counts them between the
/// end of the warm-up and the end of the run.
final class DownloadScenario: Scenario {
    let options: ClientOptions
    let group: EventLoopGroup
    var verifier = StreamVerifier()
    var mark: (time: UInt64, bytes: UInt64)?
    var errors: [String] = []
    var stopping = false

    init(options: ClientOptions, group: EventLoopGroup) {
        self.options = options
        self.group = group
    }

    func start() {
        let (bootstrap, _) = makeClientBootstrap(group: group, endpoint: options.endpoint, driver: self, nextID: { 0 })
        bootstrap.connect(host: options.endpoint.host, port: options.endpoint.port).whenFailure {
            self.errors.append("connect: \($0)")
        }
        group.next().scheduleTask(in: .nanoseconds(Int64(options.warmup * 1e9))) {
            self.mark = (nowNanos(), self.verifier.offset)
        }
    }

    func opened(_ connection: ClientConnection) {}

    func payload(_ connection: ClientConnection, _ buffer: ByteBuffer) {
        self.verifier.consume(buffer)
    }

    func closed(_ connection: ClientConnection, error: Error?) {
        if !self.stopping { self.errors.append(error.map { "\($0)" } ?? "connection closed early") }
    }

    func finish() -> [(String, String)] {
        self.stopping = true
        var rate = Double.nan
        if let mark = self.mark {
            let now = nowNanos()
            rate = Double(self.verifier.offset - mark.bytes) / (Double(now - mark.time) / 1e9)
        }
        return [
            ("mib_per_s", jsonNumber(rate / 1_048_576)),
            ("received_bytes", "\(self.verifier.offset)"),
            ("mismatch", self.verifier.mismatches > 0 ? "true" : "false"),
        ]
    }
}
