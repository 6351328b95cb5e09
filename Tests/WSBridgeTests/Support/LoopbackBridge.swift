import Logging
import NIOCore
import ServiceLifecycle

@testable import WSBridge

/// A real bridge listening on loopback (port 0) for the duration of a test: the one start-up of the loopback tests.
struct LoopbackBridge: Sendable {
    let port: Int
    let server: BridgeServer
    private let group: ServiceGroup

    /// Starts the graceful shutdown now (Close 1001 to every session); `run` returns once it is complete.
    func shutdown() async { await self.group.triggerGracefulShutdown() }

    /// Runs a bridge with `configuration` (its listener moved to 127.0.0.1 port 0) over `targets` while `body` runs,
    /// then shuts it down gracefully and waits until it has stopped. Returns the stopped server.
    @discardableResult
    static func run(
        configuration: BridgeConfiguration = BridgeConfiguration(),
        services: BridgeServer.Services = .init(),
        targets: TargetTable,
        group: EventLoopGroup,
        _ body: @escaping @Sendable (LoopbackBridge) async throws -> Void
    ) async throws -> BridgeServer {
        var configuration = configuration
        configuration.host = "127.0.0.1"
        configuration.port = 0
        let (ports, portContinuation) = AsyncStream<Int>.makeStream()
        let server = BridgeServer.forTests(
            configuration: configuration,
            services: services,
            targets: targets,
            group: group,
            onServerRunning: { portContinuation.yield($0.port!) }
        )
        let serviceGroup = ServiceGroup(services: [server], logger: Logger(label: "group"))
        try await withThrowingTaskGroup(of: Void.self) { tasks in
            tasks.addTask { try await serviceGroup.run() }
            var iterator = ports.makeAsyncIterator()
            guard let port = await iterator.next() else { return }
            let bridge = LoopbackBridge(port: port, server: server, group: serviceGroup)
            do {
                try await body(bridge)
            } catch {
                await serviceGroup.triggerGracefulShutdown()
                throw error
            }
            await serviceGroup.triggerGracefulShutdown()
            try await tasks.waitForAll()
        }
        return server
    }
}
