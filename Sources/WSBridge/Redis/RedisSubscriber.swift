import Logging
import NIOConcurrencyHelpers
import NIOCore

/// A dedicated Redis connection subscribed to one channel. When the connection is lost, or stops answering the
/// liveness PING, it reconnects with backoff (0.1 s doubling up to 2 s) and calls `onResubscribe`, since
/// messages published meanwhile were missed.
public final class RedisSubscriber: Sendable {
    private let endpoint: RedisEndpoint
    private let channelName: String
    private let eventLoop: EventLoop
    private let logger: Logger
    private let onMessage: @Sendable ([UInt8]) -> Void
    private let onResubscribe: @Sendable () -> Void

    private struct State {
        var connection: RedisConnection?
        var failures = 0
        var stopped = false
        var everSubscribed = false
    }

    private let state = NIOLockedValueBox(State())

    public init(
        endpoint: RedisEndpoint,
        channel: String,
        eventLoop: EventLoop,
        logger: Logger,
        onMessage: @escaping @Sendable ([UInt8]) -> Void,
        onResubscribe: @escaping @Sendable () -> Void
    ) {
        self.endpoint = endpoint
        self.channelName = channel
        self.eventLoop = eventLoop
        self.logger = logger
        self.onMessage = onMessage
        self.onResubscribe = onResubscribe
    }

    public func start() { self.attempt() }

    public func stop() {
        let connection = self.state.withLockedValue { state -> RedisConnection? in
            state.stopped = true
            return state.connection
        }
        connection?.close()
    }

    private func attempt() {
        guard !self.state.withLockedValue({ $0.stopped }) else { return }
        let name = self.channelName
        let onMessage = self.onMessage
        RedisConnection.connect(to: self.endpoint, on: self.eventLoop, timeout: .seconds(1)) { channel, message in
            if channel == name { onMessage(message) }
        }
        .flatMap { connection in
            connection.command(["SUBSCRIBE", name]).map { _ in connection }.flatMapErrorThrowing { error in
                connection.close()
                throw error
            }
        }
        .whenComplete { result in
            switch result {
            case .success(let connection):
                let (stopped, again) = self.state.withLockedValue { state -> (Bool, Bool) in
                    state.connection = connection
                    state.failures = 0
                    defer { state.everSubscribed = true }
                    return (state.stopped, state.everSubscribed)
                }
                if stopped {
                    connection.close()
                    return
                }
                self.logger.info("subscribed to redis channel \(name)")
                if again { self.onResubscribe() }
                self.watch(connection)
                connection.channel.closeFuture.whenComplete { _ in
                    self.logger.warning("redis subscription lost; reconnecting")
                    self.state.withLockedValue { $0.connection = nil }
                    self.retryLater()
                }
            case .failure(let error):
                let failures = self.state.withLockedValue { state -> Int in
                    state.failures += 1
                    return state.failures
                }
                if failures == 1 { self.logger.warning("redis subscription to \(name) failed: \(error)") }
                self.retryLater()
            }
        }
    }

    /// How often the subscription proves it is alive, and how long its answer may take.
    static let livenessInterval: TimeAmount = .seconds(2)
    static let livenessTimeout: TimeAmount = .seconds(1)

    /// A subscription only receives: a connection that died without a FIN or RST (a middlebox, a frozen server)
    /// would miss every revocation without a word. A PING (allowed in subscribed mode) every `livenessInterval`
    /// must be answered within `livenessTimeout`, else the connection is closed, which reconnects and resubscribes.
    private func watch(_ connection: RedisConnection) {
        let eventLoop = connection.channel.eventLoop
        let logger = self.logger
        let pings = eventLoop.scheduleRepeatedTask(initialDelay: Self.livenessInterval, delay: Self.livenessInterval) {
            _ in
            let deadline = eventLoop.scheduleTask(in: Self.livenessTimeout) {
                logger.warning(
                    "redis subscription did not answer a PING within \(Self.livenessTimeout.nanoseconds / 1_000_000) ms"
                )
                connection.close()
            }
            connection.command(["PING"]).whenComplete { _ in deadline.cancel() }
        }
        connection.channel.closeFuture.whenComplete { _ in pings.cancel() }
    }

    private func retryLater() {
        let failures = self.state.withLockedValue { $0.failures }
        let delay = min(2_000_000_000, 100_000_000 << min(failures, 20))
        self.eventLoop.scheduleTask(in: .nanoseconds(Int64(delay))) { self.attempt() }
    }
}
