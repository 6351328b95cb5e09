import NIOCore
import NIOPosix

#if canImport(Glibc)
    import Glibc
#endif

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
