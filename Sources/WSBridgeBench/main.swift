import NIOCore
import NIOPosix

#if canImport(Glibc)
    import Glibc
#endif

// wsbridge-bench: the load generator and TCP backend of Benchmarks/run (SwiftNIO only), and micro-benchmarks.
//
//   wsbridge-bench backend --mode echo|sink|source|hold [--port N] [--chunk BYTES] [--ack-every BYTES]
//   wsbridge-bench client ws://HOST:PORT/PATH | tcp://HOST:PORT --scenario S [options]
//       scenarios: upload, download, echo, handshake, hold, flood
//       options:   --size BYTES  --sessions N  --warmup S  --seconds S  --flood-cap BYTES
//
//   wsbridge-bench micro [--seconds S]        the frame decoder alone, in GB/s
//
// The client prints one JSON object on its last stdout line. `hold` and `flood` first print `held N` or
// `flooded BYTES` and wait for a line on stdin before closing.

func printErr(_ message: String) {
    fputs("wsbridge-bench: \(message)\n", stderr)
}

func usage() -> Never {
    printErr(
        "usage: wsbridge-bench backend --mode echo|sink|source|hold [--port N] [--chunk BYTES] [--ack-every BYTES]"
    )
    printErr(
        "       wsbridge-bench client ws://HOST:PORT/PATH|tcp://HOST:PORT --scenario upload|download|echo|handshake|hold|flood"
    )
    printErr("              [--size BYTES] [--sessions N] [--warmup S] [--seconds S] [--flood-cap BYTES]")
    printErr("       wsbridge-bench micro [--seconds S]")
    exit(64)
}

/// `--name value` pairs after the subcommand (and one optional positional argument).
struct Arguments {
    var positional: [String] = []
    var named: [String: String] = [:]

    init(_ arguments: ArraySlice<String>) {
        var iterator = arguments.makeIterator()
        while let argument = iterator.next() {
            if argument.hasPrefix("--") {
                guard let value = iterator.next() else { usage() }
                self.named[String(argument.dropFirst(2))] = value
            } else {
                self.positional.append(argument)
            }
        }
    }

    func int(_ name: String, _ fallback: Int) -> Int {
        guard let text = self.named[name] else { return fallback }
        guard let value = Self.parseSize(text) else {
            printErr("--\(name): not a number: \(text)")
            exit(64)
        }
        return value
    }

    func double(_ name: String, _ fallback: Double) -> Double {
        guard let text = self.named[name] else { return fallback }
        guard let value = Double(text) else {
            printErr("--\(name): not a number: \(text)")
            exit(64)
        }
        return value
    }

    /// `64`, `16k`, `1m` (binary units).
    static func parseSize(_ text: String) -> Int? {
        let lower = text.lowercased()
        let units: [(String, Int)] = [("k", 1 << 10), ("m", 1 << 20), ("g", 1 << 30)]
        for (suffix, factor) in units where lower.hasSuffix(suffix) {
            return Int(lower.dropLast()).map { $0 * factor }
        }
        return Int(lower)
    }
}

signal(SIGPIPE, SIG_IGN)
let commandLine = CommandLine.arguments
guard commandLine.count >= 2 else { usage() }
let arguments = Arguments(commandLine.dropFirst(2))

switch commandLine[1] {
case "backend":
    var options = BackendOptions()
    guard let mode = BackendMode(rawValue: arguments.named["mode"] ?? "echo") else { usage() }
    options.mode = mode
    options.port = arguments.int("port", 0)
    options.chunk = arguments.int("chunk", 64 << 10)
    options.ackEvery = UInt64(arguments.int("ack-every", 4 << 20))
    options.threads = arguments.int("threads", 1)
    try runBackend(options)

case "client":
    guard let target = arguments.positional.first, let endpoint = Endpoint.parse(target) else { usage() }
    var options = ClientOptions(endpoint: endpoint, scenario: arguments.named["scenario"] ?? "echo")
    options.size = arguments.int("size", options.scenario == "echo" ? 64 : 16 << 10)
    options.sessions = arguments.int("sessions", 1)
    options.warmup = arguments.double("warmup", 1)
    options.seconds = arguments.double("seconds", 3)
    options.floodCap = arguments.int("flood-cap", 32 << 20)
    runClient(options)

case "micro":
    runMicro(seconds: arguments.double("seconds", 0.5))

default:
    usage()
}

func runClient(_ options: ClientOptions) -> Never {
    let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    let loop = group.next()
    let scenario: Scenario
    switch options.scenario {
    case "upload": scenario = UploadScenario(options: options, group: group)
    case "download": scenario = DownloadScenario(options: options, group: group)
    case "echo": scenario = EchoScenario(options: options, group: group)
    case "handshake": scenario = HandshakeScenario(options: options, group: group)
    case "hold": scenario = HoldScenario(options: options, group: group, flood: false)
    case "flood": scenario = HoldScenario(options: options, group: group, flood: true)
    default: usage()
    }
    loop.execute { scenario.start() }

    var fields: [(String, String)] = [("scenario", "\"\(options.scenario)\"")]
    if let hold = scenario as? HoldScenario {
        if hold.flood {
            let deadline = nowNanos() + UInt64(60e9)
            while nowNanos() < deadline {
                usleep(200_000)
                if (try? loop.submit({ hold.floodSettled() }).wait()) == true { break }
            }
            let bytes = (try? loop.submit({ hold.totalSent() }).wait()) ?? 0
            print("flooded \(bytes)")
        } else {
            let timeout = loop.scheduleTask(in: .seconds(120)) { hold.allReady.succeed(()) }
            try? hold.allReady.futureResult.wait()
            timeout.cancel()
            let count = (try? loop.submit({ hold.ready }).wait()) ?? 0
            print("held \(count)")
        }
        fflush(stdout)
        _ = readLine()
        fields += (try? loop.submit({ scenario.finish() }).wait()) ?? []
        try? loop.submit({ hold.release() }).wait()
        usleep(500_000)
    } else {
        usleep(UInt32((options.warmup + options.seconds) * 1e6))
        fields += (try? loop.submit({ scenario.finish() }).wait()) ?? []
    }
    let errors: [String] =
        (try? loop.submit({ () -> [String] in
            switch scenario {
            case let s as UploadScenario: return s.errors
            case let s as DownloadScenario: return s.errors
            case let s as EchoScenario: return s.errors
            case let s as HandshakeScenario: return s.errors
            case let s as HoldScenario: return s.errors
            default: return []
            }
        }).wait()) ?? []
    fields.append(("errors", "\(errors.count)"))
    if let first = errors.first {
        let escaped = String(first.map { $0 == "\"" || $0 == "\\" ? "'" : $0 })
        fields.append(("first_error", "\"\(escaped)\""))
    }
    print("{" + fields.map { "\"\($0.0)\": \($0.1)" }.joined(separator: ", ") + "}")
    fflush(stdout)
    exit(0)
}
