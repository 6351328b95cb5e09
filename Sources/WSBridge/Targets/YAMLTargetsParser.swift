import Yams

/// The YAML targets file:
///
/// ```yaml
/// origins: ["https://app.example.com"]
/// targets:
///   vnc-lab-1: 10.0.0.5:5900            # shorthand: the key is the token
///   console: { unix: /run/console.sock }
///   selftest: { echo: true }              # no backend: every message comes back
///   db:
///     token: 6f1c2a...                    # the key is then only a name
///     backend: db.internal:5432
///     origins: ["https://admin.example.com"]
/// ```
///
/// Unknown keys are errors, every error names `FILE:LINE`.
public enum YAMLTargetsParser {
    public static func parse(_ text: String, file: String) throws -> TargetsFileContents {
        var errors: [TargetsFileError] = []
        let contents = try Self.parse(text, file: file, errors: &errors)
        if let first = errors.first { throw first }
        return contents
    }

    /// Parses the file, collecting the errors of every bad target (for `wsbridge check`); a file that is not
    /// YAML at all, or whose top level is wrong, still throws.
    public static func parse(_ text: String, file: String, errors: inout [TargetsFileError]) throws
        -> TargetsFileContents
    {
        let root: Node?
        do {
            root = try Yams.compose(yaml: text)
        } catch let error as YamlError {
            throw Self.locate(error, file: file)
        }
        var contents = TargetsFileContents()
        guard let root else { return contents }  // an empty file has no targets
        guard case .mapping(let top) = root else {
            throw TargetsFileError(file: file, line: root.mark?.line, message: "expected a mapping with 'targets:'")
        }
        for (keyNode, value) in top {
            let key = keyNode.string ?? ""
            switch key {
            case "origins":
                contents.origins = try Self.stringList(value, file: file, what: "origins")
                contents.originsLine = value.mark?.line
                _ = try Self.origins(contents.origins, file: file, line: value.mark?.line)
            case "targets":
                guard case .mapping(let targets) = value else {
                    if value.null != nil { continue }
                    throw TargetsFileError(
                        file: file,
                        line: value.mark?.line,
                        message: "'targets' must be a mapping of token to target"
                    )
                }
                for (nameNode, spec) in targets {
                    do {
                        contents.entries.append(try Self.target(nameNode, spec, file: file))
                    } catch let error as TargetsFileError {
                        errors.append(error)
                    }
                }
            default:
                throw TargetsFileError(
                    file: file,
                    line: keyNode.mark?.line,
                    message: "unknown key '\(key)' (expected 'origins' or 'targets')"
                )
            }
        }
        return contents
    }

    private static func target(_ nameNode: Node, _ spec: Node, file: String) throws -> TargetsFileContents.Entry {
        let line = nameNode.mark?.line ?? 0
        guard let name = nameNode.string, !name.isEmpty else {
            throw TargetsFileError(file: file, line: line, message: "a target key must be a non-empty string")
        }
        let definedAt = "\(file):\(line)"
        switch spec {
        case .scalar(let scalar):
            let backend = try Self.hostPort(scalar.string, file: file, line: spec.mark?.line ?? line)
            let target = Target(name: Target.redact(name), backend: backend, definedAt: definedAt)
            return .init(token: name, target: target, line: line)
        case .mapping(let mapping):
            var token: String?
            var backend: BackendAddress?
            var origins: OriginAllowList?
            var maxSessions: Int?
            var tls: BackendTLS?
            var tlsLine: Int?
            var proxyProtocol: ProxyProtocolVersion?
            var clientCertNames: [String]?
            var idleTimeout: Double?
            var allowClients: [CIDR]?
            var keepOnRevoke = false
            var compression: CompressionMode?
            for (keyNode, value) in mapping {
                let valueLine = value.mark?.line ?? line
                func invalid(_ message: String) -> TargetsFileError {
                    TargetsFileError(file: file, line: valueLine, message: message)
                }
                switch keyNode.string ?? "" {
                case "backend":
                    guard backend == nil else { throw Self.moreThanOneKind(file: file, line: valueLine) }
                    backend = try Self.hostPort(value.string ?? "", file: file, line: valueLine)
                case "unix":
                    guard backend == nil else { throw Self.moreThanOneKind(file: file, line: valueLine) }
                    guard let path = value.string, path.hasPrefix("/") else {
                        throw TargetsFileError(file: file, line: valueLine, message: "'unix' must be an absolute path")
                    }
                    backend = .unix(path: path)
                case "echo":
                    guard backend == nil else { throw Self.moreThanOneKind(file: file, line: valueLine) }
                    // Only `true`: `echo: false` would read as a target with no backend at all.
                    guard value.bool == true else {
                        throw invalid("'echo' must be true (for a relay target give 'backend' or 'unix' instead)")
                    }
                    backend = .echo
                case "origins":
                    let list = try Self.stringList(value, file: file, what: "origins")
                    origins = try Self.origins(list, file: file, line: valueLine)
                case "max_sessions":
                    guard let limit = value.int, limit > 0 else {
                        throw invalid("'max_sessions' must be a positive integer")
                    }
                    maxSessions = limit
                case "tls":
                    tls = try Self.backendTLS(value, file: file, line: valueLine)
                    tlsLine = keyNode.mark?.line ?? valueLine
                case "proxy_protocol":
                    guard let text = value.string, let version = ProxyProtocolVersion(rawValue: text.lowercased())
                    else {
                        throw invalid("'proxy_protocol' must be v1 or v2")
                    }
                    proxyProtocol = version
                case "client_cert_names":
                    let list = try Self.stringList(value, file: file, what: "client_cert_names")
                    guard !list.isEmpty, !list.contains(where: \.isEmpty) else {
                        throw invalid("'client_cert_names' must list certificate names")
                    }
                    clientCertNames = list
                case "idle_timeout":
                    guard let seconds = value.float, seconds > 0 else {
                        throw invalid("'idle_timeout' must be a positive number of seconds")
                    }
                    idleTimeout = seconds
                case "allow_clients":
                    allowClients = try Self.stringList(value, file: file, what: "allow_clients").map { text in
                        guard let cidr = CIDR(text) else {
                            throw TargetsFileError(
                                file: file,
                                line: valueLine,
                                message:
                                    "invalid network '\(text)' in 'allow_clients' (expected an address or CIDR such as 10.0.0.0/8)"
                            )
                        }
                        return cidr
                    }
                case "compression":
                    // `off` unquoted is YAML 1.1's false.
                    if let mode = value.string.flatMap({ CompressionMode(rawValue: $0.lowercased()) }) {
                        compression = mode
                    } else if value.bool == false {
                        compression = .off
                    } else {
                        throw invalid("'compression' must be 'deflate' or 'off'")
                    }
                case "on_revoke":
                    switch value.string {
                    case "close": keepOnRevoke = false
                    case "keep": keepOnRevoke = true
                    default:
                        throw invalid("'on_revoke' must be 'close' or 'keep'")
                    }
                case "token":
                    guard let value = value.string, !value.isEmpty else {
                        throw invalid("'token' must be a non-empty string")
                    }
                    token = value
                default:
                    throw TargetsFileError(
                        file: file,
                        line: keyNode.mark?.line ?? line,
                        message:
                            "unknown key '\(keyNode.string ?? "")' in target '\(token == nil ? Target.redact(name) : name)' (expected backend, unix, echo, token, origins, max_sessions, idle_timeout, allow_clients, on_revoke, tls, proxy_protocol, client_cert_names, compression)"
                    )
                }
            }
            guard let backend else {
                throw TargetsFileError(
                    file: file,
                    line: line,
                    message: "target needs 'backend: host:port', 'unix: PATH' or 'echo: true'"
                )
            }
            // With an explicit token the key is a plain name and may be logged; otherwise the key is the secret.
            var target = Target(
                name: token == nil ? Target.redact(name) : name,
                backend: backend,
                origins: origins,
                maxSessions: maxSessions,
                idleTimeout: idleTimeout,
                allowClients: allowClients,
                keepOnRevoke: keepOnRevoke,
                definedAt: definedAt,
                tls: tls,
                proxyProtocol: proxyProtocol,
                clientCertNames: clientCertNames
            )
            target.compression = compression
            if tls != nil, case .unix = backend {
                throw TargetsFileError(file: file, line: line, message: "'tls' needs a TCP 'backend', not 'unix'")
            }
            return .init(token: token ?? name, target: target, line: line, tlsLine: tlsLine)
        default:
            throw TargetsFileError(
                file: file,
                line: line,
                message: "a target is 'host:port' or a mapping with 'backend:', 'unix:' or 'echo:'"
            )
        }
    }

    /// `tls: true`, `tls: false`, or `tls: { ca, server_name, insecure, client_cert, client_key }`. Relative paths
    /// are taken from the file's directory.
    private static func backendTLS(_ node: Node, file: String, line: Int) throws -> BackendTLS? {
        if let flag = node.bool { return flag ? BackendTLS() : nil }
        guard case .mapping(let mapping) = node else {
            throw TargetsFileError(
                file: file,
                line: line,
                message: "'tls' must be true, false or a mapping (ca, server_name, insecure, client_cert, client_key)"
            )
        }
        var tls = BackendTLS()
        for (keyNode, value) in mapping {
            let valueLine = value.mark?.line ?? line
            func invalid(_ message: String) -> TargetsFileError {
                TargetsFileError(file: file, line: valueLine, message: message)
            }
            let key = keyNode.string ?? ""
            func string() throws -> String {
                guard let text = value.string, !text.isEmpty, value.scalar != nil else {
                    throw invalid("'tls.\(key)' must be a non-empty string")
                }
                return text
            }
            switch key {
            case "ca": tls.ca = Self.path(try string(), relativeTo: file)
            case "server_name": tls.serverName = try string()
            case "insecure":
                guard let flag = value.bool else {
                    throw TargetsFileError(file: file, line: valueLine, message: "'tls.insecure' must be true or false")
                }
                tls.insecure = flag
            case "client_cert": tls.clientCertificate = Self.path(try string(), relativeTo: file)
            case "client_key": tls.clientKey = Self.path(try string(), relativeTo: file)
            default:
                throw TargetsFileError(
                    file: file,
                    line: keyNode.mark?.line ?? line,
                    message:
                        "unknown key '\(key)' in 'tls' (expected ca, server_name, insecure, client_cert, client_key)"
                )
            }
        }
        if tls.clientKey != nil && tls.clientCertificate == nil {
            throw TargetsFileError(file: file, line: line, message: "'tls.client_key' needs 'tls.client_cert'")
        }
        return tls
    }

    static func path(_ path: String, relativeTo file: String) -> String {
        guard !path.hasPrefix("/"), let slash = file.lastIndex(of: "/") else { return path }
        return String(file[...slash]) + path
    }

    private static func moreThanOneKind(file: String, line: Int) -> TargetsFileError {
        TargetsFileError(file: file, line: line, message: "give one of 'backend', 'unix' or 'echo', not several")
    }

    private static func hostPort(_ text: String, file: String, line: Int) throws -> BackendAddress {
        switch BackendAddress.parseHostPort(text) {
        case .success(let address): return address
        case .failure(let error): throw TargetsFileError(file: file, line: line, message: error.message)
        }
    }

    private static func stringList(_ node: Node, file: String, what: String) throws -> [String] {
        if let single = node.scalar?.string { return [single] }
        guard case .sequence(let sequence) = node else {
            throw TargetsFileError(file: file, line: node.mark?.line, message: "'\(what)' must be a list of strings")
        }
        return try sequence.map { item in
            guard let string = item.scalar?.string else {
                throw TargetsFileError(
                    file: file,
                    line: item.mark?.line,
                    message: "'\(what)' must be a list of strings"
                )
            }
            return string
        }
    }

    static func origins(_ list: [String], file: String, line: Int?) throws -> OriginAllowList {
        do {
            return try OriginAllowList(list)
        } catch let error as OriginAllowList.OriginError {
            throw TargetsFileError(file: file, line: line, message: error.description)
        }
    }

    private static func locate(_ error: YamlError, file: String) -> TargetsFileError {
        switch error {
        case .scanner(_, let problem, let mark, _), .parser(_, let problem, let mark, _),
            .composer(_, let problem, let mark, _):
            return TargetsFileError(file: file, line: mark.line, message: "invalid YAML: \(problem)")
        case .duplicatedKeysInMapping(let duplicates, let context):
            return TargetsFileError(
                file: file,
                line: context.mark.line,
                message: "duplicate key \(duplicates.map(Target.redact).joined(separator: ", "))"
            )
        case .reader(let problem, _, _, _):
            return TargetsFileError(file: file, line: nil, message: "invalid YAML: \(problem)")
        default:
            return TargetsFileError(file: file, line: nil, message: "invalid YAML: \(error)")
        }
    }
}
