import Logging
import NIOCore
import NIOHTTP1
import NIOSSL
import NIOTLS
import NIOWebSocket

/// A PROXY protocol header was read (and believed): sent down the pipeline before the bytes that follow it.
struct ProxyHeaderEvent: Sendable {
    var addresses: ProxyHeader.Addresses
}

/// The first byte told TLS from plain: sent down the pipeline before that byte.
struct TLSDetectedEvent: Sendable {
    var isTLS: Bool
}

/// The one owner of a connection from accept to its 101 (or its refusal): PROXY header, TLS, request head,
/// admission, backend connect and the upgrade step, driven by a `HandshakeStateMachine`.
///
/// It sits at the end of the pipeline, behind an `HTTPResponseEncoder` that only its answers use, and takes the
/// client's bytes itself: the request head (`RequestHeadParser`, at most `maxRequestHeadBytes`), then at most
/// `earlyBytesLimit` bytes (plus one read cycle) for the session, beyond which it stops reading until the 101. One
/// deadline, `handshakeTimeout` from accept, covers everything up to the backend connect. At the 101 it removes
/// itself and the encoder and installs the WebSocket frame codec and the session, handing them the early bytes.
///
/// All its state lives on the channel's event loop; futures it waits for complete there too.
final class HandshakeHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = HTTPServerResponsePart
    typealias OutboundOut = HTTPServerResponsePart

    /// Bound on writing a refusal or a 408 before the connection is closed anyway.
    static let answerWriteTimeout = TimeAmount.seconds(2)

    private var machine: HandshakeStateMachine
    private let server: BridgeServer
    private let policy: UpgradePolicy
    private let endpoints: HTTPEndpoints
    private let encoder: HTTPResponseEncoder
    private var logger: Logger
    private var parser: RequestHeadParser
    private var context: ChannelHandlerContext?

    private var early: ByteBuffer?
    private var readHeld = false
    private var deadline: Scheduled<Void>?
    private var answerDeadline: Scheduled<Void>?
    private var slot: HandshakeLimiter.Slot?
    private var countedInProgress = false

    private var proxyAddresses: ProxyHeader.Addresses?
    private var isTLS = false
    private var endpoint: ClientEndpoint?
    private var head: HTTPRequestHead?
    private var admission: UpgradePolicy.Admission?
    private var resolvedByService = false
    private var backend: Result<BackendHandler, BackendConnectError>?
    private var selfCheck = false

    init(
        server: BridgeServer,
        policy: UpgradePolicy,
        endpoints: HTTPEndpoints,
        encoder: HTTPResponseEncoder,
        slot: HandshakeLimiter.Slot?,
        logger: Logger
    ) {
        let configuration = server.configuration
        self.server = server
        self.policy = policy
        self.endpoints = endpoints
        self.encoder = encoder
        self.slot = slot
        self.logger = logger
        self.parser = RequestHeadParser(limit: configuration.maxRequestHeadBytes)
        self.machine = HandshakeStateMachine(
            proxyProtocol: configuration.proxyProtocol,
            tls: configuration.tls != nil,
            earlyBytesLimit: configuration.maxEarlyBytes
        )
    }

    /// Where the handshake stands (tests).
    var state: HandshakeStateMachine.State { self.machine.state }

    // MARK: lifecycle

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        self.server.metrics.handshakeStarted()
        self.countedInProgress = true
        if context.channel.isActive { self.startDeadline(context: context) }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.endHandshake()
        self.context = nil
    }

    func channelActive(context: ChannelHandlerContext) {
        self.startDeadline(context: context)
        context.fireChannelActive()
    }

    func channelInactive(context: ChannelHandlerContext) {
        self.machine.channelClosed()
        self.endHandshake()
        self.answerDeadline?.cancel()
        self.answerDeadline = nil
        self.early = nil
        // A backend connected for an upgrade that never completed must not outlive its client.
        if case .success(let handler) = self.backend { handler.channel?.close(promise: nil) }
        self.backend = nil
        context.fireChannelInactive()
    }

    private func startDeadline(context: ChannelHandlerContext) {
        guard self.deadline == nil, self.machine.deadlineApplies else { return }
        self.deadline = context.eventLoop.scheduleTask(in: self.server.configuration.handshakeTimeout) { [weak self] in
            self?.deadlineFired()
        }
    }

    /// The handshake is over (101, refusal written or connection gone): its slot, gauge and deadline go.
    private func endHandshake() {
        self.deadline?.cancel()
        self.deadline = nil
        if let slot = self.slot {
            self.slot = nil
            self.server.handshakeLimiter.release(slot)
        }
        if self.countedInProgress {
            self.countedInProgress = false
            self.server.metrics.handshakeEnded()
        }
    }

    private func deadlineFired() {
        self.deadline = nil
        guard let context = self.context else { return }
        switch self.machine.deadlineFired() {
        case .ignore:
            return
        case .closeNow(let phase):
            self.server.metrics.handshakeTimedOut(phase)
            self.server.metrics.rejected(.timeout)
            self.logger.debug("handshake timeout", metadata: ["phase": "\(phase.rawValue)"])
            self.endHandshake()
            self.closeNow(context: context)
        case .answerTimeout(let phase):
            self.server.metrics.handshakeTimedOut(phase)
            self.server.metrics.rejected(.timeout)
            self.logger.debug("handshake timeout", metadata: ["phase": "\(phase.rawValue)"])
            self.endHandshake()
            self.writeBounded(HTTPAnswer(.requestTimeout, "handshake timeout"), method: .GET, context: context)
        }
    }

    // MARK: events

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        switch event {
        case let header as ProxyHeaderEvent:
            self.machine.proxyHeaderReceived()
            switch header.addresses {
            case .tcp4(let source, _, _, _), .tcp6(let source, _, _, _):
                self.proxyAddresses = header.addresses
                if var slot = self.slot {
                    let assigned = self.server.handshakeLimiter.assign(&slot, to: ClientEndpoint.unmapped(source))
                    self.slot = assigned ? slot : nil
                    if !assigned {
                        self.logger.debug("connection refused: too many handshakes from this address")
                        self.server.metrics.rejected(.handshakeLimit)
                        _ = self.machine.refuse()
                        self.endHandshake()
                        context.close(promise: nil)
                    }
                }
            case .unknown:
                break  // LOCAL or UNKNOWN: the peer's own address stands
            }
        case let detected as TLSDetectedEvent:
            self.isTLS = detected.isTLS
            self.machine.tlsDetected(detected.isTLS)
        case let tlsEvent as TLSUserEvent:
            if case .handshakeCompleted = tlsEvent, self.machine.state == .tlsHandshake {
                self.machine.tlsHandshakeCompleted()
            }
            context.fireUserInboundEventTriggered(event)
        case is BridgeShutdownEvent:
            context.close(promise: nil)
        case let revocation as BridgeRevocationEvent:
            // Admitted, not yet upgraded: the token is no longer known.
            self.logger.debug("upgrade refused: \(revocation.reason)")
            self.refuse(HTTPRejection(.unknownToken, .notFound, "unknown token"), method: .GET, context: context)
        default:
            context.fireUserInboundEventTriggered(event)
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var buffer = self.unwrapInboundIn(data)
        // Decrypted bytes mean the TLS handshake is done, whether or not its event came first.
        if self.machine.state == .tlsHandshake { self.machine.tlsHandshakeCompleted() }
        switch self.machine.bytesArrived() {
        case .discard:
            return
        case .keepForSession:
            self.keep(&buffer)
        case .parseHead:
            switch self.parser.feed(&buffer) {
            case .incomplete:
                return
            case .tooLarge:
                self.refuse(
                    HTTPRejection(.headTooLarge, .init(statusCode: 431), "request header fields too large"),
                    method: .GET,
                    context: context
                )
            case .malformed(let reason):
                self.refuse(
                    HTTPRejection(.malformed, .badRequest, "malformed HTTP request: \(reason)"),
                    method: .GET,
                    context: context
                )
            case .head(let head, var rest):
                if rest.readableBytes > 0 { self.keep(&rest) }
                self.requestHeadReceived(head, context: context)
            }
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {}

    func read(context: ChannelHandlerContext) {
        if self.machine.mayRead(kept: self.early?.readableBytes ?? 0) {
            context.read()
        } else {
            self.readHeld = true
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        self.logger.debug("connection error during the handshake", metadata: ["error": "\(error)"])
        _ = self.machine.refuse()
        self.endHandshake()
        self.closeNow(context: context)
    }

    /// Keeps bytes that came after the request head for the session (the state machine stops reads beyond the
    /// bound).
    private func keep(_ buffer: inout ByteBuffer) {
        if self.early == nil {
            self.early = buffer
        } else {
            self.early!.writeBuffer(&buffer)
        }
    }

    // MARK: the request

    private func requestHeadReceived(_ head: HTTPRequestHead, context: ChannelHandlerContext) {
        let upgrade = !head.headers["upgrade"].isEmpty
        self.machine.requestHeadReceived(upgrade: upgrade)
        self.head = head
        var names: [String]?
        var commonName: String?
        if self.isTLS, let handler = try? context.pipeline.syncOperations.handler(type: NIOSSLServerHandler.self),
            let certificate = handler.peerCertificate
        {
            names = CertificateNames.identities(of: certificate)
            commonName = CertificateNames.commonName(of: certificate)
        }
        let endpoint = ClientEndpoint.make(
            peer: context.channel.remoteAddress,
            local: context.channel.localAddress,
            proxy: self.proxyAddresses,
            tls: self.isTLS,
            certificateNames: names,
            certificateCommonName: commonName,
            headers: head.headers,
            trusted: self.server.configuration.trustedProxies
        )
        self.endpoint = endpoint
        endpoint.annotate(&self.logger)

        if let refusal = UpgradePolicy.strictHeadCheck(head) {
            self.refuse(refusal, head: head, context: context)
            return
        }
        guard upgrade else {
            self.deadline?.cancel()
            self.deadline = nil
            self.endHandshake()
            if let answer = self.endpoints.answer(head, on: context.eventLoop) {
                let stallTimeout = self.server.configuration.stallTimeout
                answer.whenSuccess { answer in
                    answer.write(
                        to: context,
                        method: head.method,
                        stallTimeout: stallTimeout,
                        wrap: self.wrapOutboundOut
                    )
                }
                return
            }
            if case .reject(let rejection) = self.policy.decide(
                head,
                targets: self.server.targets.current,
                client: endpoint.key
            ) {
                self.refuse(rejection, head: head, context: context)
            } else {
                context.close(promise: nil)  // not reached: a request without Upgrade is never accepted
            }
            return
        }
        if head.uri == Readiness.selfCheckPath,
            head.headers.first(name: Readiness.selfCheckHeader) == self.server.readiness.secret,
            head.headers["sec-websocket-key"].count == 1
        {
            // The probe's own request (Readiness.probe), recognised by the per-process secret.
            self.selfCheck = true
            self.machine.selfCheckAccepted()
            self.upgrade(context: context)
            return
        }
        if let rejection = self.server.limiter.takeHandshake(client: endpoint.key) {
            self.refuse(rejection, head: head, context: context)
            return
        }
        if let rejection = UpgradePolicy.validate(head) {
            self.refuse(rejection, head: head, context: context)
            return
        }
        guard let authenticator = self.server.configuration.authenticator else {
            self.decide(head, identity: endpoint.identity, context: context)
            return
        }
        authenticator.check(head.headers, on: context.eventLoop).whenComplete { result in
            guard self.machine.state == .admitting else { return }  // the deadline came first
            var identity = endpoint.identity
            switch result {
            case .success(let outcome):
                identity.authentication = outcome
                if case .authenticated(let user) = outcome { self.logger[metadataKey: "user"] = "\(user)" }
            case .failure:
                identity.authentication = .invalid
            }
            self.decide(head, identity: identity, context: context)
        }
    }

    private func decide(_ head: HTTPRequestHead, identity: UpgradePolicy.ClientIdentity, context: ChannelHandlerContext)
    {
        let table = self.server.targets.current
        let decision = self.policy.decide(head, targets: table, client: self.endpoint?.key, identity: identity)
        guard let rereader = self.server.rereader, case .reject(let rejection) = decision,
            rejection.kind == .unknownToken
        else {
            self.decide(decision, table: table, head: head, identity: identity, context: context)
            return
        }
        // Not in the table in force: the files may have changed since (a token written just before the page
        // connects). Looked at off the event loop; the handshake deadline still applies.
        rereader.tableForUnknownToken(on: context.eventLoop).whenSuccess { fresh in
            guard self.machine.state == .admitting else { return }  // the deadline came first
            let decision = self.policy.decide(head, targets: fresh, client: self.endpoint?.key, identity: identity)
            self.decide(decision, table: fresh, head: head, identity: identity, context: context)
        }
    }

    /// Admits `decision`, or, for a token `table` does not know, asks the token service first.
    private func decide(
        _ decision: UpgradePolicy.Decision,
        table: TargetTable,
        head: HTTPRequestHead,
        identity: UpgradePolicy.ClientIdentity,
        context: ChannelHandlerContext
    ) {
        let client = self.endpoint?.key
        guard let resolver = self.server.resolver, case .reject(let rejection) = decision,
            rejection.kind == .unknownToken,
            let token = self.policy.token(in: head)
        else {
            self.admit(decision, head: head, context: context)
            return
        }
        // Not in the loaded table: ask the token service, without blocking the event loop.
        resolver.resolve(token, on: context.eventLoop).whenComplete { result in
            guard self.machine.state == .admitting else { return }
            switch result {
            case .success(.found(let target)):
                self.resolvedByService = true
                let resolved = TargetTable(mode: .tokens([token: target]), origins: table.origins)
                self.admit(
                    self.policy.decide(head, targets: resolved, client: client, identity: identity),
                    head: head,
                    context: context
                )
            case .success(.notFound):
                self.refuse(rejection, head: head, context: context)
            case .success(.invalid(let reason)):
                self.refuse(HTTPRejection(.invalidToken, .forbidden, reason), head: head, context: context)
            case .success(.unavailable(let reason)):
                self.refuse(
                    HTTPRejection(.tokenService, .serviceUnavailable, reason, headers: [("Retry-After", "5")]),
                    head: head,
                    context: context
                )
            case .failure(let error):
                self.refuse(
                    HTTPRejection(.tokenService, .serviceUnavailable, "\(error)", headers: [("Retry-After", "5")]),
                    head: head,
                    context: context
                )
            }
        }
    }

    /// Applies the session limits to the decision, joins the revocation registry, then connects the backend.
    private func admit(_ decision: UpgradePolicy.Decision, head: HTTPRequestHead, context: ChannelHandlerContext) {
        let admission: UpgradePolicy.Admission
        switch decision {
        case .reject(let rejection):
            self.refuse(rejection, head: head, context: context)
            return
        case .accept(let accepted):
            admission = accepted
        }
        let channel = context.channel
        switch self.server.limiter.acquire(client: self.endpoint?.key ?? "unknown", target: admission.target) {
        case .failure(let rejection):
            self.refuse(rejection, head: head, context: context)
            return
        case .success(let lease):
            let limiter = self.server.limiter
            channel.closeFuture.whenComplete { _ in limiter.release(lease) }
        }
        self.admission = admission
        self.server.sessionAdmitted(channel: channel)
        self.logger[metadataKey: "target"] = "\(admission.target.name)"
        if let token = admission.token {
            // From the decision on, a reload that removes the token refuses this connection (404 before the 101,
            // Close 1008 after).
            self.server.registerSession(
                channel: channel,
                token: token,
                target: admission.target,
                resolved: self.resolvedByService
            )
        }
        let echoes = admission.target.backend == .echo
        guard self.machine.admitted(connectsBackend: !echoes) == .proceed else { return }
        // The backend connect has its own timeout (--connect-timeout); the handshake deadline ends here.
        self.deadline?.cancel()
        self.deadline = nil
        if echoes {
            self.upgrade(context: context)
            return
        }
        let endpoint = self.endpoint
        self.server.connectBackend(admission.target, client: endpoint, on: context.eventLoop).whenSuccess { result in
            switch self.machine.backendConnectFinished() {
            case .proceed:
                self.backend = result
                self.upgrade(context: context)
            case .ignore:
                if case .success(let handler) = result { handler.channel?.close(promise: nil) }
            }
        }
    }

    // MARK: answers

    /// Refuses with `rejection`: counted, logged with its reason, written under a write deadline, then closed.
    private func refuse(_ rejection: HTTPRejection, head: HTTPRequestHead, context: ChannelHandlerContext) {
        self.refuse(rejection, method: head.method == .HEAD ? .HEAD : .GET, uri: head.uri, context: context)
    }

    private func refuse(
        _ rejection: HTTPRejection,
        method: HTTPMethod,
        uri: String? = nil,
        context: ChannelHandlerContext
    ) {
        guard self.machine.refuse() == .proceed else { return }
        self.endHandshake()
        self.server.metrics.rejected(rejection.kind)
        var metadata: Logger.Metadata = [
            "status": "\(rejection.status.code)", "reason": "\(rejection.reason)", "kind": "\(rejection.kind.rawValue)",
        ]
        if let uri { metadata["uri"] = "\(TokenRedaction.uri(uri, sources: self.endpoints.tokenSources))" }
        self.logger.debug("request refused", metadata: metadata)
        if case .success(let handler) = self.backend { handler.channel?.close(promise: nil) }
        self.backend = nil
        self.writeBounded(HTTPAnswer(rejection), method: method, context: context)
    }

    /// Writes `answer` and closes; closes at once if the write has not completed within `answerWriteTimeout`.
    private func writeBounded(_ answer: HTTPAnswer, method: HTTPMethod, context: ChannelHandlerContext) {
        self.answerDeadline = context.eventLoop.scheduleTask(in: Self.answerWriteTimeout) { [weak self] in
            guard let self, let context = self.context else { return }
            self.closeNow(context: context)
        }
        // `answerWriteTimeout` bounds the whole write: no stall deadline on top.
        answer.write(to: context, method: method, stallTimeout: nil, wrap: self.wrapOutboundOut)
    }

    /// Closes the socket without a TLS close_notify exchange, which a peer that does not answer would stretch.
    private func closeNow(context: ChannelHandlerContext) {
        if let tls = try? context.pipeline.syncOperations.context(handlerType: NIOSSLServerHandler.self) {
            tls.close(promise: nil)
        } else {
            context.close(promise: nil)
        }
    }

    // MARK: the upgrade

    /// Answers 101 and installs the WebSocket codec and the session in place of this handler and the HTTP encoder,
    /// handing the session the bytes that came after the request.
    private func upgrade(context: ChannelHandlerContext) {
        precondition(self.machine.state == .upgraded, "upgrade in state \(self.machine.state)")
        guard let head = self.head, let key = head.headers.first(name: "sec-websocket-key")?.trimmingWhitespace() else {
            preconditionFailure("upgrade without a validated request")
        }
        self.endHandshake()
        var headers = HTTPHeaders([
            ("Upgrade", "websocket"), ("Connection", "Upgrade"),
            ("Sec-WebSocket-Accept", WebSocketAccept.value(forKey: key)),
        ])
        if let subprotocol = self.admission?.subprotocol {
            headers.add(name: "Sec-WebSocket-Protocol", value: subprotocol)
        }
        context.writeAndFlush(
            self.wrapOutboundOut(
                .head(HTTPResponseHead(version: .http1_1, status: .switchingProtocols, headers: headers))
            ),
            promise: nil
        )
        let channel = context.channel
        do {
            let sync = context.pipeline.syncOperations
            sync.removeHandler(self.encoder, promise: nil)
            let handlers: [ChannelHandler]
            if self.selfCheck {
                // The readiness probe got its 101: say goodbye without a backend or a session log line.
                handlers = [WebSocketFrameEncoder(), SelfCheckHandler()]
            } else {
                guard let admission = self.admission else { preconditionFailure("upgrade without an admission") }
                handlers =
                    [WebSocketFrameEncoder()]
                    + (try self.server.makeSession(
                        channel: channel,
                        admission: admission,
                        backend: self.backend,
                        logger: self.logger
                    ))
            }
            // In pipeline order, so that the encoder is in place before the session writes (a Close 1014 from its
            // `handlerAdded`).
            var previous: ChannelHandler = self
            for handler in handlers {
                try sync.addHandler(handler, position: .after(previous))
                previous = handler
            }
            self.backend = nil
            if var early = self.early, early.readableBytes > 0, !self.selfCheck {
                self.early = nil
                // Keep only what is readable, not the storage of the reads it came in.
                if early.capacity > early.readableBytes * 2 { early = ByteBuffer(buffer: early) }
                context.fireChannelRead(NIOAny(early))
                context.fireChannelReadComplete()
            }
            self.early = nil
            sync.removeHandler(context: context, promise: nil)
        } catch {
            self.logger.error("cannot install the session: \(error)")
            channel.close(promise: nil)
            return
        }
        if self.readHeld {
            self.readHeld = false
            channel.read()
        }
    }
}

extension ByteBuffer {
    /// A compact copy of `buffer`'s readable bytes.
    fileprivate init(buffer: ByteBuffer) {
        var copy = ByteBufferAllocator().buffer(capacity: buffer.readableBytes)
        var source = buffer
        copy.writeBuffer(&source)
        self = copy
    }
}
