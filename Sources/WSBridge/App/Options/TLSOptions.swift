import ArgumentParser

/// TLS of the listener (websockify's options) and towards the backends. A group of `BridgeOptions` (`--help` shows it under "TLS").
public struct TLSOptions: ParsableArguments {
    public init() {}

    @Option(
        name: .customLong("cert"),
        help: ArgumentHelp(
            "TLS certificate (PEM, chain allowed; the key may follow in the same file). Enables wss:// and https:// on the same port as ws://. Repeatable: later certificates answer the server names (SNI) they are issued for.",
            valueName: "FILE"
        )
    )
    var certificates: [String] = []

    @Option(
        name: .customLong("key"),
        help: ArgumentHelp("Private key (PEM) of the --cert given in the same position.", valueName: "FILE")
    )
    var keys: [String] = []

    @Option(
        name: .customLong("key-password-file"),
        help: ArgumentHelp(
            "File whose first line is the passphrase of encrypted keys (or set WSBRIDGE_KEY_PASSWORD). Never on the command line.",
            valueName: "FILE"
        )
    )
    var keyPasswordFile: String?

    @Option(
        name: .customLong("key-password"),
        help: ArgumentHelp(
            "Passphrase of encrypted keys, as websockify takes it. Visible to every user in ps: prefer --key-password-file or WSBRIDGE_KEY_PASSWORD (a warning is logged).",
            valueName: "PW"
        )
    )
    var keyPasswordOnCommandLine: String?

    @Flag(name: .customLong("ssl-only"), help: "Refuse plain connections (a plain-text 400 'this port requires TLS').")
    var sslOnly = false

    @Option(
        name: .customLong("ssl-version"),
        help: ArgumentHelp(
            "Oldest TLS version accepted: tlsv1_2 (default), tlsv1_3; tlsv1_1 and tlsv1 are accepted but weak.",
            valueName: "VERSION"
        )
    )
    var sslVersion: String = "tlsv1_2"

    @Option(
        name: .customLong("ssl-ciphers"),
        help: ArgumentHelp("OpenSSL cipher string for TLS 1.2 (TLS 1.3 suites are fixed).", valueName: "LIST")
    )
    var sslCiphers: String?

    @Flag(
        name: .customLong("verify-client"),
        help: "Require a client certificate signed by --cafile (mutual TLS); plain connections are refused."
    )
    var verifyClient = false

    @Option(
        name: .customLong("cafile"),
        help: ArgumentHelp("CA bundle (PEM) for --verify-client; default: the system's CAs.", valueName: "FILE")
    )
    var cafile: String?

    @Flag(
        name: .customLong("ssl-target"),
        help:
            "Connect to backends over TLS (system CAs, certificate and name verified), websockify's option. YAML targets can set 'tls:' each."
    )
    var sslTarget = false
}
