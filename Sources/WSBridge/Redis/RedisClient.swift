import Logging
import NIOConcurrencyHelpers
import NIOCore

/// A small pool of Redis connections for GET (our own RESP client: no Swift Redis client is available to this
/// project). Commands are pipelined on `size` connections, used round-robin, opened lazily. A connection that
/// fails is dropped; reconnecting backs off (0.1 s doubling up to `maxBackoff`), and while it backs off commands
/// fail at once instead of waiting, so that admission answers quickly when Redis is down. A connection on which a
/// command timed out is closed and replaced: a Redis that stops answering on one connection (a dead path that
/// stays open) must not fail every later lookup.
public final class RedisClient: Sendable {
    public let endpoint: RedisEndpoint
    private let group: EventLoopGroup
    private let timeout: TimeAmount
    private let maxBackoff: TimeAmount
    private let logger: Logger

    private enum Slot {
        case idle
        case connecting(EventLoopFuture<RedisConnection>)
        case ready(RedisConnection)
    }

    private struct State {
        var slots: [Slot]
        var next = 0
        var failures = 0
        var retryAt: NIODeadline = .distantPast
        var closed = false
    }

    private let state: NIOLockedValueBox<State>

    /// - Parameter timeout: bound for connecting and for each command.
    public init(
        endpoint: RedisEndpoint,
        group: EventLoopGroup,
        size: Int = 2,
        timeout: TimeAmount = .seconds(1),
        maxBackoff: TimeAmount = .seconds(2),
        logger: Logger
    ) {
        self.endpoint = endpoint
        self.group = group
        self.timeout = timeout
        self.maxBackoff = maxBackoff
        self.logger = logger
        self.state = NIOLockedValueBox(State(slots: Array(repeating: .idle, count: max(1, size))))
    }

    /// Runs one command and answers on `eventLoop`, failing with `RedisError` on an error reply, an unreachable
    /// server or after the timeout.
    public func command(_ arguments: [String], on eventLoop: EventLoop) -> EventLoopFuture<RESPValue> {
        let promise = eventLoop.makePromise(of: RESPValue.self)
        let sentOn = NIOLockedValueBox<RedisConnection?>(nil)
        let timer = eventLoop.scheduleTask(in: self.timeout) {
            promise.fail(RedisError("redis did not answer within \(self.timeout.nanoseconds / 1_000_000) ms"))
            // A connection that let a command time out is not given more: Redis, or the path to it, stopped
            // answering on it, and every command pipelined behind would time out too, for good if the connection
            // is dead but still open. It is closed (failing what waits on it) and the slot connects anew.
            if let connection = sentOn.withLockedValue({ $0 }) {
                self.drop(connection)
                connection.close()
            }
        }
        promise.futureResult.whenComplete { _ in timer.cancel() }
        self.connection(on: eventLoop)
            .flatMap { connection in
                sentOn.withLockedValue { $0 = connection }
                return connection.command(arguments).flatMapErrorThrowing { error in
                    // An error reply leaves the connection usable; a lost connection is dropped.
                    if !connection.isActive { self.drop(connection) }
                    throw error
                }
            }
            .hop(to: eventLoop)
            .cascade(to: promise)
        return promise.futureResult
    }

    /// GET `key`: the value's bytes, or nil when the key does not exist.
    public func get(_ key: String, on eventLoop: EventLoop) -> EventLoopFuture<[UInt8]?> {
        self.command(["GET", key], on: eventLoop).flatMapThrowing { value in
            switch value {
            case .bulkString(let bytes): return bytes
            default: throw RedisError("unexpected answer to GET: \(value)")
            }
        }
    }

    public func close() {
        let slots = self.state.withLockedValue { state -> [Slot] in
            state.closed = true
            defer { state.slots = state.slots.map { _ in .idle } }
            return state.slots
        }
        for case .ready(let connection) in slots { connection.close() }
    }

    private enum Pick {
        case use(EventLoopFuture<RedisConnection>)
        case connect(Int, EventLoopFuture<RedisConnection>)
        case fail(RedisError)
    }

    private func connection(on eventLoop: EventLoop) -> EventLoopFuture<RedisConnection> {
        let pick = self.state.withLockedValue { state -> Pick in
            guard !state.closed else { return .fail(RedisError("redis client closed")) }
            let index = state.next
            state.next = (state.next + 1) % state.slots.count
            switch state.slots[index] {
            case .ready(let connection) where connection.isActive:
                return .use(connection.channel.eventLoop.makeSucceededFuture(connection))
            case .connecting(let future):
                return .use(future)
            case .ready, .idle:
                let now = NIODeadline.now()
                if now < state.retryAt {
                    let wait = (state.retryAt - now).nanoseconds / 1_000_000
                    return .fail(RedisError("redis unreachable (next attempt in \(wait) ms)"))
                }
                let future = RedisConnection.connect(to: self.endpoint, on: eventLoop, timeout: self.timeout)
                state.slots[index] = .connecting(future)
                return .connect(index, future)
            }
        }
        switch pick {
        case .use(let future): return future
        case .fail(let error): return eventLoop.makeFailedFuture(error)
        case .connect(let index, let future):
            future.whenComplete { result in
                switch result {
                case .success(let connection):
                    let keep = self.state.withLockedValue { state -> Bool in
                        guard !state.closed else { return false }
                        state.slots[index] = .ready(connection)
                        if state.failures > 0 {
                            self.logger.info(
                                "redis reachable again",
                                metadata: ["redis": "\(self.endpoint.host):\(self.endpoint.port)"]
                            )
                        }
                        state.failures = 0
                        state.retryAt = .distantPast
                        return true
                    }
                    if !keep { connection.close() }
                case .failure(let error):
                    self.state.withLockedValue { state in
                        state.slots[index] = .idle
                        state.failures += 1
                        let backoff = min(self.maxBackoff.nanoseconds, 100_000_000 << min(state.failures - 1, 20))
                        state.retryAt = .now() + .nanoseconds(backoff)
                        if state.failures == 1 {
                            self.logger.warning(
                                "redis unreachable: \(error)",
                                metadata: ["redis": "\(self.endpoint.host):\(self.endpoint.port)"]
                            )
                        }
                    }
                }
            }
            return future
        }
    }

    private func drop(_ connection: RedisConnection) {
        self.state.withLockedValue { state in
            for index in state.slots.indices {
                if case .ready(let held) = state.slots[index], held === connection { state.slots[index] = .idle }
            }
        }
    }
}
