import ArgumentParser
import Foundation
import WSBridge

/// `wsbridge check FILE`: validates a targets source without starting a server.
struct CheckCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "wsbridge check",
        abstract: "Validate a targets file or directory: print each target, or every error as FILE:LINE: reason.",
        discussion: "Exit status 0 when the source is valid, 1 when it is not. Tokens are printed redacted."
    )

    @Argument(help: "The targets file or directory.")
    var path: String

    @Option(
        name: .customLong("token-plugin"),
        help: ArgumentHelp("Read PATH as this websockify token plugin's data (default: TokenFile).", valueName: "NAME")
    )
    var tokenPlugin: String?

    func run() throws {
        var format = TargetsLoader.Format.targetsFiles
        if let plugin = self.tokenPlugin {
            guard let known = BridgeOptions.fileFormat(ofTokenPlugin: plugin) else {
                throw ValidationError("--token-plugin \(plugin) is not supported")
            }
            format = known
        }
        let (table, errors) = TargetsLoader(path: self.path, format: format).check()
        guard let table, errors.isEmpty else {
            for error in errors {
                FileHandle.standardError.write(Data("\(error)\n".utf8))
            }
            FileHandle.standardError.write(
                Data("\(self.path): \(errors.count) error\(errors.count == 1 ? "" : "s")\n".utf8)
            )
            throw ExitCode.failure
        }
        if let origins = table.origins {
            print("origins: \(origins.entries.joined(separator: ", "))")
        }
        guard case .tokens(let map) = table.mode else { return }
        for (token, target) in map.sorted(by: { ($0.value.definedAt ?? "") < ($1.value.definedAt ?? "") }) {
            var policy: [String] = []
            if let origins = target.origins { policy.append("origins=\(origins.entries.joined(separator: ","))") }
            if let max = target.maxSessions { policy.append("max_sessions=\(max)") }
            if let idle = target.idleTimeout { policy.append("idle_timeout=\(idle)s") }
            if let clients = target.allowClients {
                policy.append("allow_clients=\(clients.map(\.description).joined(separator: ","))")
            }
            if target.keepOnRevoke { policy.append("on_revoke=keep") }
            if let tls = target.tls {
                var parts = ["tls"]
                if let ca = tls.ca { parts.append("ca=\(ca)") }
                if let name = tls.serverName { parts.append("server_name=\(name)") }
                if tls.insecure { parts.append("insecure") }
                if tls.clientCertificate != nil { parts.append("client_cert") }
                policy.append(parts.joined(separator: ","))
            }
            if let version = target.proxyProtocol { policy.append("proxy_protocol=\(version.rawValue)") }
            if let names = target.clientCertNames { policy.append("client_cert_names=\(names.joined(separator: ","))") }
            let label =
                Target.redact(token) == target.name ? target.name : "\(target.name) (token \(Target.redact(token)))"
            print(
                "\(label) -> \(TokenRedaction.backend(target))\(policy.isEmpty ? "" : "  " + policy.joined(separator: " "))  [\(TokenRedaction.location(target) ?? "")]"
            )
        }
        print("\(self.path): \(map.count) target\(map.count == 1 ? "" : "s"), valid")
    }
}
