import NIOCore

/// What a token service says about a token.
public enum TokenResolution: Sendable, Equatable {
    case found(BackendAddress)
    case notFound
    /// The service cannot answer now (unreachable, timed out): new sessions get 503 with this reason.
    case unavailable(String)
}

/// A token → backend lookup that may need the network (Redis, an HTTP API). It is asked in `shouldUpgrade` for
/// tokens that the loaded targets do not know, and must answer on `eventLoop` without blocking it.
public protocol TokenResolver: Sendable {
    func resolve(_ token: String, on eventLoop: EventLoop) -> EventLoopFuture<TokenResolution>
    /// A display name for logs and metrics (`redis`).
    var name: String { get }
}
