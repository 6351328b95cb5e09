import NIOCore
import NIOPosix

#if canImport(Glibc)
    import Glibc
#endif

/// Monotonic nanoseconds.
@inline(__always) func nowNanos() -> UInt64 { NIODeadline.now().uptimeNanoseconds }

/// Options of a client run.
struct ClientOptions {
    var endpoint: Endpoint
    var scenario: String
    /// Message (frame) size in bytes, or write size in raw TCP mode.
    var size = 16 << 10
    var sessions = 1
    var warmup = 1.0
    var seconds = 3.0
    /// `flood`: stop a session after this many bytes.
    var floodCap = 32 << 20
    /// `hold`, `flood`: how many connects are in flight at once.
    var connectConcurrency = 32
    /// `hold`, `flood`: give up waiting for the operator's `release` line after this many seconds.
    var holdTimeout = 120.0
}

/// Frames (or raw chunks) for a client that sends the pattern stream in messages of `size` bytes, precomputed
/// once so that sending costs the client nothing but the system calls. Messages are masked with a fixed key:
/// the bridge's unmask work does not depend on the key's value.
struct OutgoingStream {
    let messages: [ByteBuffer]

    init(kind: Endpoint.Kind, size: Int, allocator: ByteBufferAllocator, mask: UInt32 = 0xA1B2_C3D4) {
        precondition(
            size > 0 && (size % Pattern.period == 0 || Pattern.period % size == 0),
            "message size must divide \(Pattern.period) or be a multiple of it"
        )
        let count = max(1, Pattern.period / size)
        var offset: UInt64 = 0
        var all = allocator.buffer(capacity: count * (size + 14) + (size > Pattern.period ? size : 0))
        var ranges: [(Int, Int)] = []
        for _ in 0..<count {
            let start = all.writerIndex
            switch kind {
            case .webSocket:
                if size <= Pattern.period {
                    Frames.appendMasked(
                        &all,
                        opcode: 0x2,
                        payload: Pattern.window(at: offset, length: size),
                        mask: mask
                    )
                } else {
                    // A message of several periods: the pattern repeated, masked as one payload.
                    Frames.appendHeader(&all, opcode: 0x2, length: size, mask: mask)
                    let payloadStart = all.writerIndex
                    for _ in 0..<(size / Pattern.period) {
                        all.writeBytes(Pattern.window(at: 0, length: Pattern.period))
                    }
                    all.withUnsafeMutableReadableBytes {
                        Frames.xorMask(UnsafeMutableRawBufferPointer(rebasing: $0[payloadStart...]), mask: mask)
                    }
                }
            case .rawTCP:
                if size <= Pattern.period {
                    all.writeBytes(Pattern.window(at: offset, length: size))
                } else {
                    for _ in 0..<(size / Pattern.period) {
                        all.writeBytes(Pattern.window(at: 0, length: Pattern.period))
                    }
                }
            }
            ranges.append((start, all.writerIndex - start))
            offset += UInt64(size)
        }
        self.messages = ranges.map { all.getSlice(at: $0.0, length: $0.1)! }
    }
}

/// A scenario: connects, runs, and returns a result line (JSON).
protocol Scenario: ConnectionDriver {
    func start()
    /// Called on the event loop once the run ends; returns the JSON fields.
    func finish() -> [(String, String)]
}

func jsonNumber(_ value: Double) -> String {
    value.isFinite ? "\(Double(Int64((value * 1000).rounded())) / 1000)" : "null"
}

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

// MARK: - Held sessions and floods

/// `hold`: opens `sessions` sessions to an echo backend, proves each with a one-byte round trip, reports
/// `held N` on stdout, waits for `release` on stdin, then closes them all (Close frames).
///
/// `flood`: opens `sessions` sessions to a backend that does not read and sends the pattern into each until it is
/// pushed back (no write completes for a second) or `floodCap` bytes; reports `flooded BYTES`, waits for
/// `release`, then resets every connection (the client vanishes).
final class HoldScenario: Scenario {
    let options: ClientOptions
    let group: EventLoopGroup
    let flood: Bool
    var bootstrap: ClientBootstrap?
    var connections: [ClientConnection] = []
    var launched = 0
    var ready = 0
    var failed = 0
    var errors: [String] = []
    var stopping = false
    var stream: OutgoingStream?
    var sent: [Int: Int] = [:]
    var lastProgress: [Int: UInt64] = [:]
    var ids = 0
    let allReady: EventLoopPromise<Void>

    init(options: ClientOptions, group: EventLoopGroup, flood: Bool) {
        self.options = options
        self.group = group
        self.flood = flood
        self.allReady = group.next().makePromise()
    }

    func start() {
        let (bootstrap, _) = makeClientBootstrap(
            group: group,
            endpoint: options.endpoint,
            driver: self,
            nextID: {
                defer { self.ids += 1 }
                return self.ids
            },
            highWaterMark: 256 << 10
        )
        self.bootstrap = bootstrap
        for _ in 0..<min(options.connectConcurrency, options.sessions) { self.launch() }
    }

    private func launch() {
        guard self.launched < options.sessions, let bootstrap = self.bootstrap else { return }
        self.launched += 1
        bootstrap.connect(host: options.endpoint.host, port: options.endpoint.port).whenFailure { error in
            self.errors.append("connect: \(error)")
            self.failed += 1
            self.checkReady()
            self.launch()
        }
    }

    func opened(_ connection: ClientConnection) {
        self.connections.append(connection)
        if self.flood {
            if self.stream == nil {
                self.stream = OutgoingStream(
                    kind: options.endpoint.kind,
                    size: 64 << 10,
                    allocator: connection.allocator
                )
            }
            self.sent[connection.id] = 0
            self.lastProgress[connection.id] = nowNanos()
            self.ready += 1
            self.pump(connection)
            self.launch()
            self.checkReady()
        } else {
            var byte = connection.allocator.buffer(capacity: 8)
            switch options.endpoint.kind {
            case .webSocket:
                Frames.appendMasked(&byte, opcode: 0x2, payload: Pattern.window(at: 0, length: 1), mask: 0x0BAD_F00D)
            case .rawTCP: byte.writeBytes(Pattern.window(at: 0, length: 1))
            }
            connection.write(byte)
            connection.flush()
        }
    }

    func payload(_ connection: ClientConnection, _ buffer: ByteBuffer) {
        guard !self.flood, connection.counter == 0 else { return }
        connection.counter = 1
        self.ready += 1
        self.launch()
        self.checkReady()
    }

    private func pump(_ connection: ClientConnection) {
        guard let messages = self.stream?.messages, !self.stopping else { return }
        var wrote = false
        var index = Int(connection.mark)
        while connection.isWritable && (self.sent[connection.id] ?? 0) < options.floodCap {
            let message = messages[index]
            index = (index + 1) % messages.count
            let promise = connection.channel!.eventLoop.makePromise(of: Void.self)
            let size = message.readableBytes
            let id = connection.id
            promise.futureResult.whenSuccess {
                self.sent[id, default: 0] += size
                self.lastProgress[id] = nowNanos()
            }
            // Count what was queued so the cap holds even while the writes are pending.
            connection.write(message, promise: promise)
            wrote = true
            if self.queuedTooMuch(connection) { break }
        }
        connection.mark = UInt64(index)
        if wrote { connection.flush() }
    }

    private func queuedTooMuch(_ connection: ClientConnection) -> Bool {
        (self.sent[connection.id] ?? 0) + (256 << 10) >= options.floodCap
    }

    func writable(_ connection: ClientConnection) {
        if self.flood { self.pump(connection) }
    }

    private func checkReady() {
        if self.ready + self.failed >= options.sessions && !self.flood {
            self.allReady.succeed(())
        }
    }

    /// For a flood: true once every session is capped or has made no progress for a second.
    func floodSettled() -> Bool {
        guard self.ready + self.failed >= options.sessions else { return false }
        let now = nowNanos()
        for connection in self.connections {
            let sent = self.sent[connection.id] ?? 0
            let idle = now - (self.lastProgress[connection.id] ?? now)
            if sent < options.floodCap - (256 << 10) && idle < 1_000_000_000 { return false }
        }
        return true
    }

    func totalSent() -> Int { self.sent.values.reduce(0, +) }

    func closed(_ connection: ClientConnection, error: Error?) {
        if !self.stopping {
            self.errors.append(error.map { "\($0)" } ?? "closed early")
            self.failed += 1
            self.checkReady()
        }
    }

    func release() {
        self.stopping = true
        for connection in self.connections {
            guard let channel = connection.channel else { continue }
            if self.flood {
                // Vanish: RST, as a client that crashed or lost its network would.
                if let provider = channel as? SocketOptionProvider {
                    provider.setSoLinger(linger(l_onoff: 1, l_linger: 0)).whenComplete { _ in
                        channel.close(promise: nil)
                    }
                } else {
                    channel.close(promise: nil)
                }
            } else {
                connection.sendClose()
            }
        }
    }

    func finish() -> [(String, String)] {
        [("held", "\(self.ready)"), ("failed", "\(self.failed)"), ("flood_bytes", "\(self.totalSent())")]
    }
}
