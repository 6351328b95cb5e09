import Logging
import NIOCore

/// What one accepted connection learns on its way to becoming a session. Only touched on its channel's event loop.
final class ConnectionState: @unchecked Sendable {
    let guardHandler: ConnectionGuard
    var logger: Logger
    var rejection: HTTPRejection?
    var admission: UpgradePolicy.Admission?
    var backend: Result<BackendHandler, BackendConnectError>?
    var sessionInstalled = false
    /// The handshake rate was charged for this request (in `shouldUpgrade`, which NIO skips for some malformed
    /// upgrades: those are charged when they are answered).
    var rateCharged = false
    /// This connection is the readiness self-check.
    var selfCheck = false
    /// Answers requests that are not upgraded; removed when the session is installed.
    var fallbackHandler: HTTPFallbackHandler?
    /// The connection speaks TLS.
    var tls = false
    /// The client's address as far as it is known: the peer, a PROXY header's source, or a trusted
    /// `X-Forwarded-For`/`Forwarded` entry (port 0 then). Nil for Unix-socket clients.
    var clientIP: String?
    var clientPort = 0
    /// Where the client connected to (the listener, or a PROXY header's destination).
    var destinationIP: String?
    var destinationPort = 0
    /// The key of per-client limits: the client's IP, or the socket path.
    var clientKey = "unknown"
    /// What the request proved about the client (authentication, certificate).
    var identity = UpgradePolicy.ClientIdentity()

    /// A PROXY protocol header named the real client (and where it connected to).
    func setProxied(source: String, sourcePort: Int, destination: String, destinationPort: Int) {
        let client = BridgeServer.unmapped(source)
        self.logger[metadataKey: "peer"] = self.logger[metadataKey: "client"]
        self.logger[metadataKey: "client"] = "\(client.contains(":") ? "[\(client)]" : client):\(sourcePort)"
        self.clientIP = client
        self.clientPort = sourcePort
        self.destinationIP = BridgeServer.unmapped(destination)
        self.destinationPort = destinationPort
        self.clientKey = client
    }
    /// The target came from a token service (Redis, a signed token), not from the loaded targets: a reload of the
    /// targets file does not revoke the session.
    var resolvedByService = false

    init(guardHandler: ConnectionGuard, logger: Logger) {
        self.guardHandler = guardHandler
        self.logger = logger
    }
}
