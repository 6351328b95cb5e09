import Logging
import NIOCore
import NIOHTTP1
import NIOSSL
import NIOTLS
import NIOWebSocket

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
    private let endpoints: HTTPEndpoints
    private let encoder: HTTPResponseEncoder
    private var logger: Logger
    private var parser: RequestHeadParser
    private var context: ChannelHandlerContext?

    /// Client bytes after the request head, kept for the session.
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
    private var backend: Result<BackendHandler, BackendConnectError>?
    private var selfCheck = false

    init(server: BridgeServer, encoder: HTTPResponseEncoder, slot: HandshakeLimiter.Slot?, logger: Logger) {
        let configuration = server.configuration
        self.server = server
        self.endpoints = server.endpoints
        self.encoder = encoder
        self.slot = slot
        self.logger = logger
        self.parser = RequestHeadParser(limit: configuration.maxRequestHeadBytes)
        self.machine = HandshakeStateMachine(
            proxyProtocol: configuration.proxyProtocol,
            tls: server.services.tls != nil,
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
        self.dropBackend()
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
        let action = self.machine.deadlineFired()
        let phase: HandshakeStateMachine.Phase
        switch action {
        case .ignore: return
        case .closeNow(let timedOut), .answerTimeout(let timedOut): phase = timedOut
        }
        self.server.metrics.handshakeTimedOut(phase)
        self.server.metrics.rejected(.timeout)
        self.logger.debug("handshake timeout", metadata: ["phase": "\(phase.rawValue)"])
        self.endHandshake()
        if case .answerTimeout = action {
            self.writeBounded(HTTPAnswer(.requestTimeout, "handshake timeout"), method: .GET, context: context)
        } else {
            self.closeNow(context: context)
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
                        self.abort(context: context)
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
            self.refuse(HTTPRejection(.unknownToken, .notFound, "unknown token"), head: self.head, context: context)
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
            self.early.setOrWriteBuffer(&buffer)
        case .parseHead:
            let parsed = self.parser.feed(&buffer)
            if case .head(let head, var rest) = parsed {
                if rest.readableBytes > 0 { self.early.setOrWriteBuffer(&rest) }
                self.requestHeadReceived(head, context: context)
            } else if let rejection = parsed.rejection {
                self.refuse(rejection, head: nil, context: context)
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
        self.abort(context: context)
    }

    /// Ends the handshake without an answer.
    private func abort(context: ChannelHandlerContext) {
        _ = self.machine.refuse()
        self.endHandshake()
        self.closeNow(context: context)
    }

    // MARK: the request

    private func requestHeadReceived(_ head: HTTPRequestHead, context: ChannelHandlerContext) {
        let upgrade = !head.headers["upgrade"].isEmpty
        self.machine.requestHeadReceived(upgrade: upgrade)
        self.head = head
        let endpoint = ClientEndpoint.make(
            channel: context.channel,
            proxy: self.proxyAddresses,
            tls: self.isTLS,
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
            self.endHandshake()
            guard let answer = self.endpoints.answer(head, on: context.eventLoop) else {
                self.refuse(UpgradePolicy.refusal(ofPlain: head), head: head, context: context)
                return
            }
            let stallTimeout = self.server.configuration.stallTimeout
            answer.whenSuccess { answer in
                answer.write(to: context, method: head.method, stallTimeout: stallTimeout, wrap: self.wrapOutboundOut)
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
        let client = endpoint.key
        if let rejection = self.server.limiter.takeHandshake(client: client) ?? UpgradePolicy.validate(head) {
            self.refuse(rejection, head: head, context: context)
            return
        }
        self.server.admission.decide(head, identity: endpoint.identity, client: client, on: context.eventLoop)
            .whenSuccess { outcome in  // it never fails: a failing step is a refusal
                guard self.machine.state == .admitting else { return }  // the deadline came first
                if let user = outcome.user { self.logger[metadataKey: "user"] = "\(user)" }
                self.admit(outcome, head: head, context: context)
            }
    }

    /// Applies the session limits to the decision, joins the revocation registry, then connects the backend.
    private func admit(_ outcome: HandshakeAdmission.Outcome, head: HTTPRequestHead, context: ChannelHandlerContext) {
        let admission: UpgradePolicy.Admission
        switch outcome.decision {
        case .reject(let rejection):
            self.refuse(rejection, head: head, context: context)
            return
        case .accept(let accepted):
            admission = accepted
        }
        if let rejection = self.server.admitSession(admission, channel: context.channel, client: self.endpoint?.key) {
            self.refuse(rejection, head: head, context: context)
            return
        }
        self.admission = admission
        self.logger[metadataKey: "target"] = "\(admission.target.name)"
        let echoes = admission.target.backend == .echo
        guard self.machine.admitted(connectsBackend: !echoes) == .proceed else { return }
        // The backend connect has its own timeout (--connect-timeout); the handshake deadline ends here.
        self.deadline?.cancel()
        self.deadline = nil
        if echoes {
            self.upgrade(context: context)
            return
        }
        let connect = self.server.connectBackend(admission.target, client: self.endpoint, on: context.eventLoop)
        connect.whenSuccess { result in
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

    /// Refuses `head` (nil: before one was read) with `rejection`: counted, logged with its reason, written under a
    /// write deadline, then closed.
    private func refuse(_ rejection: HTTPRejection, head: HTTPRequestHead?, context: ChannelHandlerContext) {
        guard self.machine.refuse() == .proceed else { return }
        self.endHandshake()
        self.server.metrics.rejected(rejection.kind)
        var metadata: Logger.Metadata = [
            "status": "\(rejection.status.code)", "reason": "\(rejection.reason)", "kind": "\(rejection.kind.rawValue)",
        ]
        if let uri = head?.uri {
            metadata["uri"] = "\(TokenRedaction.uri(uri, sources: self.endpoints.tokenSources))"
        }
        self.logger.debug("request refused", metadata: metadata)
        self.dropBackend()
        self.writeBounded(HTTPAnswer(rejection), method: head?.method == .HEAD ? .HEAD : .GET, context: context)
    }

    /// A backend connected for an upgrade that never completed must not outlive its client.
    private func dropBackend() {
        if case .success(let handler) = self.backend { handler.channel?.close(promise: nil) }
        self.backend = nil
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
        // permessage-deflate where the target (or the server) enables it and the client offers it; never for the
        // readiness probe.
        var compression: DeflateParameters?
        if !self.selfCheck, let target = self.admission?.target,
            (target.compression ?? self.server.configuration.compression) == .deflate
        {
            compression = DeflateNegotiation.negotiate(offers: head.headers["sec-websocket-extensions"])
        }
        let answer = WebSocketAccept.switchingProtocols(
            key: key,
            subprotocol: self.admission?.subprotocol,
            compression: compression
        )
        context.writeAndFlush(self.wrapOutboundOut(.head(answer)), promise: nil)
        let channel = context.channel
        do {
            let handlers: [ChannelHandler]
            if self.selfCheck {
                // The readiness probe got its 101: say goodbye without a backend or a session log line.
                handlers = [WebSocketFrameEncoder(), SelfCheckHandler()]
                self.early = nil
            } else {
                guard let admission = self.admission else { preconditionFailure("upgrade without an admission") }
                let session = try self.server.makeSession(
                    channel: channel,
                    admission: admission,
                    backend: self.backend,
                    compression: compression,
                    logger: self.logger
                )
                handlers = [WebSocketFrameEncoder()] + session
            }
            self.backend = nil
            let early = self.early
            self.early = nil
            try WebSocketAccept.install(handlers, replacing: context, and: self.encoder, early: early)
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
