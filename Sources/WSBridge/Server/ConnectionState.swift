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
    /// This connection is the readiness self-check.
    var selfCheck = false
    /// Answers requests that are not upgraded; removed when the session is installed.
    var fallbackHandler: HTTPFallbackHandler?

    init(guardHandler: ConnectionGuard, logger: Logger) {
        self.guardHandler = guardHandler
        self.logger = logger
    }
}
