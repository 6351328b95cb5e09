import ArgumentParser
import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import WSBridge

/// `wsbridge healthcheck`: GETs a health endpoint and exits 0 on 200, 1 otherwise — for a container
/// `HEALTHCHECK`, where no curl is installed.
struct HealthcheckCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "wsbridge healthcheck",
        abstract: "Exit 0 when a wsbridge health endpoint answers 200 (for Docker's HEALTHCHECK)."
    )

    @Option(help: ArgumentHelp("The endpoint, on the metrics listener by default.", valueName: "ADDR:PORT"))
    var address: String = "127.0.0.1:9680"

    @Option(help: ArgumentHelp("/readyz (the upgrade path works) or /healthz (the process serves).", valueName: "PATH"))
    var path: String = "/readyz"

    @Option(help: ArgumentHelp("Seconds to wait for the answer.", valueName: "S"))
    var timeout: Double = 3

    func run() async throws {
        let listen = try ListenAddress.parse(self.address).get()
        let group = MultiThreadedEventLoopGroup.singleton
        let status = try? await HealthProbe.get(
            host: listen.host ?? "127.0.0.1",
            port: listen.port,
            path: self.path,
            timeout: .nanoseconds(Int64(self.timeout * 1e9)),
            group: group
        )
        guard let status else {
            print("unhealthy: no answer from \(self.address)\(self.path)")
            throw ExitCode.failure
        }
        print("\(status == 200 ? "healthy" : "unhealthy"): \(self.address)\(self.path) answered \(status)")
        if status != 200 { throw ExitCode.failure }
    }
}

/// A one-request HTTP/1.1 client: the status code of `GET path`.
enum HealthProbe {
    static func get(host: String, port: Int, path: String, timeout: TimeAmount, group: EventLoopGroup) async throws
        -> UInt
    {
        let promise = group.next().makePromise(of: UInt.self)
        let channel: Channel
        do {
            channel = try await ClientBootstrap(group: group)
                .connectTimeout(timeout)
                .channelInitializer { channel in
                    channel.pipeline.addHTTPClientHandlers().flatMap {
                        channel.pipeline.addHandler(StatusHandler(promise: promise))
                    }
                }
                .connect(host: host, port: port).get()
        } catch {
            // No channel, so nothing else completes the promise (NIO reports a leaked promise otherwise).
            promise.fail(error)
            throw error
        }
        let deadline = channel.eventLoop.scheduleTask(in: timeout) {
            promise.fail(ChannelError.connectTimeout(timeout))
        }
        var headers = HTTPHeaders()
        headers.add(name: "Host", value: host)
        channel.write(
            HTTPClientRequestPart.head(.init(version: .http1_1, method: .GET, uri: path, headers: headers)),
            promise: nil
        )
        channel.writeAndFlush(HTTPClientRequestPart.end(nil), promise: nil)
        defer {
            deadline.cancel()
            channel.close(promise: nil)
        }
        return try await promise.futureResult.get()
    }

    final class StatusHandler: ChannelInboundHandler, Sendable {
        typealias InboundIn = HTTPClientResponsePart
        let promise: EventLoopPromise<UInt>
        init(promise: EventLoopPromise<UInt>) { self.promise = promise }
        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            if case .head(let head) = self.unwrapInboundIn(data) { self.promise.succeed(head.status.code) }
        }
        func channelInactive(context: ChannelHandlerContext) { self.promise.fail(ChannelError.eof) }
        func errorCaught(context: ChannelHandlerContext, error: Error) { self.promise.fail(error) }
    }
}
