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
    /// The target came from a token service (Redis, a signed token), not from the loaded targets: a reload of the
    /// targets file does not revoke the session.
    var resolvedByService = false

    init(guardHandler: ConnectionGuard, logger: Logger) {
        self.guardHandler = guardHandler
        self.logger = logger
    }
}
