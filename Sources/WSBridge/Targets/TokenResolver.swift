import NIOCore

/// What a token service says about a token.
public enum TokenResolution: Sendable, Equatable {
    /// The target to use (a token service may name one of the loaded targets, with its policy).
    case found(Target)
    case notFound
    /// The token is recognisably meant for this service but not acceptable (a signed token that is expired, badly
    /// signed, for another audience…): 403 with this reason.
    case invalid(String)
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
