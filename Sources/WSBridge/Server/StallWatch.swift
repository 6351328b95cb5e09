import NIOCore

/// Closes a connection whose answer stops moving: a client that asks for a large file (or any HTTP answer) and then
/// stops reading would otherwise hold its socket, file descriptor and buffers for good.
///
/// It is a stall deadline, not a total time: every quarter of `timeout` it looks at the bytes the channel still has
/// to write (`bufferedWritableBytes`); when that amount is above zero and has not changed for `timeout`, the client
/// is not reading and the connection is closed. A large download on a slow link keeps moving and finishes. Time
/// spent waiting for the bridge itself (a file read on the thread pool, nothing buffered) is never a stall.
final class StallWatch {
    private let channel: Channel
    private let timeout: TimeAmount
    private var lastBuffered: Int = -1
    private var unchangedSince: NIODeadline
    private var task: RepeatedTask?

    private init(channel: Channel, timeout: TimeAmount) {
        self.channel = channel
        self.timeout = timeout
        self.unchangedSince = channel.eventLoop.now
    }

    /// Watches `channel` (on its event loop) until it closes.
    static func start(on channel: Channel, timeout: TimeAmount) {
        channel.eventLoop.preconditionInEventLoop()
        guard timeout > .zero, channel.isActive else { return }
        let watch = StallWatch(channel: channel, timeout: timeout)
        let bound = NIOLoopBound(watch, eventLoop: channel.eventLoop)
        let step = TimeAmount.nanoseconds(max(timeout.nanoseconds / 4, 1_000_000))
        watch.task = channel.eventLoop.scheduleRepeatedTask(initialDelay: step, delay: step) { _ in
            bound.value.check()
        }
        channel.closeFuture.whenComplete { _ in
            bound.value.task?.cancel()
            bound.value.task = nil
        }
    }

    private func check() {
        let now = self.channel.eventLoop.now
        let buffered = (try? self.channel.syncOptions?.getOption(.bufferedWritableBytes)) ?? 0
        if buffered == 0 || buffered != self.lastBuffered {
            self.lastBuffered = buffered
            self.unchangedSince = now
        } else if now - self.unchangedSince >= self.timeout {
            self.task?.cancel()
            self.task = nil
            self.channel.close(promise: nil)
        }
    }
}
