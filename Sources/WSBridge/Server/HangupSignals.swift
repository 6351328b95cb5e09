import NIOConcurrencyHelpers
import ServiceLifecycle
import UnixSignals

/// The one SIGHUP subscription of the process, fanned out to every service that reloads on it (targets, TLS
/// certificates, credentials, JWT keys, the log file).
///
/// SIGHUP is trapped by `trap()`, before anything listens: a reload request right after start must reload, not
/// kill the process. Each subscriber gets a stream of its own that keeps at most one pending signal (two SIGHUPs
/// while a reload runs ask for one more reload, not two). As a `Service` it delivers signals until graceful
/// shutdown, then ends every subscriber's stream.
public final class HangupSignals: Service, Sendable {
    private let signals: UnixSignalsSequence
    private let subscribers = NIOLockedValueBox<[AsyncStream<Void>.Continuation]>([])

    private init(signals: UnixSignalsSequence) { self.signals = signals }

    /// Traps SIGHUP now; signals that arrive before `run` are delivered when it starts.
    public static func trap() async -> HangupSignals {
        HangupSignals(signals: await UnixSignalsSequence(trapping: .sighup))
    }

    /// A stream with one element per SIGHUP from now on.
    public func subscribe() -> AsyncStream<Void> {
        let (stream, continuation) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
        self.subscribers.withLockedValue { $0.append(continuation) }
        return stream
    }

    public func run() async throws {
        await cancelWhenGracefulShutdown {
            for await _ in self.signals {
                for subscriber in self.subscribers.withLockedValue({ $0 }) { subscriber.yield() }
            }
        }
        for subscriber in self.subscribers.withLockedValue({ $0 }) { subscriber.finish() }
    }
}
