import ArgumentParser
import Foundation

extension BridgeOptions {
    /// Every option of the declarations with whether it takes a value, for `WSBRIDGE_…` variables: read from
    /// ArgumentParser's own description of the declarations (`_dumpHelp`, the JSON behind
    /// `--experimental-dump-help`), so that an option is declared once. `--help` and `--version` are not taken
    /// from the environment.
    public static let environmentOptions: [(String, EnvironmentArguments.Kind)] = {
        struct Dump: Decodable {
            struct Command: Decodable { var arguments: [Argument]? }
            struct Argument: Decodable {
                struct Name: Decodable {
                    var kind: String
                    var name: String
                }
                var kind: String
                var isRepeating: Bool?
                var names: [Name]?
            }
            var command: Command
        }
        guard let dump = try? JSONDecoder().decode(Dump.self, from: Data(Self._dumpHelp().utf8)) else {
            preconditionFailure("ArgumentParser's description of BridgeOptions cannot be read")
        }
        return (dump.command.arguments ?? []).compactMap { argument in
            guard argument.kind != "positional",
                let long = argument.names?.first(where: { $0.kind == "long" })?.name,
                long != "help", long != "version"
            else { return nil }
            if argument.kind == "flag" { return (long, .flag) }
            return (long, argument.isRepeating == true ? .repeatable : .option)
        }
    }()
}
