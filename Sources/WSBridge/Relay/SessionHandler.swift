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

/// One WebSocket session: relays payload bytes between the client channel (where this handler lives, behind the
/// frame decoder) and the backend channel (through its `BackendHandler`), answers control frames, applies
/// backpressure both ways and runs the closing handshake on both legs.
///
/// A session to an echo target has no backend: it sends every data frame back to the client (`EchoFramer`), and
/// holds client reads while the client cannot take more. Control frames, timers and the client's closing handshake
/// are the same as a relay's.
///
/// Both channels run on the same event loop, so this handler's state needs no locks.
final class SessionHandler: ChannelDuplexHandler {
    typealias InboundIn = FrameParser.Event
    typealias OutboundIn = WebSocketFrame
    typealias OutboundOut = WebSocketFrame

    /// Where the client leg stands in the closing handshake.
    enum ClientPhase: Equatable {
        /// Data flows both ways.
        case open
        /// Our Close is sent; waiting for the client's (its data frames still go to the backend).
        case closeSent
        /// The client connection is gone.
        case closed
    }

    private let configuration: BridgeConfiguration
    private let target: Target
    private var backend: BackendHandler?
    private let connectFailure: BackendConnectError?
    /// An echo session: no backend, data frames go back to the client.
    private let echoes: Bool
    private var echo = EchoFramer()
    private var logger: Logger
    private let metrics: BridgeMetrics
    private let targetMetrics: BridgeMetrics.TargetMetrics
    private var recorder: SessionRecorder?
    private var startedAt = NIODeadline.now()

    private var context: ChannelHandlerContext?
    private(set) var clientPhase = ClientPhase.open
    private var backendClosed = false
    private var backendSawEOF = false
    private var backendOutputShut = false
    private var pendingClientRead = false
    private var backendNeedsFlush = false
    private var clientNeedsFlush = false

    private var bytesUp: UInt64 = 0
    private var bytesDown: UInt64 = 0
    private var closeCode: UInt16?
    private var closedBy: String?
    private var closeReason: String?
    private var finished = false

    private var lastReceived = NIODeadline.now()
    private var lastData = NIODeadline.now()
    private var pingTask: RepeatedTask?
    private var pongCheck: Scheduled<Void>?
    private var idleCheck: Scheduled<Void>?
    private var clientCloseTimer: Scheduled<Void>?
    private var backendCloseTimer: Scheduled<Void>?

    init(
        configuration: BridgeConfiguration,
        target: Target,
        backend: Result<BackendHandler, BackendConnectError>,
        logger: Logger,
        metrics: BridgeMetrics
    ) {
        self.configuration = configuration
        self.target = target
        switch backend {
        case .success(let handler):
            self.backend = handler
            self.connectFailure = nil
        case .failure(let error):
            self.backend = nil
            self.connectFailure = error
        }
        self.echoes = false
        self.logger = logger
        self.metrics = metrics
        self.targetMetrics = metrics.target(target.metricLabel)
    }

    /// A session to an echo target. Its frame decoder must report data frame headers (`reportsDataFrames`).
    init(echoing target: Target, configuration: BridgeConfiguration, logger: Logger, metrics: BridgeMetrics) {
        self.configuration = configuration
        self.target = target
        self.backend = nil
        self.connectFailure = nil
        self.echoes = true
        self.logger = logger
        self.metrics = metrics
        self.targetMetrics = metrics.target(target.metricLabel)
    }

    /// Whether the backend may be read: the client can take more, or the client leg no longer takes data at all
    /// (then backend bytes are read and dropped, so its EOF is seen).
    var clientIsWritable: Bool {
        guard self.clientPhase == .open, let context = self.context else { return true }
        return context.channel.isWritable
    }

    // MARK: lifecycle

    /// The target's own idle timeout, else the server's.
    private var idleTimeout: TimeAmount? {
        if let seconds = self.target.idleTimeout { return .nanoseconds(Int64((seconds * 1e9).rounded())) }
        return self.configuration.idleTimeout
    }

    /// The event loop's clock (virtual in tests).
    private var now: NIODeadline { self.context?.eventLoop.now ?? .now() }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        self.startedAt = context.eventLoop.now
        self.lastReceived = self.startedAt
        self.lastData = self.startedAt
        self.targetMetrics.opened.increment()
        self.targetMetrics.active.increment()
        if let recording = self.configuration.recording {
            do {
                self.recorder = try recording.makeRecorder()
                self.logger.info("recording session", metadata: ["file": "\(self.recorder!.path)"])
            } catch {
                self.logger.error("cannot record session: \(error)")
            }
        }
        if self.echoes {
            self.logger.info("session open", metadata: ["backend": "\(TokenRedaction.backend(self.target))"])
            self.startTimers(context: context)
        } else if let backend = self.backend {
            if let backendChannel = backend.channel {
                precondition(
                    backendChannel.eventLoop === context.eventLoop,
                    "the backend channel must live on the client channel's event loop"
                )
            }
            backend.attach(self)
            self.logger.info("session open", metadata: ["backend": "\(TokenRedaction.backend(self.target))"])
            if self.target.tls?.insecure == true {
                self.logger.warning("backend TLS certificate not verified (tls.insecure)", metadata: ["backend": "\(TokenRedaction.backend(self.target))"])
            }
            self.startTimers(context: context)
            backend.deliverEarly()
            if backend.channel?.isActive != true {
                self.backendInactive()
            } else {
                backend.readIfPending()
            }
        } else {
            let failure = self.connectFailure ?? BackendConnectError(kind: .unreachable, detail: "unknown")
            self.logger.info(
                "session open",
                metadata: ["backend": "\(TokenRedaction.backend(self.target))", "error": "\(failure.detail)"]
            )
            self.noteClose(CloseCode.badGateway.rawValue, by: "server", reason: failure.reason)
            self.sendClose(CloseCode.badGateway.rawValue, reason: failure.reason, closeAfterWrite: false)
        }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.cancelTimers()
        self.context = nil
    }

    private func startTimers(context: ChannelHandlerContext) {
        if let interval = self.configuration.pingInterval, interval > .zero {
            self.pingTask = context.eventLoop.scheduleRepeatedTask(initialDelay: interval, delay: interval) {
                [weak self] _ in
                self?.sendPing()
            }
        }
        if let idle = self.idleTimeout, idle > .zero {
            self.scheduleIdleCheck(at: self.lastData + idle)
        }
    }

    private func cancelTimers() {
        self.pingTask?.cancel()
        self.pingTask = nil
        self.pongCheck?.cancel()
        self.pongCheck = nil
        self.idleCheck?.cancel()
        self.idleCheck = nil
        self.clientCloseTimer?.cancel()
        self.clientCloseTimer = nil
    }

    // MARK: client events

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        self.lastReceived = self.now
        switch self.unwrapInboundIn(data) {
        case .dataFrame(let header):
            // Only an echo session's decoder reports frame headers.
            if let frame = self.echo.frameStarted(header) { self.echoBack(frame, context: context) }
        case .data(let buffer) where self.echoes:
            self.bytesUp += UInt64(buffer.readableBytes)
            self.targetMetrics.bytesUp.increment(by: buffer.readableBytes)
            self.lastData = self.lastReceived
            self.echoBack(self.echo.payload(buffer), context: context)
        case .data(let buffer):
            self.bytesUp += UInt64(buffer.readableBytes)
            self.targetMetrics.bytesUp.increment(by: buffer.readableBytes)
            self.recorder?.fromClient(buffer)
            self.lastData = self.lastReceived
            if let backend = self.backend, !self.backendClosed, !self.backendOutputShut {
                backend.write(buffer)
                self.backendNeedsFlush = true
            }
        case .ping(let payload):
            if self.clientPhase == .open {
                context.write(self.wrapOutboundOut(WebSocketFrame(fin: true, opcode: .pong, data: payload)), promise: nil)
                self.clientNeedsFlush = true
            }
        case .pong:
            break  // `lastReceived` already moved: the peer is alive.
        case .close(let code, _):
            switch self.clientPhase {
            case .open:
                self.noteClose(code?.rawValue ?? CloseCode.noStatus.rawValue, by: "client", reason: nil)
                // The client's code is echoed; a Close without one is answered with 1000.
                self.sendClose(code?.rawValue ?? CloseCode.normal.rawValue, reason: "", closeAfterWrite: true)
            case .closeSent:
                self.clientCloseTimer?.cancel()
                self.flushClientIfNeeded(context: context)
                context.close(promise: nil)
            case .closed:
                break
            }
            self.finishBackend()
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        if self.backendNeedsFlush {
            self.backendNeedsFlush = false
            self.backend?.flush()
        }
        self.flushClientIfNeeded(context: context)
        context.fireChannelReadComplete()
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        if let failure = error as? FrameParser.Failure {
            self.logger.debug("client protocol error", metadata: ["error": "\(failure)"])
            if self.clientPhase == .open {
                self.noteClose(failure.code.rawValue, by: "server", reason: failure.reason)
                self.sendClose(failure.code.rawValue, reason: failure.reason, closeAfterWrite: true)
            } else {
                context.close(promise: nil)
            }
            self.finishBackend()
        } else {
            // Resets and broken pipes are ordinary endings: one debug line, then the close path.
            self.logger.debug("client connection error", metadata: ["error": "\(error)"])
            self.noteClose(CloseCode.abnormal.rawValue, by: "client", reason: "\(error)")
            context.close(promise: nil)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        self.clientPhase = .closed
        self.noteClose(CloseCode.abnormal.rawValue, by: "client", reason: "connection lost")
        self.cancelTimers()
        self.finishBackend()
        self.backend?.readIfPending()
        self.finishIfDone()
        context.fireChannelInactive()
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable {
            self.backend?.readIfPending()
            if self.echoes { self.backendBecameWritable() }  // an echo's "backend" is the client itself
        }
        context.fireChannelWritabilityChanged()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is BridgeShutdownEvent {
            if self.clientPhase == .open {
                self.noteClose(CloseCode.goingAway.rawValue, by: "server", reason: "server shutting down")
                self.sendClose(CloseCode.goingAway.rawValue, reason: "server shutting down", closeAfterWrite: false)
            }
        } else if let revocation = event as? BridgeRevocationEvent {
            if self.clientPhase == .open {
                self.noteClose(CloseCode.policyViolation.rawValue, by: "server", reason: revocation.reason)
                self.sendClose(CloseCode.policyViolation.rawValue, reason: revocation.reason, closeAfterWrite: false)
                self.finishBackend()
            }
        } else {
            context.fireUserInboundEventTriggered(event)
        }
    }

    func read(context: ChannelHandlerContext) {
        if let backend = self.backend, !self.backendClosed, !self.backendOutputShut, !backend.isWritable {
            self.pendingClientRead = true
        } else if self.echoes, self.clientPhase == .open, !context.channel.isWritable {
            // An echo writes what it reads to the client: read no more than the client takes.
            self.pendingClientRead = true
        } else {
            context.read()
        }
    }

    /// Sends an echoed frame while the session is open (after our Close, data is no longer sent).
    private func echoBack(_ frame: WebSocketFrame, context: ChannelHandlerContext) {
        guard self.clientPhase == .open else { return }
        self.bytesDown += UInt64(frame.data.readableBytes)
        self.targetMetrics.bytesDown.increment(by: frame.data.readableBytes)
        context.write(self.wrapOutboundOut(frame), promise: nil)
        self.clientNeedsFlush = true
    }

    // MARK: backend events

    func backendBecameWritable() {
        guard self.pendingClientRead, let context = self.context else { return }
        self.pendingClientRead = false
        context.read()
    }

    func backendRead(_ buffer: ByteBuffer) {
        guard self.clientPhase == .open, let context = self.context else { return }
        self.bytesDown += UInt64(buffer.readableBytes)
        self.targetMetrics.bytesDown.increment(by: buffer.readableBytes)
        self.recorder?.toClient(buffer)
        self.lastData = self.now
        context.write(self.wrapOutboundOut(WebSocketFrame(fin: true, opcode: .binary, data: buffer)), promise: nil)
        self.clientNeedsFlush = true
    }

    func backendReadComplete() {
        guard let context = self.context else { return }
        self.flushClientIfNeeded(context: context)
    }

    func backendInputClosed() {
        self.backendSawEOF = true
        if self.clientPhase == .open {
            self.noteClose(CloseCode.normal.rawValue, by: "backend", reason: "backend closed")
            self.sendClose(CloseCode.normal.rawValue, reason: "backend closed", closeAfterWrite: false)
        }
        if self.backendOutputShut {
            self.backend?.channel?.close(promise: nil)
        }
    }

    func backendError(_ error: Error) {
        self.logger.debug("backend connection error", metadata: ["error": "\(error)"])
    }

    func backendInactive() {
        guard !self.backendClosed else { return }
        self.backendClosed = true
        self.backendCloseTimer?.cancel()
        self.backendCloseTimer = nil
        if self.clientPhase == .open {
            self.noteClose(CloseCode.internalError.rawValue, by: "backend", reason: "backend error")
            self.sendClose(CloseCode.internalError.rawValue, reason: "backend error", closeAfterWrite: false)
        }
        // The client must still be read, to see its Close.
        self.backendBecameWritable()
        self.finishIfDone()
    }

    // MARK: closing

    /// The client will send no more data: deliver what was accepted, half-close the backend, and close it when it
    /// sends EOF, all within `closeTimeout`.
    private func finishBackend() {
        guard let backend = self.backend, !self.backendClosed, !self.backendOutputShut,
            let channel = backend.channel
        else { return }
        self.backendOutputShut = true
        self.backendNeedsFlush = false
        let drained = channel.eventLoop.makePromise(of: Void.self)
        channel.writeAndFlush(channel.allocator.buffer(capacity: 0), promise: drained)
        let inputClosed = self.backendSawEOF
        drained.futureResult.whenComplete { result in
            if case .success = result, !inputClosed {
                channel.close(mode: .output, promise: nil)
            } else {
                channel.close(promise: nil)
            }
        }
        self.backendCloseTimer = channel.eventLoop.scheduleTask(in: self.configuration.closeTimeout) {
            channel.close(promise: nil)
        }
        // Reads were held while the backend was full; the client must now be read for its Close.
        self.backendBecameWritable()
        backend.readIfPending()
    }

    private func sendClose(_ code: UInt16?, reason: String, closeAfterWrite: Bool) {
        guard self.clientPhase == .open, let context = self.context else { return }
        self.clientPhase = .closeSent
        self.pingTask?.cancel()
        self.pingTask = nil
        self.idleCheck?.cancel()
        self.idleCheck = nil
        var payload = context.channel.allocator.buffer(capacity: 2 + reason.utf8.count)
        if let code {
            payload.writeInteger(code)
            payload.writeString(Self.truncate(reason, toUTF8Bytes: 123))
        }
        let frame = WebSocketFrame(fin: true, opcode: .connectionClose, data: payload)
        if closeAfterWrite {
            let written = context.eventLoop.makePromise(of: Void.self)
            context.writeAndFlush(self.wrapOutboundOut(frame), promise: written)
            written.futureResult.whenComplete { _ in context.close(promise: nil) }
        } else {
            context.writeAndFlush(self.wrapOutboundOut(frame), promise: nil)
        }
        // Either way the client connection ends within the bound: waiting for its Close, or for a Close frame
        // that a client which does not read would never let us deliver.
        self.clientCloseTimer = context.eventLoop.scheduleTask(in: self.configuration.closeTimeout) {
            context.close(promise: nil)
        }
        self.clientNeedsFlush = false
        // Backend bytes are no longer wanted: read them only to see its EOF.
        self.backend?.readIfPending()
        // An echo holds client reads while the client does not read; its Close must still be read.
        if self.echoes { self.backendBecameWritable() }
    }

    private func noteClose(_ code: UInt16, by side: String, reason: String?) {
        guard self.closeCode == nil else { return }
        self.closeCode = code
        self.closedBy = side
        self.closeReason = reason
    }

    private func flushClientIfNeeded(context: ChannelHandlerContext) {
        if self.clientNeedsFlush {
            self.clientNeedsFlush = false
            context.flush()
        }
    }

    private func finishIfDone() {
        guard !self.finished, self.clientPhase == .closed, self.backend == nil || self.backendClosed else { return }
        self.finished = true
        self.cancelTimers()
        self.backend?.detach()
        self.backend = nil
        let elapsed = self.now - self.startedAt
        let duration = Double(elapsed.nanoseconds) / 1e9
        let code = self.closeCode ?? CloseCode.abnormal.rawValue
        self.targetMetrics.active.decrement()
        self.recorder?.finish()
        self.recorder = nil
        self.targetMetrics.duration.recordNanoseconds(elapsed.nanoseconds)
        self.metrics.sessionClosed(target: self.target.metricLabel, code: code)
        var metadata: Logger.Metadata = [
            "up": .stringConvertible(self.bytesUp),
            "down": .stringConvertible(self.bytesDown),
            "duration": .stringConvertible((duration * 1000).rounded() / 1000),
            "code": .stringConvertible(code),
            "closed_by": "\(self.closedBy ?? "client")",
        ]
        if let reason = self.closeReason, !reason.isEmpty { metadata["reason"] = "\(reason)" }
        self.logger.info("session closed", metadata: metadata)
    }

    // MARK: timers

    private func sendPing() {
        guard self.clientPhase == .open, let context = self.context else { return }
        let sentAt = self.now
        context.writeAndFlush(
            self.wrapOutboundOut(WebSocketFrame(fin: true, opcode: .ping, data: context.channel.allocator.buffer(capacity: 0))),
            promise: nil
        )
        guard self.pongCheck == nil else { return }
        self.pongCheck = context.eventLoop.scheduleTask(in: self.configuration.pongTimeout) { [weak self] in
            guard let self, let context = self.context else { return }
            self.pongCheck = nil
            if self.lastReceived < sentAt && self.clientPhase != .closed {
                self.logger.debug("client did not answer a ping in time")
                self.noteClose(CloseCode.abnormal.rawValue, by: "server", reason: "dead peer")
                context.close(promise: nil)
            }
        }
    }

    private func scheduleIdleCheck(at deadline: NIODeadline) {
        guard let context = self.context, let idle = self.idleTimeout else { return }
        self.idleCheck = context.eventLoop.scheduleTask(deadline: deadline) { [weak self] in
            guard let self, self.clientPhase == .open else { return }
            let due = self.lastData + idle
            if due <= self.now {
                self.noteClose(CloseCode.goingAway.rawValue, by: "server", reason: "idle timeout")
                self.sendClose(CloseCode.goingAway.rawValue, reason: "idle timeout", closeAfterWrite: false)
                self.finishBackend()
            } else {
                self.scheduleIdleCheck(at: due)
            }
        }
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
