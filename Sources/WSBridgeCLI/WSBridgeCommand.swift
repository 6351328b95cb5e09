import ArgumentParser
import Foundation
import Logging
import WSBridge

/// The `wsbridge` command: the options (`BridgeOptions`, declared in the library) become a `Configuration`, and
/// `BridgeApplication` runs it. Besides that mapping this file only reads the process's command line and
/// environment, and turns errors into exit statuses.
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

            Every option can also come from the environment: --connect-timeout 3 as WSBRIDGE_CONNECT_TIMEOUT=3, \
            flags as WSBRIDGE_REQUIRE_ORIGIN=1, repeatable options comma-separated (WSBRIDGE_ORIGIN=a,b), the \
            positional arguments as WSBRIDGE_LISTEN and WSBRIDGE_TARGET. The command line wins.

            `wsbridge check FILE` validates a targets file without starting a server; `wsbridge healthcheck` \
            exits 0 when the health endpoint answers 200 (for Docker's HEALTHCHECK).

            Wrap mode, as websockify's: [SOURCE_ADDR:]SOURCE_PORT -- COMMAND ARGS... starts the program, stops it \
            with the bridge, and relays to the target it serves (--unix-target PATH or TARGET_HOST:TARGET_PORT); \
            without a target the program's bind() to SOURCE_PORT is moved to a loopback port where the bridge \
            relays (libwsbridge-rebind.so, websockify's rebind.so). --wrap-mode says what happens when it exits.

            Handshake statuses and close codes: docs/behaviour.md.
            """,
        version: "wsbridge \(WSBridgeVersion.current)"
    )

    @OptionGroup var options: BridgeOptions

    /// Like ArgumentParser's `main`, but options may come from `WSBRIDGE_…` variables, the words after `--` are
    /// wrap mode's command, and a bad command line is reported on one line (help still prints in full).
    static func main() async {
        let arguments = Array(CommandLine.arguments.dropFirst())
        switch arguments.first {
        case "check":
            CheckCommand.main(Array(arguments.dropFirst()))
            return
        case "healthcheck":
            await HealthcheckCommand.main(Array(arguments.dropFirst()))
            return
        default:
            break
        }
        var configuration: Configuration
        do {
            var own = arguments
            var wrapCommand: [String] = []
            if let terminator = own.firstIndex(of: "--") {
                wrapCommand = Array(own[(terminator + 1)...])
                own = Array(own[..<terminator])
            }
            let environment = ProcessInfo.processInfo.environment
            // The option list is derived from the declarations at its first use: only when a variable may add to it.
            let fromEnvironment = environment.keys.contains { $0.hasPrefix("WSBRIDGE_") && $0 != Daemon.childVariable }
            let merged = try EnvironmentArguments.merge(
                arguments: own,
                environment: environment,
                options: fromEnvironment ? BridgeOptions.environmentOptions : []
            )
            let command = try Self.parse(merged)
            configuration = try command.options.configuration(.init(environment: environment, wrapCommand: wrapCommand))
        } catch {
            if Self.exitCode(for: error) == .success { Self.exit(withError: error) }
            let message = Self.message(for: error).split(separator: "\n").first.map(String.init) ?? "invalid arguments"
            Self.fail("\(message) (see wsbridge --help)", status: Self.exitCode(for: error).rawValue)
        }
        if configuration.daemon {
            if !Daemon.isDaemon {
                // Started again in the background; this process ends once the daemon listens (or fails to).
                Daemon.spawnAndWait(
                    arguments: arguments,
                    pidFile: Daemon.absolute(configuration.pidFile),
                    keepStandardInput: false
                )
            }
            configuration = configuration.withAbsolutePaths()
            Daemon.enterDaemon()
        }
        let status: Int32
        do {
            let logFile = try BridgeApplication.bootstrapLogging(configuration.logging)
            status = try await BridgeApplication(configuration: configuration, logFile: logFile).run()
        } catch let error as BridgeApplication.StartupError {
            Self.fail("\(error)", status: 1)
        } catch let error as LogFileError {
            Self.fail("\(error)", status: 1)
        } catch {
            Logger(label: "wsbridge").error("\(error)")
            Self.fail(nil, status: 1)
        }
        Foundation.exit(status)
    }

    /// Ends the process with `status`, after one line on stderr.
    private static func fail(_ message: String?, status: Int32) -> Never {
        if let message { FileHandle.standardError.write(Data("wsbridge: \(message)\n".utf8)) }
        Foundation.exit(status)
    }
}
