import Logging
import NIOCore
import NIOWebSocket

/// Sent down a client pipeline to ask for a graceful close (server shutdown).
public struct BridgeShutdownEvent: Sendable {
    public init() {}
}

/// Sent down a session's pipeline when its token was removed or now leads elsewhere: Close 1008.
public struct BridgeRevocationEvent: Sendable {
    public var reason: String
}

/// One WebSocket session, from the 101 to the end of both legs: the thin driver of a `SessionStateMachine`.
///
/// It lives in the client pipeline behind the frame decoder, turns channel events of the client and of its
/// `RelayPartner` (the backend, or the echo target) into the machine's events, and carries out the actions the
/// machine returns: writes, flushes, held reads, closes and timers. What it adds is what the machine leaves out on
/// purpose: the session's log lines, metrics and recording.
///
/// Both channels run on the same event loop, so nothing here needs a lock. Events that arrive while actions are
/// being carried out (a write that makes a channel unwritable, a close that makes it inactive) are queued and
/// handled in order, after the actions of the event before them.
final class SessionHandler: ChannelDuplexHandler {
    typealias InboundIn = FrameParser.Event
    typealias OutboundIn = WebSocketFrame
    typealias OutboundOut = WebSocketFrame

    private var machine: SessionStateMachine
    private var partner: RelayPartner?
    private let connectFailure: BackendConnectError?
    private let target: Target
    private let recording: RecordingPolicy?
    private var logger: Logger
    private let metrics: BridgeMetrics
    private let targetMetrics: BridgeMetrics.TargetMetrics
    private var recorder: SessionRecorder?
    private var startedAt = NIODeadline.now()
    private var context: ChannelHandlerContext?
    /// The session's event loop (both channels'): its timers outlive the client pipeline while the partner closes.
    private var eventLoop: EventLoop?
    private var timers = [Scheduled<Void>?](repeating: nil, count: SessionStateMachine.Timer.allCases.count)
    /// Events that arrived while the actions of an earlier one were carried out.
    private var queued: [SessionStateMachine.Event] = []
    /// The actions of the event being handled; one array for the session's life.
    private var actions: [SessionStateMachine.Action] = []
    private var handling = false

    /// - Parameter partner: the backend connection or echo target; a failure is reported to the page as Close 1014.
    init(
        configuration: BridgeConfiguration,
        recording: RecordingPolicy?,
        target: Target,
        partner: Result<RelayPartner, BackendConnectError>,
        logger: Logger,
        metrics: BridgeMetrics
    ) {
        self.recording = recording
        self.target = target
        switch partner {
        case .success(let partner):
            self.partner = partner
            self.connectFailure = nil
        case .failure(let error):
            self.partner = nil
            self.connectFailure = error
        }
        self.machine = SessionStateMachine(settings: Self.settings(configuration, target))
        self.logger = logger
        self.metrics = metrics
        self.targetMetrics = metrics.target(target.metricLabel)
    }

    static func settings(_ configuration: BridgeConfiguration, _ target: Target) -> SessionStateMachine.Settings {
        // The target's own idle timeout, else the server's.
        let idle =
            target.idleTimeout.map { TimeAmount.nanoseconds(Int64(($0 * 1e9).rounded())) } ?? configuration.idleTimeout
        return SessionStateMachine.Settings(
            pingInterval: configuration.pingInterval,
            pongTimeout: configuration.pongTimeout,
            idleTimeout: idle,
            closeTimeout: configuration.closeTimeout
        )
    }

    /// Where the client leg stands (for tests).
    var clientPhase: SessionStateMachine.ClientPhase { self.machine.client }

    // MARK: lifecycle

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        self.eventLoop = context.eventLoop
        self.startedAt = context.eventLoop.now
        self.targetMetrics.opened.increment()
        self.targetMetrics.active.increment()
        if let recording = self.recording {
            do {
                let recorder = try recording.makeRecorder()
                self.recorder = recorder
                self.logger.info("recording session", metadata: ["file": "\(recorder.path)"])
            } catch {
                self.logger.error("cannot record session: \(error)")
            }
        }
        var metadata: Logger.Metadata = ["backend": "\(TokenRedaction.backend(self.target))"]
        if let failure = self.connectFailure { metadata["error"] = "\(failure.detail)" }
        self.logger.info("session open", metadata: metadata)
        if self.partner != nil, self.target.tls?.insecure == true {
            self.logger.warning("backend TLS certificate not verified (tls.insecure)", metadata: metadata)
        }
        if let channel = (self.partner as? BackendHandler)?.channel {
            precondition(
                channel.eventLoop === context.eventLoop,
                "the backend channel must live on the client channel's event loop"
            )
        }
        self.handle(
            .start(
                connectFailure: self.partner == nil ? (self.connectFailure?.reason ?? "backend unreachable") : nil,
                clientWritable: context.channel.isWritable,
                partnerWritable: self.partner?.isWritable ?? false,
                partnerWritesToClient: self.partner?.writesToClient ?? false
            )
        )
        self.partner?.attach(self)
    }

    /// The client pipeline is gone; the partner's close deadline still runs until the session finishes (the partner
    /// keeps this handler alive until then).
    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
    }

    // MARK: client events

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let event = self.unwrapInboundIn(data)
        guard !self.handling else { return self.queued.append(.clientFrame(event)) }
        switch event {
        case .data(let buffer):
            guard self.machine.clientPayload(buffer.readableBytes, now: context.eventLoop.now) else { return }
            self.hotPath { self.forwardToPartner(.payload(buffer)) }
        case .dataFrame(let header):
            guard self.machine.clientFrameStart(now: context.eventLoop.now) else { return }
            self.hotPath { self.partner?.write(.frameStart(header)) }
        case .ping, .pong, .close, .compressed:
            self.handle(.clientFrame(event))
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        if self.handling {
            self.queued.append(.clientReadComplete)
        } else {
            let flush = self.machine.clientReadComplete()
            if flush.partner || flush.client {
                self.hotPath {
                    if flush.partner { self.partner?.flush() }
                    if flush.client { self.context?.flush() }
                }
            }
        }
        context.fireChannelReadComplete()
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        if let failure = error as? FrameParser.Failure {
            self.logger.debug("client protocol error", metadata: ["error": "\(failure)"])
            self.handle(.clientProtocolError(failure))
        } else {
            self.logger.debug("client connection error", metadata: ["error": "\(error)"])
            self.handle(.clientConnectionError("\(error)"))
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        self.handle(.clientInactive)
        context.fireChannelInactive()
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        let writable = context.channel.isWritable
        self.handle(.clientWritability(writable))
        context.fireChannelWritabilityChanged()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is BridgeShutdownEvent {
            self.handle(.shutdown)
        } else if let revocation = event as? BridgeRevocationEvent {
            self.handle(.revoked(revocation.reason))
        } else {
            context.fireUserInboundEventTriggered(event)
        }
    }

    func read(context: ChannelHandlerContext) {
        guard !self.handling else { return self.queued.append(.clientReadRequested) }
        if self.machine.clientReadRequested() { context.read() }
    }

    // MARK: partner events

    func partnerRead(_ frame: WebSocketFrame) {
        guard !self.handling else { return self.queued.append(.partnerData(frame)) }
        guard self.machine.partnerData(frame.data.readableBytes, now: self.eventLoop?.now ?? .now()) else { return }
        self.hotPath { self.forwardToClient(frame) }
    }

    func partnerReadComplete() {
        guard !self.handling else { return self.queued.append(.partnerReadComplete) }
        if self.machine.partnerReadComplete() { self.hotPath { self.context?.flush() } }
    }

    func partnerWantsRead() {
        guard !self.handling else { return self.queued.append(.partnerReadRequested) }
        if self.machine.partnerReadRequested() { self.partner?.read() }
    }
    func partnerWritabilityChanged(_ writable: Bool) { self.handle(.partnerWritability(writable)) }
    func partnerInputClosed() { self.handle(.partnerInputClosed) }
    func partnerInactive() { self.handle(.partnerInactive) }

    func partnerError(_ error: Error) {
        self.logger.debug("backend connection error", metadata: ["error": "\(error)"])
    }

    // MARK: driving the machine

    /// The relay's hot path: the machine decided on its own (`clientPayload`, `partnerData`, …) and `body` carries
    /// out that one step. Events it causes (writability, errors) wait for its end, as during `handle`.
    private func hotPath(_ body: () -> Void) {
        self.handling = true
        body()
        self.handling = false
        if !self.queued.isEmpty { self.handle(self.queued.removeFirst()) }
    }

    private func forwardToPartner(_ data: RelayData) {
        if case .payload(let buffer) = data {
            self.targetMetrics.bytesUp.increment(by: buffer.readableBytes)
            self.recorder?.fromClient(buffer)
        }
        self.partner?.write(data)
    }

    private func forwardToClient(_ frame: WebSocketFrame) {
        self.targetMetrics.bytesDown.increment(by: frame.data.readableBytes)
        self.recorder?.toClient(frame.data)
        self.context?.write(self.wrapOutboundOut(frame), promise: nil)
    }

    private func handle(_ event: SessionStateMachine.Event) {
        guard !self.handling else {
            self.queued.append(event)
            return
        }
        self.handling = true
        defer { self.handling = false }
        // The array is taken out of the handler while it is used: a local, uniquely referenced buffer is appended
        // to and emptied in place (no copy, no allocation, no exclusivity check per access).
        var actions: [SessionStateMachine.Action] = []
        swap(&actions, &self.actions)
        defer { swap(&actions, &self.actions) }
        var next: SessionStateMachine.Event? = event
        while let event = next {
            let now = self.eventLoop?.now ?? .now()
            self.machine.handle(event, now: now, into: &actions)
            for index in actions.indices { self.run(actions[index]) }
            actions.removeAll(keepingCapacity: true)
            next = self.queued.isEmpty ? nil : self.queued.removeFirst()
        }
    }

    private func run(_ action: SessionStateMachine.Action) {
        switch action {
        case .forwardToPartner(let data):
            self.forwardToPartner(data)
        case .forwardToClient(let frame):
            self.forwardToClient(frame)
        case .writeToClient(let frame):
            self.context?.write(self.wrapOutboundOut(frame), promise: nil)
        case .flushClient:
            self.context?.flush()
        case .flushPartner:
            self.partner?.flush()
        case .sendClose(let code, let reason, let thenClose):
            guard let context = self.context else { return }
            let reason = Self.truncate(reason, toUTF8Bytes: 123)
            var payload = context.channel.allocator.buffer(capacity: 2 + reason.utf8.count)
            payload.writeInteger(code)
            payload.writeString(reason)
            let frame = self.wrapOutboundOut(WebSocketFrame(fin: true, opcode: .connectionClose, data: payload))
            if thenClose {
                let written = context.eventLoop.makePromise(of: Void.self)
                context.writeAndFlush(frame, promise: written)
                written.futureResult.whenComplete { _ in context.close(promise: nil) }
            } else {
                context.writeAndFlush(frame, promise: nil)
            }
        case .closeClient:
            self.context?.close(promise: nil)
        case .closePartner(let mode):
            self.partner?.close(mode)
        case .readClient:
            self.context?.read()
        case .readPartner:
            self.partner?.read()
        case .schedule(let timer, let deadline):
            guard let eventLoop = self.eventLoop else { return }
            self.timers[timer.rawValue]?.cancel()
            self.timers[timer.rawValue] = eventLoop.scheduleTask(deadline: deadline) { [weak self] in
                self?.timers[timer.rawValue] = nil
                self?.handle(.timer(timer))
            }
        case .cancel(let timer):
            self.timers[timer.rawValue]?.cancel()
            self.timers[timer.rawValue] = nil
        case .finished(let summary):
            self.finish(summary)
        }
    }

    private func cancelTimers() {
        for index in self.timers.indices {
            self.timers[index]?.cancel()
            self.timers[index] = nil
        }
    }

    /// Both legs are closed: one log line, the metrics, and the partner and recording released.
    private func finish(_ summary: SessionStateMachine.Summary) {
        self.cancelTimers()
        self.partner?.detach()
        self.partner = nil
        let elapsed = (self.eventLoop?.now ?? .now()) - self.startedAt
        self.targetMetrics.active.decrement()
        self.recorder?.finish()
        self.recorder = nil
        self.targetMetrics.duration.recordNanoseconds(elapsed.nanoseconds)
        self.metrics.sessionClosed(target: self.target.metricLabel, code: summary.close.code)
        let duration = Double(elapsed.nanoseconds) / 1e9
        var metadata: Logger.Metadata = [
            "up": .stringConvertible(summary.bytesUp),
            "down": .stringConvertible(summary.bytesDown),
            "duration": .stringConvertible((duration * 1000).rounded() / 1000),
            "code": .stringConvertible(summary.close.code),
            "closed_by": "\(summary.close.by.rawValue)",
        ]
        if !summary.close.reason.isEmpty { metadata["reason"] = "\(summary.close.reason)" }
        self.logger.info("session closed", metadata: metadata)
    }

    static func truncate(_ text: String, toUTF8Bytes limit: Int) -> String {
        guard text.utf8.count > limit else { return text }
        var result = ""
        for character in text {
            if result.utf8.count + character.utf8.count > limit { break }
            result.append(character)
        }
        return result
    }
}
