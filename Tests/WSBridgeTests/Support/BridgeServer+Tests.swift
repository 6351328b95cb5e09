import Logging
import NIOCore

@testable import WSBridge

extension BridgeServer {
    /// The one construction of a `BridgeServer` in the tests (the in-memory `PipelineHarness` and the socket
    /// `LoopbackBridge` both come here), so that a change to its initialiser touches one place. The fuzz harness of
    /// `FuzzUpgradePolicy` builds its own: it is compiled into the fuzz package too, which has no `Support/`.
    ///
    /// - Parameter connector: in place of real backend sockets; nil connects real ones, exactly as the bridge does.
    static func forTests(
        configuration: BridgeConfiguration,
        services: Services = .init(),
        targets: TargetTable,
        group: EventLoopGroup,
        connector: BackendConnector? = nil,
        onServerRunning: (@Sendable (SocketAddress) -> Void)? = nil
    ) -> BridgeServer {
        let logger = Logger(label: "bridge")
        guard let connector else {
            return BridgeServer(
                configuration: configuration,
                services: services,
                targets: TargetsStore(fixed: targets),
                group: group,
                logger: logger,
                onServerRunning: onServerRunning
            )
        }
        return BridgeServer(
            configuration: configuration,
            services: services,
            targets: TargetsStore(fixed: targets),
            group: group,
            logger: logger,
            connector: connector,
            onServerRunning: onServerRunning
        )
    }
}
