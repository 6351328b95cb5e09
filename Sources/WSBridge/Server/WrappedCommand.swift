import Foundation
import Logging
import NIOConcurrencyHelpers
import ServiceLifecycle

/// websockify's wrap mode (`[SOURCE_ADDR:]SOURCE_PORT -- COMMAND ARGS...`): the bridge starts the program (its
/// standard input, output and error are the bridge's), relays to the explicit target the program serves (a Unix
/// socket with `--unix-target`, say), and when the program exits does what `mode` says: `exit` ends the server with
/// the program's status, `ignore` keeps serving, `respawn` starts it again, but not a fourth time within 10 seconds
/// of the last three starts (websockify's throttle). On graceful shutdown the program gets SIGTERM, then SIGKILL
/// after `stopTimeout`.
public final class WrappedCommand: Service, Sendable {
    public enum Mode: String, Sendable, CaseIterable {
        case exit
        case ignore
        case respawn
    }

    private struct State {
        var process: Process?
        var starts: [ContinuousClock.Instant] = []
        var shuttingDown = false
        var exitStatus: Int32?
    }

    public let command: [String]
    public let mode: Mode
    public let stopTimeout: Duration
    /// Variables added to the program's environment (wrap mode without a target: the preload library's).
    public let environment: [String: String]
    private let logger: Logger
    private let state = NIOLockedValueBox(State())

    public init(
        command: [String],
        mode: Mode,
        environment: [String: String] = [:],
        logger: Logger,
        stopTimeout: Duration = .seconds(5)
    ) {
        precondition(!command.isEmpty, "a wrapped command needs a program")
        self.command = command
        self.mode = mode
        self.environment = environment
        self.logger = logger
        self.stopTimeout = stopTimeout
    }

    /// The program's exit status when it ended the server (`mode == .exit`); nil otherwise.
    public var exitStatus: Int32? { self.state.withLockedValue { $0.exitStatus } }

    public func run() async throws {
        let (exits, continuation) = AsyncStream.makeStream(of: Int32.self)
        try self.start(reporting: continuation)
        await withGracefulShutdownHandler {
            for await status in exits {
                self.logger.info(
                    "wrapped command exited",
                    metadata: ["status": "\(status)", "wrap_mode": "\(self.mode.rawValue)"]
                )
                switch self.mode {
                case .exit:
                    self.state.withLockedValue { $0.exitStatus = status }
                    return
                case .ignore:
                    continue
                case .respawn:
                    let wait = self.state.withLockedValue { Self.respawnDelay(starts: $0.starts, now: .now) }
                    if wait > .zero {
                        self.logger.warning(
                            "wrapped command respawning too fast: waiting",
                            metadata: ["seconds": "\(wait)"]
                        )
                        try? await Task.sleep(for: wait)
                    }
                    guard !self.state.withLockedValue({ $0.shuttingDown }) else { return }
                    do {
                        try self.start(reporting: continuation)
                    } catch {
                        self.logger.error("cannot start the wrapped command again: \(error)")
                        return
                    }
                }
            }
        } onGracefulShutdown: {
            let process = self.state.withLockedValue { state in
                state.shuttingDown = true
                return state.process
            }
            if let process, process.isRunning { kill(process.processIdentifier, SIGTERM) }
            continuation.finish()
        }
        await self.stopProgram()
    }

    /// How long a respawn waits: websockify starts the program again only when its last three starts are, on
    /// average, at least 10 seconds ago.
    public static func respawnDelay(starts: [ContinuousClock.Instant], now: ContinuousClock.Instant) -> Duration {
        let last = starts.suffix(3)
        guard last.count == 3 else { return .zero }
        let offsets = last.map { now - $0 }
        let average = (offsets[0] + offsets[1] + offsets[2]) / 3
        return average >= .seconds(10) ? .zero : .seconds(10) - average
    }

    private func start(reporting exits: AsyncStream<Int32>.Continuation) throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: Self.resolve(self.command[0]))
        process.arguments = Array(self.command.dropFirst())
        if !self.environment.isEmpty {
            process.environment = ProcessInfo.processInfo.environment.merging(self.environment) { _, ours in ours }
        }
        process.terminationHandler = { finished in exits.yield(finished.terminationStatus) }
        try process.run()
        self.state.withLockedValue { state in
            state.process = process
            state.starts = Array((state.starts + [.now]).suffix(3))
        }
        self.logger.info(
            "started the wrapped command",
            metadata: ["command": "\(self.command.joined(separator: " "))", "pid": "\(process.processIdentifier)"]
        )
    }

    /// Ends a program still running: SIGTERM, then SIGKILL after `stopTimeout`.
    private func stopProgram() async {
        guard let process = self.state.withLockedValue({ $0.process }), process.isRunning else { return }
        kill(process.processIdentifier, SIGTERM)
        let deadline = ContinuousClock.now + self.stopTimeout
        while process.isRunning, ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(20))
        }
        if process.isRunning {
            self.logger.warning("the wrapped command did not stop on SIGTERM: killed")
            kill(process.processIdentifier, SIGKILL)
        }
    }

    /// `name` looked up in `PATH` when it has no slash, as a shell would.
    static func resolve(_ name: String) -> String {
        guard !name.contains("/" as Character) else { return name }
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/local/bin:/usr/bin:/bin"
        for directory in path.split(separator: ":") {
            let candidate = "\(directory)/\(name)"
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
        }
        return name
    }
}
