import ArgumentParser
import Foundation
import Logging
import NIOCore

/// The second half of the mapping of BridgeOptions+Configuration.swift: TLS, HTTP answers and recording, the
/// process (logging, daemon, wrap mode), and the checks of numbers of seconds.
extension BridgeOptions {
    // MARK: TLS

    func mapTLS(_ configuration: inout Configuration, _ context: Context) throws {
        var certificates = self.tls.certificates
        let isDefault = certificates.isEmpty && context.fileExists(Self.defaultCertificate)
        if isDefault { certificates = [Self.defaultCertificate] }
        guard ServerTLSSettings.parseVersion(self.tls.sslVersion) != nil else {
            throw ValidationError("--ssl-version must be tlsv1_2 (default), tlsv1_3, tlsv1_1 or tlsv1")
        }
        guard !certificates.isEmpty else {
            for (name, given) in [
                ("--key", !self.tls.keys.isEmpty), ("--ssl-only", self.tls.sslOnly),
                ("--verify-client", self.tls.verifyClient),
                ("--cafile", self.tls.cafile != nil), ("--key-password-file", self.tls.keyPasswordFile != nil),
                ("--key-password", self.tls.keyPasswordOnCommandLine != nil),
                ("--ssl-ciphers", self.tls.sslCiphers != nil),
            ] where given {
                throw ValidationError(
                    "\(name) needs --cert FILE (or \(Self.defaultCertificate) in the working directory, as websockify)"
                )
            }
            return
        }
        guard self.tls.keys.isEmpty || self.tls.keys.count == certificates.count else {
            throw ValidationError("give one --key per --cert (or none: keys inside the certificate files)")
        }
        if self.tls.cafile != nil && !self.tls.verifyClient { throw ValidationError("--cafile is for --verify-client") }
        let pairs = certificates.enumerated().map { index, certificate in
            ServerTLSSettings.CertificatePair(
                certificate: certificate,
                key: self.tls.keys.isEmpty ? nil : self.tls.keys[index]
            )
        }
        let environmentPassword = context.environment["WSBRIDGE_KEY_PASSWORD"].map { Array($0.utf8) }
        var tls = Configuration.TLS(
            settings: ServerTLSSettings(
                certificates: pairs,
                keyPassword: environmentPassword ?? self.tls.keyPasswordOnCommandLine.map { Array($0.utf8) },
                keyPasswordFile: self.tls.keyPasswordFile,
                minimumVersion: ServerTLSSettings.parseVersion(self.tls.sslVersion)!,
                ciphers: self.tls.sslCiphers,
                sslOnly: self.tls.sslOnly,
                verifyClient: self.tls.verifyClient,
                clientCA: self.tls.cafile,
                shutdownTimeout: configuration.timeouts.close
            )
        )
        tls.isDefaultCertificate = isDefault
        configuration.tls = tls
        if self.tls.keyPasswordOnCommandLine != nil {
            configuration.notices.append(
                .init(
                    .warning,
                    "--key-password is visible to every user of this machine (ps, /proc): prefer --key-password-file FILE or WSBRIDGE_KEY_PASSWORD"
                )
            )
        }
    }

    // MARK: HTTP, recording, metrics

    func mapHTTPAndRecording(_ configuration: inout Configuration) throws {
        if let root = self.serving.web {
            var web = Configuration.Web(root: root)
            web.listDirectories = self.serving.webListing && !self.serving.fileOnly
            web.useAccessRules = self.serving.webAuth
            configuration.web = web
        }
        guard self.serving.recordLimit > 0 else { throw ValidationError("--record-limit must be positive") }
        if let prefix = self.serving.record {
            var recording = Configuration.Recording(prefix: prefix)
            recording.limit = self.serving.recordLimit
            configuration.recording = recording
        }
        if self.serving.metricsListen == "off" {
            configuration.metrics.listen = nil
        } else {
            switch ListenAddress.parse(self.serving.metricsListen) {
            case .success(let address):
                configuration.metrics.listen = address
                configuration.metrics.optional = address == Configuration.Metrics.defaultListen
            case .failure(let error): throw ValidationError("--metrics-listen: \(error.message)")
            }
        }
        configuration.metrics.onMainPort = self.serving.metricsOnMainPort
    }

    // MARK: The process: logging, daemon, wrap mode

    func mapProcess(_ configuration: inout Configuration, _ context: Context) throws {
        guard let format = Configuration.Logging.Format(rawValue: self.logging.logFormat) else {
            throw ValidationError("--log-format must be text or json")
        }
        guard let level = Logger.Level(rawValue: self.logging.logLevel.lowercased()) else {
            throw ValidationError("--log-level must be one of trace, debug, info, notice, warning, error, critical")
        }
        configuration.logging.format = format
        configuration.logging.level = self.logging.verbose ? .debug : level
        configuration.logging.file = self.logging.logFile
        if self.logging.legacySyslog && self.logging.syslog == nil {
            throw ValidationError("--legacy-syslog needs --syslog SERVER")
        }
        if let syslog = self.logging.syslog {
            switch SyslogWriter.Destination.parse(syslog) {
            case .success(let destination): configuration.logging.syslog = destination
            case .failure(let error): throw ValidationError("\(error)")
            }
        }
        configuration.logging.legacySyslog = self.logging.legacySyslog
        if self.lifetime.daemon && self.serving.inetd {
            throw ValidationError("give --daemon or --inetd, not both (inetd starts the server itself)")
        }
        configuration.daemon = self.lifetime.daemon
        configuration.logging.daemonFacility = self.lifetime.daemon
        configuration.pidFile = self.lifetime.pidFile
        guard let wrapMode = WrappedCommand.Mode(rawValue: self.lifetime.wrapMode) else {
            throw ValidationError("--wrap-mode must be exit, ignore or respawn")
        }
        if !context.wrapCommand.isEmpty {
            var wrap = Configuration.Wrap(command: context.wrapCommand)
            wrap.mode = wrapMode
            configuration.wrap = wrap
        }
        if self.logging.libserver {
            configuration.notices.append(
                .init(.warning, "--libserver is ignored: wsbridge has one server engine, with every option")
            )
        }
        if self.logging.traffic {
            configuration.notices.append(
                .init(
                    .info,
                    "--traffic: per-frame traffic characters are not printed; each session's 'session closed' line has the bytes each way"
                )
            )
        }
    }

    // MARK: Seconds

    /// A number of seconds that must be positive.
    static func positiveSeconds(_ value: Double, _ name: String) throws -> TimeAmount {
        guard value > 0, value.isFinite else { throw ValidationError("\(name) must be a positive number of seconds") }
        return .nanoseconds(Int64((value * 1e9).rounded()))
    }

    /// A number of seconds where 0 means off.
    static func seconds(_ value: Double, _ name: String) throws -> TimeAmount {
        guard value >= 0, value.isFinite else {
            throw ValidationError("\(name) must be 0 (off) or a positive number of seconds")
        }
        return .nanoseconds(Int64((value * 1e9).rounded()))
    }

    static func optionalSeconds(_ value: Double, _ name: String) throws -> TimeAmount? {
        let amount = try Self.seconds(value, name)
        return amount > .zero ? amount : nil
    }
}
