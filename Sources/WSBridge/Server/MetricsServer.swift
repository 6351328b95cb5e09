import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import ServiceLifecycle

/// A small HTTP listener of its own for `/metrics`, `/healthz` and `/readyz`, by default on loopback so that
/// metrics are not public by accident.
public final class MetricsServer: Service, Sendable {
    private let host: String
    private let port: Int
    private let endpoints: HTTPEndpoints
    private let group: EventLoopGroup
    private let logger: Logger
    private let onServerRunning: (@Sendable (SocketAddress) -> Void)?
    /// When binding fails: false stops the process (an address the operator chose), true logs a warning and
    /// runs without the listener (the default address, which a second instance on the same host already holds).
    private let optional: Bool
    /// Time from accept to the request head (then the socket is closed), and the answer's stall deadline.
    private let headTimeout: TimeAmount
    private let stallTimeout: TimeAmount
    /// Connections open at once (each lives at most `headTimeout` plus the answer's stall deadline); one over the
    /// cap is closed as soon as it is accepted, before any byte of it is read.
    private let connections: HandshakeLimiter

    /// The default of `maxConnections`: scrapers and probes use one connection per request, so this is far
    /// above what monitoring needs and still a small bound on descriptors.
    public static let defaultMaxConnections = 128

    public init(
        host: String,
        port: Int,
        metrics: BridgeMetrics,
        readiness: Readiness,
        group: EventLoopGroup,
        logger: Logger,
        optional: Bool = false,
        headTimeout: TimeAmount = .seconds(10),
        stallTimeout: TimeAmount = .seconds(15),
        maxConnections: Int = MetricsServer.defaultMaxConnections,
        onServerRunning: (@Sendable (SocketAddress) -> Void)? = nil
    ) {
        self.optional = optional
        self.headTimeout = headTimeout
        self.stallTimeout = stallTimeout
        self.connections = HandshakeLimiter(limits: .init(total: max(1, maxConnections), perClient: nil))
        self.host = host
        self.port = port
        self.endpoints = HTTPEndpoints(readiness: readiness, metrics: metrics)
        self.group = group
        self.logger = logger
        self.onServerRunning = onServerRunning
    }

    public func run() async throws {
        let endpoints = self.endpoints
        let bound: Channel
        do {
            bound = try await self.bind(endpoints)
        } catch  where self.optional {
            self.logger.warning(
                "metrics listener not started: \(self.host):\(self.port): \(error) (use --metrics-listen to choose another)"
            )
            try? await gracefulShutdown()
            return
        }
        let channel = bound
        if let address = channel.localAddress {
            self.logger.info("metrics and health on \(BridgeServer.describe(address)) (/metrics, /healthz, /readyz)")
            self.onServerRunning?(address)
        }
        await withTaskCancellationHandler {
            await withGracefulShutdownHandler {
                try? await channel.closeFuture.get()
            } onGracefulShutdown: {
                channel.close(promise: nil)
            }
        } onCancel: {
            channel.close(promise: nil)
        }
    }

    private func bind(_ endpoints: HTTPEndpoints) async throws -> Channel {
        let headTimeout = self.headTimeout
        let stallTimeout = self.stallTimeout
        let connections = self.connections
        return try await ServerBootstrap(group: self.group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    guard let slot = connections.acquire(client: nil) else { throw ConnectionCapReached() }
                    channel.closeFuture.whenComplete { _ in connections.release(slot) }
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline(withErrorHandling: true)
                    try channel.pipeline.syncOperations.addHandler(
                        EndpointsHandler(endpoints: endpoints, headTimeout: headTimeout, stallTimeout: stallTimeout)
                    )
                }
            }
            .bind(host: self.host, port: self.port).get()
    }

    /// Refuses a connection over `maxConnections` (the bootstrap closes the child channel).
    struct ConnectionCapReached: Error {}

    /// Connections open on this listener now (for tests).
    var openConnections: Int { self.connections.inProgress }
}
