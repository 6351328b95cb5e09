/// Lets every command-line option come from the environment, for containers: `--connect-timeout 3` may be given
/// as `WSBRIDGE_CONNECT_TIMEOUT=3`. The command line wins over the environment.
public enum EnvironmentArguments {
    public enum Kind: Sendable {
        /// `--name VALUE`.
        case option
        /// `--name VALUE`, repeatable: the variable holds a comma-separated list.
        case repeatable
        /// `--name`: the variable is 1/true/yes/on or 0/false/no/off.
        case flag
    }

    /// The variable that sets `--long-name`: `WSBRIDGE_LONG_NAME`.
    public static func variable(for longName: String) -> String {
        "WSBRIDGE_" + longName.uppercased().replacingOccurrences(of: "-", with: "_")
    }

    /// `arguments` (without the program name) with options added from `environment` for every known option the
    /// command line does not already give. `WSBRIDGE_LISTEN` and `WSBRIDGE_TARGET` supply the positional
    /// arguments when the command line has none.
    public static func merge(
        arguments: [String],
        environment: [String: String],
        options: [(String, Kind)]
    ) throws -> [String] {
        var added: [String] = []
        // Everything after `--` is a wrapped command's own (wrap mode): never taken for options here.
        let own = arguments.prefix(while: { $0 != "--" })
        for (name, kind) in options {
            let variable = Self.variable(for: name)
            guard let value = environment[variable], !value.isEmpty else { continue }
            let flag = "--" + name
            if own.contains(where: { $0 == flag || $0.hasPrefix(flag + "=") }) { continue }
            switch kind {
            case .option:
                added += [flag, value]
            case .repeatable:
                for item in value.split(separator: ",") where !item.trimmingWhitespace().isEmpty {
                    added += [flag, item.trimmingWhitespace()]
                }
            case .flag:
                switch value.lowercased() {
                case "1", "true", "yes", "on": added.append(flag)
                case "0", "false", "no", "off": break
                default:
                    throw EnvironmentError(message: "\(variable)=\(value): expected 1/true/yes/on or 0/false/no/off")
                }
            }
        }
        let hasPositional = Self.hasPositional(arguments, options: options)
        if !hasPositional {
            if let listen = environment["WSBRIDGE_LISTEN"], !listen.isEmpty { added.append(listen) }
            if let target = environment["WSBRIDGE_TARGET"], !target.isEmpty {
                if environment["WSBRIDGE_LISTEN"]?.isEmpty ?? true {
                    throw EnvironmentError(message: "WSBRIDGE_TARGET needs WSBRIDGE_LISTEN (the port comes first)")
                }
                added.append(target)
            }
        }
        return added + arguments
    }

    public struct EnvironmentError: Error, CustomStringConvertible {
        public var message: String
        public var description: String { self.message }
    }

    /// Whether the command line has a positional argument (a word that is neither an option nor its value).
    private static func hasPositional(_ arguments: [String], options: [(String, Kind)]) -> Bool {
        let takesValue = Set(options.filter { $0.1 != .flag }.map { "--" + $0.0 })
        var index = 0
        while index < arguments.count {
            let word = arguments[index]
            if word == "--" { return false }  // a wrapped command follows, not a positional argument
            if word.hasPrefix("-") {
                index += takesValue.contains(word) ? 2 : 1
                continue
            }
            return true
        }
        return false
    }
}
