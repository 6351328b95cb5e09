import NIOCore
import NIOHTTP1

/// Who may have which target: the admission of one upgrade request once its form and rate were checked. In order:
/// HTTP Basic authentication (when configured), the policy's decision against the targets table in force, a re-read
/// of changed targets files for a token the table does not know, then the token service for a token still unknown.
///
/// Each step may wait (a password hash off the event loop, the files, the network); none blocks the event loop and
/// the answer completes on it. One per server, shared by every connection; the session limits are applied by the
/// handshake owner after the decision.
struct HandshakeAdmission: Sendable {
    /// What admission decided, and how.
    struct Outcome: Sendable {
        var decision: UpgradePolicy.Decision
        /// The user HTTP Basic authentication admitted, for the session's log lines.
        var user: String?
    }

    let policy: UpgradePolicy
    let targets: TargetsStore
    let authenticator: BasicAuthenticator?
    let rereader: TargetsRereader?
    let resolver: (any TokenResolver)?

    /// One request on its way through admission.
    private struct Request {
        var head: HTTPRequestHead
        var identity: UpgradePolicy.ClientIdentity
        var client: String?
        var user: String?
    }

    /// Decides `head`, which passed `UpgradePolicy.strictHeadCheck` and `validate`, for a client with `identity` (its
    /// certificate names; authentication is added here).
    func decide(
        _ head: HTTPRequestHead,
        identity: UpgradePolicy.ClientIdentity,
        client: String?,
        on eventLoop: EventLoop
    ) -> EventLoopFuture<Outcome> {
        var request = Request(head: head, identity: identity, client: client)
        guard let authenticator = self.authenticator else { return self.decideInTable(request, on: eventLoop) }
        return authenticator.check(head.headers, on: eventLoop).recover { _ in .invalid }.flatMap { outcome in
            request.identity.authentication = outcome
            if case .authenticated(let name) = outcome { request.user = name }
            return self.decideInTable(request, on: eventLoop)
        }
    }

    /// The policy's decision on the table in force, or, for a token it does not know, on the files as they are now
    /// (a token written just before the page connects), read off the event loop.
    private func decideInTable(_ request: Request, on eventLoop: EventLoop) -> EventLoopFuture<Outcome> {
        let table = self.targets.current
        let decision = self.decide(request, in: table)
        guard let rereader = self.rereader, Self.unknownToken(decision) != nil else {
            return self.askService(decision, table: table, request, on: eventLoop)
        }
        return rereader.tableForUnknownToken(on: eventLoop).flatMap { fresh in
            self.askService(self.decide(request, in: fresh), table: fresh, request, on: eventLoop)
        }
    }

    /// `decision`, or, for a token `table` does not know, what the token service says of it.
    private func askService(
        _ decision: UpgradePolicy.Decision,
        table: TargetTable,
        _ request: Request,
        on eventLoop: EventLoop
    ) -> EventLoopFuture<Outcome> {
        let user = request.user
        guard let resolver = self.resolver, let rejection = Self.unknownToken(decision),
            let token = self.policy.token(in: request.head)
        else {
            return eventLoop.makeSucceededFuture(Outcome(decision: decision, user: user))
        }
        return resolver.resolve(token, on: eventLoop).map { resolution in
            switch resolution {
            case .found(let target):
                // The found target is decided as a table of one, with the origins of the table in force.
                let resolved = TargetTable(mode: .tokens([token: target]), origins: table.origins)
                var decision = self.decide(request, in: resolved)
                if case .accept(var admission) = decision {
                    admission.resolvedByService = true
                    decision = .accept(admission)
                }
                return Outcome(decision: decision, user: user)
            case .notFound:
                return Outcome(decision: .reject(rejection), user: user)
            case .invalid(let reason):
                return Outcome(decision: .reject(HTTPRejection(.invalidToken, .forbidden, reason)), user: user)
            case .unavailable(let reason):
                return Outcome(decision: .reject(Self.serviceUnavailable(reason)), user: user)
            }
        }.recover { error in
            // Token services answer their failures as `.unavailable`; anything else is theirs too.
            Outcome(decision: .reject(Self.serviceUnavailable("\(error)")), user: user)
        }
    }

    private func decide(_ request: Request, in table: TargetTable) -> UpgradePolicy.Decision {
        self.policy.decide(checked: request.head, targets: table, client: request.client, identity: request.identity)
    }

    private static func serviceUnavailable(_ reason: String) -> HTTPRejection {
        HTTPRejection(.tokenService, .serviceUnavailable, reason, headers: [("Retry-After", "5")])
    }

    /// The refusal of `decision` when it refuses a token the table does not know.
    private static func unknownToken(_ decision: UpgradePolicy.Decision) -> HTTPRejection? {
        guard case .reject(let rejection) = decision, rejection.kind == .unknownToken else { return nil }
        return rejection
    }
}
