import ArgumentParser
import Foundation
import Logging
import NIOCore
import NIOPosix
import ServiceLifecycle
import WSBridge

/// The `wsbridge` command: translates flags into a `BridgeConfiguration` and runs the services. No behaviour
/// lives here.
@main
struct WSBridgeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "wsbridge",
        abstract: "A WebSocket-to-TCP bridge: browsers connect with ws://, wsbridge relays bytes to TCP backends.",
        discussion: """
            Positional arguments follow websockify: [SOURCE_ADDR:]SOURCE_PORT [TARGET_HOST:TARGET_PORT]. \
            With a target every connection goes to it; with --targets FILE the request's token (query \
            ?token=NAME or a 'token' cookie) picks the backend. The targets file is re-read when it \
            changes and on SIGHUP.

            Handshake statuses and close codes: docs/behaviour.md.
            """
    )

    @Argument(help: "[SOURCE_ADDR:]SOURCE_PORT to listen on (default 6080, all addresses), then optionally TARGET_HOST:TARGET_PORT.")
    var positional: [String] = []

    @Option(name: [.customLong("targets"), .customLong("target-config")], help: ArgumentHelp("Targets file or directory (YAML if .yaml/.yml, else websockify's 'token: host:port'). --target-config is websockify's deprecated alias.", valueName: "FILE"))
    var targets: String?

    @Option(name: .customLong("token-plugin"), help: ArgumentHelp("websockify compatibility: 'TokenFile' (with --token-source FILE).", valueName: "NAME"))
    var tokenPlugin: String?

    @Option(name: .customLong("token-source"), help: ArgumentHelp("websockify compatibility: the token file or directory for --token-plugin TokenFile.", valueName: "FILE"))
    var tokenSource: String?

    @Option(name: .customLong("unix-target"), help: ArgumentHelp("Single-target mode to a Unix socket.", valueName: "PATH"))
    var unixTarget: String?

    @Option(name: .customLong("origin"), help: ArgumentHelp("Allowed Origin, exact or wildcard subdomain (https://*.example.com); repeatable. Default: any origin (a warning is logged).", valueName: "ORIGIN"))
    var origins: [String] = []

    @Flag(name: .customLong("require-origin"), help: "Refuse requests without an Origin header (403).")
    var requireOrigin = false

    @Option(name: .customLong("handshake-timeout"), help: ArgumentHelp("Seconds from accept to a complete request head, then 408.", valueName: "S"))
    var handshakeTimeout: Double = 10

    @Option(name: .customLong("connect-timeout"), help: ArgumentHelp("Backend connect timeout in seconds.", valueName: "S"))
    var connectTimeout: Double = 10

    @Option(name: .customLong("idle-timeout"), help: ArgumentHelp("Close a session (1001) after S seconds without data either way; 0 = off.", valueName: "S"))
    var idleTimeout: Double = 0

    @Option(name: [.customLong("ping-interval"), .customLong("heartbeat")], help: ArgumentHelp("Ping clients every S seconds; 0 = off. --heartbeat is websockify's name.", valueName: "S"))
    var pingInterval: Double = 30

    @Option(name: .customLong("pong-timeout"), help: ArgumentHelp("A client silent for S seconds after a ping is dead: both legs are closed.", valueName: "S"))
    var pongTimeout: Double = 30

    @Option(name: .customLong("max-frame-size"), help: ArgumentHelp("Largest client frame payload in bytes (1009 beyond). Payload is streamed: this is policy, not memory.", valueName: "BYTES"))
    var maxFrameSize: UInt64 = 64 << 20

    @Option(name: .customLong("close-timeout"), help: ArgumentHelp("Seconds allowed for each closing step (peer's Close, flushing to a backend, backend EOF).", valueName: "S"))
    var closeTimeout: Double = 5

    @Option(name: .customLong("shutdown-timeout"), help: ArgumentHelp("Seconds live sessions get after Close 1001 on SIGTERM/SIGINT.", valueName: "S"))
    var shutdownTimeout: Double = 10

    @Option(name: .customLong("read-buffer"), help: ArgumentHelp("Largest read from either socket of a session, in bytes (reads grow to it while full). Each backend read is one WebSocket message.", valueName: "BYTES"))
    var readBuffer: Int = 64 << 10

    @Option(name: .customLong("reads-per-cycle"), help: ArgumentHelp("Reads from one socket per event-loop turn. A session may take in up to N x --read-buffer beyond --write-buffer-high before backpressure stops it.", valueName: "N"))
    var readsPerCycle: Int = 4

    @Option(name: .customLong("write-buffer-high"), help: ArgumentHelp("Bytes queued for a socket above which the other side of the session stops being read (backpressure).", valueName: "BYTES"))
    var writeBufferHigh: Int = 256 << 10

    @Option(name: .customLong("write-buffer-low"), help: ArgumentHelp("Bytes queued for a socket below which reading the other side resumes.", valueName: "BYTES"))
    var writeBufferLow: Int = 64 << 10

    @Option(name: .customLong("threads"), help: ArgumentHelp("Event loop threads; each session lives on one. Default: one per core.", valueName: "N"))
    var threads: Int?

    @Option(name: .customLong("log-level"), help: ArgumentHelp("trace, debug, info, notice, warning, error or critical.", valueName: "LEVEL"))
    var logLevel: String = "info"

    @Flag(name: [.short, .customLong("verbose")], help: "Same as --log-level debug.")
    var verbose = false

    mutating func validate() throws {
        guard self.positional.count <= 2 else {
            throw ValidationError("at most two positional arguments: [SOURCE_ADDR:]SOURCE_PORT [TARGET_HOST:TARGET_PORT]")
        }
        if let plugin = self.tokenPlugin {
            let name = plugin.split(separator: ".").last.map(String.init) ?? plugin
            guard name == "TokenFile" else {
                throw ValidationError("--token-plugin \(plugin) is not supported yet; use TokenFile (or --targets FILE)")
            }
            guard self.tokenSource != nil else { throw ValidationError("--token-plugin TokenFile needs --token-source FILE") }
            guard self.targets == nil else { throw ValidationError("give --targets or --token-plugin, not both") }
        } else if self.tokenSource != nil {
            throw ValidationError("--token-source needs --token-plugin TokenFile")
        }
        let modes = [self.positional.count == 2, self.targetsPath != nil, self.unixTarget != nil].filter { $0 }.count
        guard modes <= 1 else {
            throw ValidationError("choose one of: a positional TARGET_HOST:TARGET_PORT, --targets FILE, --unix-target PATH")
        }
        guard modes == 1 else {
            throw ValidationError("no backend: give TARGET_HOST:TARGET_PORT, --targets FILE or --unix-target PATH")
        }
        for (name, value) in [
            ("--handshake-timeout", self.handshakeTimeout), ("--connect-timeout", self.connectTimeout),
            ("--pong-timeout", self.pongTimeout), ("--close-timeout", self.closeTimeout),
            ("--shutdown-timeout", self.shutdownTimeout),
        ] where !(value > 0) {
            throw ValidationError("\(name) must be a positive number of seconds")
        }
        for (name, value) in [("--idle-timeout", self.idleTimeout), ("--ping-interval", self.pingInterval)] where !(value >= 0) {
            throw ValidationError("\(name) must be 0 (off) or a positive number of seconds")
        }
        guard self.maxFrameSize > 0 else { throw ValidationError("--max-frame-size must be positive") }
        guard self.readBuffer >= 64 else { throw ValidationError("--read-buffer must be at least 64 bytes") }
        guard self.writeBufferLow >= 0, self.writeBufferHigh > self.writeBufferLow else {
            throw ValidationError("--write-buffer-high must be larger than --write-buffer-low (and that at least 0)")
        }
        guard self.readsPerCycle >= 1 else { throw ValidationError("--reads-per-cycle must be at least 1") }
        guard (self.threads ?? 1) >= 1 else { throw ValidationError("--threads must be at least 1") }
        guard Logger.Level(rawValue: self.logLevel.lowercased()) != nil else {
            throw ValidationError("--log-level must be one of trace, debug, info, notice, warning, error, critical")
        }
        if let listen = self.positional.first, case .failure(let error) = ListenAddress.parse(listen) {
            throw ValidationError(error.message)
        }
        if self.positional.count == 2, case .failure(let error) = BackendAddress.parseHostPort(self.positional[1]) {
            throw ValidationError(error.message)
        }
        do {
            _ = try OriginAllowList(self.origins)
        } catch {
            throw ValidationError("--origin: \(error)")
        }
    }

    private var targetsPath: String? { self.targets ?? self.tokenSource }

    /// Like ArgumentParser's `main`, but a bad command line is reported on one line (help still prints in full).
    static func main() async {
        let command: WSBridgeCommand
        do {
            command = try Self.parse()
        } catch {
            if Self.exitCode(for: error) == .success { Self.exit(withError: error) }
            let message = Self.message(for: error).split(separator: "\n").first.map(String.init) ?? "invalid arguments"
            FileHandle.standardError.write(Data("wsbridge: \(message) (see wsbridge --help)\n".utf8))
            Foundation.exit(Self.exitCode(for: error).rawValue)
        }
        do {
            try await command.run()
        } catch {
            Self.exit(withError: error)
        }
    }

    func run() async throws {
        let level = self.verbose ? Logger.Level.debug : Logger.Level(rawValue: self.logLevel.lowercased()) ?? .info
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        let logger = Logger(label: "wsbridge")

        let listen = try self.positional.first.map { try ListenAddress.parse($0).get() } ?? ListenAddress(host: nil, port: 6080)
        let store: TargetsStore
        let origins = self.origins.isEmpty ? nil : try OriginAllowList(self.origins)
        if let path = self.targetsPath {
            do {
                store = try TargetsStore(loader: TargetsLoader(path: path, extraOrigins: self.origins))
            } catch let error as TargetsFileError {
                FileHandle.standardError.write(Data("wsbridge: \(error)\n".utf8))
                throw ExitCode.failure
            }
        } else {
            let backend: BackendAddress
            if let unix = self.unixTarget {
                backend = .unix(path: unix)
            } else {
                backend = try BackendAddress.parseHostPort(self.positional[1]).get()
            }
            store = TargetsStore(fixed: TargetTable(mode: .single(Target(name: "default", backend: backend)), origins: origins))
        }
        if store.current.origins == nil {
            logger.warning("no --origin allow-list: WebSocket connections from any web page are accepted")
        }

        let configuration = BridgeConfiguration(
            host: listen.host,
            port: listen.port,
            requireOrigin: self.requireOrigin,
            handshakeTimeout: Self.seconds(self.handshakeTimeout),
            connectTimeout: Self.seconds(self.connectTimeout),
            idleTimeout: self.idleTimeout > 0 ? Self.seconds(self.idleTimeout) : nil,
            pingInterval: self.pingInterval > 0 ? Self.seconds(self.pingInterval) : nil,
            pongTimeout: Self.seconds(self.pongTimeout),
            maxFrameSize: self.maxFrameSize,
            closeTimeout: Self.seconds(self.closeTimeout),
            shutdownTimeout: Self.seconds(self.shutdownTimeout),
            writeBufferWaterMark: .init(low: self.writeBufferLow, high: self.writeBufferHigh),
            readBufferSize: self.readBuffer,
            maxReadsPerCycle: self.readsPerCycle
        )
        let group = MultiThreadedEventLoopGroup(numberOfThreads: self.threads ?? System.coreCount)
        let server = BridgeServer(configuration: configuration, targets: store, group: group, logger: logger)
        var services: [any Service] = [server]
        if store.loader != nil {
            services.append(TargetsWatcher(store: store, logger: logger))
        }
        let serviceGroup = ServiceGroup(
            configuration: .init(
                services: services.map { .init(service: $0, successTerminationBehavior: .gracefullyShutdownGroup) },
                gracefulShutdownSignals: [.sigterm, .sigint],
                logger: logger
            )
        )
        do {
            try await serviceGroup.run()
        } catch {
            logger.error("\(error)")
            try? await group.shutdownGracefully()
            throw ExitCode.failure
        }
        try await group.shutdownGracefully()
    }

    private static func seconds(_ value: Double) -> TimeAmount {
        .nanoseconds(Int64((value * 1e9).rounded()))
    }
}
