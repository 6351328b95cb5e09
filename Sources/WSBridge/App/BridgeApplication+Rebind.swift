import Foundation
import NIOCore

/// Wrap mode without a target (websockify's rebind): the wrapped program's bind() to the bridge's port is moved to
/// a free loopback port by the preload library (Sources/WSBridgeRebind/rebind.c, built by scripts/build-rebind).
extension BridgeApplication {
    /// Wrap mode without a target: where the wrapped program is moved, and the variables that make it so.
    struct Rebind {
        var port: Int
        var environment: [String: String]
    }

    /// The preload library's file: next to the executable (a SwiftPM build folder), or in `../lib/wsbridge/`
    /// or `../lib/` from it (an installation such as the Docker image's /usr/local/lib/wsbridge/).
    static let rebindLibraryName = "libwsbridge-rebind.so"

    static func rebind(_ configuration: Configuration) throws -> Rebind? {
        guard case .wrappedProgram = configuration.routing else { return nil }
        guard case .tcp(_, let listenPort) = configuration.listener else {
            throw StartupError.wrap("wrap mode without a target needs a TCP SOURCE_PORT")
        }
        let executable = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().deletingLastPathComponent()
        let candidates = ["", "../lib/wsbridge/", "../lib/"].map {
            executable.appendingPathComponent($0 + Self.rebindLibraryName).standardizedFileURL.path
        }
        guard let library = candidates.first(where: { FileManager.default.isReadableFile(atPath: $0) }) else {
            throw StartupError.wrap(
                "wrap mode without a target needs \(Self.rebindLibraryName) (looked in \(candidates.joined(separator: ", "))): build it with scripts/build-rebind, or give the target the program serves (--unix-target PATH or TARGET_HOST:TARGET_PORT)"
            )
        }
        let port: Int
        do {
            port = try Self.freeLoopbackPort()
        } catch {
            throw StartupError.wrap("no free loopback port for the wrapped program: \(error)")
        }
        var preload = library
        if let existing = ProcessInfo.processInfo.environment["LD_PRELOAD"], !existing.isEmpty {
            preload += ":" + existing
        }
        return Rebind(
            port: port,
            environment: ["LD_PRELOAD": preload, "REBIND_PORT_OLD": "\(listenPort)", "REBIND_PORT_NEW": "\(port)"]
        )
    }

    /// A port the kernel gives on 127.0.0.1 now (the socket is closed again, as websockify does: the wrapped
    /// program binds it moments later).
    static func freeLoopbackPort() throws -> Int {
        let descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard descriptor >= 0 else { throw IOError(errnoCode: errno, reason: "socket") }
        defer { close(descriptor) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = UInt32(0x7F00_0001).bigEndian
        address.sin_port = 0
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.bind(descriptor, $0, length) }
        }
        guard bound == 0 else { throw IOError(errnoCode: errno, reason: "bind") }
        let named = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(descriptor, $0, &length) }
        }
        guard named == 0 else { throw IOError(errnoCode: errno, reason: "getsockname") }
        return Int(UInt16(bigEndian: address.sin_port))
    }
}
