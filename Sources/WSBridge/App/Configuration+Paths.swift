extension Configuration {
    /// The same configuration with every path made absolute against the working directory: a daemon leaves it
    /// (`Daemon.enterDaemon` changes to `/`).
    public func withAbsolutePaths() -> Configuration {
        func absolute(_ path: String) -> String { Daemon.absolute(path) ?? path }
        var copy = self
        switch copy.routing {
        case .targetsFiles(let path, let format, let reloads):
            copy.routing = .targetsFiles(path: absolute(path), format: format, reloads: reloads)
        case .jwt(let keys, let targets, let options):
            copy.routing = .jwt(keys: absolute(keys), targets: targets.map(absolute), options: options)
        case .single(.unix(let path)):
            copy.routing = .single(.unix(path: absolute(path)))
        case .single, .redis, .httpAPI, .wrappedProgram:
            break
        }
        if case .unix(let path, let mode) = copy.listener { copy.listener = .unix(path: absolute(path), mode: mode) }
        if var tls = copy.tls {
            tls.settings.certificates = tls.settings.certificates.map {
                .init(certificate: absolute($0.certificate), key: $0.key.map(absolute))
            }
            tls.settings.keyPasswordFile = tls.settings.keyPasswordFile.map(absolute)
            tls.settings.clientCA = tls.settings.clientCA.map(absolute)
            copy.tls = tls
        }
        if case .file(let path) = copy.authentication { copy.authentication = .file(absolute(path)) }
        if let root = copy.web?.root { copy.web?.root = absolute(root) }
        if let prefix = copy.recording?.prefix { copy.recording?.prefix = absolute(prefix) }
        copy.logging.file = copy.logging.file.map(absolute)
        if case .local(let path) = copy.logging.syslog { copy.logging.syslog = .local(path: absolute(path)) }
        copy.pidFile = copy.pidFile.map(absolute)
        return copy
    }
}
