import NIOCore
import NIOWebSocket

/// What the client sends toward its relay partner: a data frame's header (an echo mirrors frames; a backend
/// ignores it) or a piece of a data frame's payload.
enum RelayData: Equatable {
    case frameStart(FrameParser.DataFrameHeader)
    case payload(ByteBuffer)
}

/// Everything that happens to a session after the 101, as one value: events in, actions out.
///
/// The session has two legs, the client (WebSocket frames, through the `SessionHandler` that drives this machine)
/// and its partner (the backend connection, or the echo target). This machine decides what is relayed, what is
/// held back, what the bridge answers itself and how each leg closes, and it owns every deadline of the session:
///
/// - **Backpressure**: the client is not read while the partner takes data and cannot take more; the partner is not
///   read while the client takes data and cannot take more. A leg that no longer takes data is read only to see its
///   end, and what arrives is dropped.
/// - **Replies the bridge makes**: a Pong is written at once while the client can take it; otherwise at most one waits,
///   carrying the latest Ping's payload (RFC 6455 §5.5.3), and the data keeps flowing. Our Close is sent once.
/// - **Liveness**: after a Ping the client is dead only when it could have answered and did not: the pong deadline
///   does not run while this machine holds the client's reads back, and starts again in full once they resume.
/// - **Closing**: the first reason to end a session is the one reported (code, side, reason); the client gets
///   `closeTimeout` to answer our Close, the partner `closeTimeout` to end after its output is shut.
///
/// Illegal events (a second start, an event after the leg it belongs to ended where the channels guarantee it cannot
/// happen) stop debug builds; release builds ignore them.
struct SessionStateMachine {
    struct Settings: Equatable {
        /// A Ping is sent this long after the last one; nil: never.
        var pingInterval: TimeAmount?
        /// How long the client has to answer a Ping (time during which its reads are held does not count).
        var pongTimeout: TimeAmount
        /// The session ends (Close 1001) after this long without data either way; nil: never.
        var idleTimeout: TimeAmount?
        /// How long each leg has to finish its closing handshake.
        var closeTimeout: TimeAmount
    }

    /// The deadlines of a session. The driver keeps at most one of each scheduled.
    enum Timer: Int, CaseIterable {
        case ping, pong, idle, clientClose, partnerClose
    }

    /// Which side ended the session.
    enum Side: String, Equatable {
        case client, server, backend
    }

    /// Why the session ended: the first reason wins.
    struct CloseRecord: Equatable {
        var code: UInt16
        var by: Side
        var reason: String
    }

    /// What the session's log line and metrics report when it is over.
    struct Summary: Equatable {
        var close: CloseRecord
        var bytesUp: UInt64
        var bytesDown: UInt64
    }

    /// How the partner leg is closed.
    enum PartnerClose: Equatable {
        /// Deliver what it was given, then shut its output (its EOF is still awaited).
        case shutOutput
        /// Deliver what it was given, then close it.
        case drainThenClose
        /// Close it now (a deadline passed).
        case now
    }

    enum Event {
        /// The session begins: the partner is connected (`connectFailure` nil) or could not be (the reason, sent to the
        /// page as Close 1014); whether each channel can take more now; whether the partner writes what it is given
        /// to the client itself (the echo: it can take more exactly while the client takes data).
        case start(
            connectFailure: String?,
            clientWritable: Bool,
            partnerWritable: Bool,
            partnerWritesToClient: Bool = false
        )
        case clientFrame(FrameParser.Event)
        case clientReadComplete
        /// The client channel asks to read (the next `read()` of its pipeline).
        case clientReadRequested
        case clientWritability(Bool)
        case clientProtocolError(FrameParser.Failure)
        case clientConnectionError(String)
        case clientInactive
        /// A frame from the partner for the client.
        case partnerData(WebSocketFrame)
        case partnerReadComplete
        case partnerReadRequested
        case partnerWritability(Bool)
        case partnerInputClosed
        case partnerInactive
        case timer(Timer)
        /// The token was removed or now leads elsewhere (or expired): Close 1008.
        case revoked(String)
        /// The server is shutting down: Close 1001, then the usual closing handshake.
        case shutdown
    }

    enum Action: Equatable {
        /// Client data for the partner (counted as bytes up).
        case forwardToPartner(RelayData)
        /// Partner data for the client (counted as bytes down).
        case forwardToClient(WebSocketFrame)
        /// A control frame the bridge makes itself (Ping, Pong).
        case writeToClient(WebSocketFrame)
        case flushClient
        case flushPartner
        /// Our Close frame, written and flushed; with `thenClose` the connection is closed once it is written.
        case sendClose(code: UInt16, reason: String, thenClose: Bool)
        case closeClient
        case closePartner(PartnerClose)
        /// Issue the client's held `read()`.
        case readClient
        /// Issue the partner's held `read()`.
        case readPartner
        case schedule(Timer, NIODeadline)
        case cancel(Timer)
        /// Both legs are closed: report and release.
        case finished(Summary)
    }

    /// Where the client leg stands.
    enum ClientPhase: Equatable {
        /// The session has not started.
        case idle
        /// Data flows both ways.
        case open
        /// Our Close is out; the client's data still goes to the partner until its own Close.
        case closeSent
        /// The closing handshake is over (or broken off): the connection is being closed.
        case closing
        case closed
    }

    /// Where the partner leg stands.
    enum PartnerPhase: Equatable {
        case open
        /// Its input ended (EOF); it still takes the client's data.
        case inputClosed
        /// Its output is shut after the client's last data; its EOF is awaited.
        case outputShut
        /// It is being closed.
        case closing
        case closed
    }

    /// Whether a Ping waits for an answer.
    enum PongWait: Equatable {
        case none
        /// A Ping went out at `sentAt`; the deadline timer runs.
        case waiting(sentAt: NIODeadline)
        /// The deadline passed while the client's reads were held: it runs again in full once they resume.
        case paused(sentAt: NIODeadline)
    }

    let settings: Settings
    private(set) var client = ClientPhase.idle
    private(set) var partner = PartnerPhase.open
    private(set) var clientWritable = true
    private(set) var partnerWritable = true
    /// The partner writes to the client (the echo): its writability is the client's, while the client takes data.
    private var partnerWritesToClient = false
    /// A `read()` of the client is held back.
    private(set) var clientReadHeld = false
    /// A `read()` of the partner is held back.
    private(set) var partnerReadHeld = false
    private var clientNeedsFlush = false
    private var partnerNeedsFlush = false
    /// The Pong that waits for the client to take more: the latest Ping's payload.
    private(set) var pendingPong: ByteBuffer?
    private(set) var pong = PongWait.none
    private var lastReceived = NIODeadline.uptimeNanoseconds(0)
    private var lastData = NIODeadline.uptimeNanoseconds(0)
    private var readsResumedAt = NIODeadline.uptimeNanoseconds(0)
    private(set) var close: CloseRecord?
    private(set) var bytesUp: UInt64 = 0
    private(set) var bytesDown: UInt64 = 0

    init(settings: Settings) {
        self.settings = settings
    }

    /// The client is not read while the partner takes data and cannot take more.
    private var holdsClient: Bool {
        guard self.partnerTakesData else { return false }
        if self.partnerWritesToClient { return self.client == .open && !self.clientWritable }
        return !self.partnerWritable
    }

    /// The partner is not read while the client takes data and cannot take more.
    private var holdsPartner: Bool {
        self.client == .open && !self.clientWritable
    }

    private var partnerTakesData: Bool {
        self.partner == .open || self.partner == .inputClosed
    }

    /// The actions for `event`, as a new array (tests).
    mutating func handle(_ event: Event, now: NIODeadline) -> [Action] {
        var actions: [Action] = []
        self.handle(event, now: now, into: &actions)
        return actions
    }

    /// Appends the actions for `event` to `actions`: the driver reuses one array, so that relaying a frame
    /// allocates none.
    mutating func handle(_ event: Event, now: NIODeadline, into actions: inout [Action]) {
        switch event {
        case .start(let failure, let clientWritable, let partnerWritable, let writesToClient):
            self.partnerWritesToClient = writesToClient
            self.start(
                failure: failure,
                clientWritable: clientWritable,
                partnerWritable: partnerWritable,
                now: now,
                &actions
            )
        case .clientFrame(let frame):
            self.clientFrame(frame, now: now, &actions)
        case .clientReadComplete:
            let flush = self.clientReadComplete()
            if flush.partner { actions.append(.flushPartner) }
            if flush.client { actions.append(.flushClient) }
        case .clientReadRequested:
            if self.clientReadRequested() { actions.append(.readClient) }
        case .clientWritability(let writable):
            self.clientWritable = writable
            if writable, self.client == .open, let payload = self.pendingPong {
                self.pendingPong = nil
                actions.append(.writeToClient(WebSocketFrame(fin: true, opcode: .pong, data: payload)))
                actions.append(.flushClient)
            }
        case .clientProtocolError(let failure):
            switch self.client {
            case .open:
                self.note(failure.code.rawValue, by: .server, reason: failure.reason)
                self.sendClose(failure.code.rawValue, reason: failure.reason, thenClose: true, now: now, &actions)
            case .closeSent:
                self.client = .closing
                actions.append(.closeClient)
            case .idle, .closing, .closed:
                break
            }
            self.finishPartner(now: now, &actions)
        case .clientConnectionError(let description):
            // Resets and broken pipes are ordinary endings; the connection's end follows.
            self.note(CloseCode.abnormal.rawValue, by: .client, reason: description)
            if self.client != .closed {
                self.client = .closing
                actions.append(.closeClient)
            }
        case .clientInactive:
            guard self.client != .closed else { return Self.illegal("the client closed twice") }
            self.client = .closed
            self.pendingPong = nil
            self.pong = .none
            self.note(CloseCode.abnormal.rawValue, by: .client, reason: "connection lost")
            actions.append(contentsOf: [.cancel(.ping), .cancel(.pong), .cancel(.idle), .cancel(.clientClose)])
            self.finishPartner(now: now, &actions)
            self.releaseReads(now: now, &actions)
            self.finishIfDone(&actions)
        case .partnerData(let frame):
            if self.partnerData(frame.data.readableBytes, now: now) { actions.append(.forwardToClient(frame)) }
        case .partnerReadComplete:
            if self.partnerReadComplete() { actions.append(.flushClient) }
        case .partnerReadRequested:
            if self.partnerReadRequested() { actions.append(.readPartner) }
        case .partnerWritability(let writable):
            self.partnerWritable = writable
        case .partnerInputClosed:
            switch self.partner {
            case .open:
                self.partner = .inputClosed
            case .outputShut:
                self.partner = .closing
                actions.append(.closePartner(.now))
            case .inputClosed, .closing, .closed:
                break
            }
            if self.client == .open {
                self.note(CloseCode.normal.rawValue, by: .backend, reason: "backend closed")
                self.sendClose(
                    CloseCode.normal.rawValue,
                    reason: "backend closed",
                    thenClose: false,
                    now: now,
                    &actions
                )
            }
        case .partnerInactive:
            guard self.partner != .closed else { return Self.illegal("the partner closed twice") }
            self.partner = .closed
            self.partnerNeedsFlush = false
            actions.append(.cancel(.partnerClose))
            if self.client == .open {
                self.note(CloseCode.internalError.rawValue, by: .backend, reason: "backend error")
                self.sendClose(
                    CloseCode.internalError.rawValue,
                    reason: "backend error",
                    thenClose: false,
                    now: now,
                    &actions
                )
            }
            self.releaseReads(now: now, &actions)
            self.finishIfDone(&actions)
        case .timer(let timer):
            self.timerFired(timer, now: now, &actions)
        case .revoked(let reason):
            guard self.client == .open else { break }
            self.note(CloseCode.policyViolation.rawValue, by: .server, reason: reason)
            self.sendClose(CloseCode.policyViolation.rawValue, reason: reason, thenClose: false, now: now, &actions)
            self.finishPartner(now: now, &actions)
        case .shutdown:
            guard self.client == .open else { break }
            // The client's data still reaches the backend until the client's own Close.
            self.note(CloseCode.goingAway.rawValue, by: .server, reason: "server shutting down")
            self.sendClose(
                CloseCode.goingAway.rawValue,
                reason: "server shutting down",
                thenClose: false,
                now: now,
                &actions
            )
        }
        self.releaseReads(now: now, &actions)
    }

    // MARK: events

    private mutating func start(
        failure: String?,
        clientWritable: Bool,
        partnerWritable: Bool,
        now: NIODeadline,
        _ actions: inout [Action]
    ) {
        guard self.client == .idle else { return Self.illegal("the session started twice") }
        self.client = .open
        self.clientWritable = clientWritable
        self.partnerWritable = partnerWritable
        self.lastReceived = now
        self.lastData = now
        self.readsResumedAt = now
        if let failure {
            self.partner = .closed
            self.note(CloseCode.badGateway.rawValue, by: .server, reason: failure)
            self.sendClose(CloseCode.badGateway.rawValue, reason: failure, thenClose: false, now: now, &actions)
            return
        }
        if let interval = self.settings.pingInterval, interval > .zero {
            actions.append(.schedule(.ping, now + interval))
        }
        if let idle = self.settings.idleTimeout, idle > .zero {
            actions.append(.schedule(.idle, now + idle))
        }
    }

    private mutating func clientFrame(_ frame: FrameParser.Event, now: NIODeadline, _ actions: inout [Action]) {
        guard self.clientFrameCounts(now: now) else { return }
        switch frame {
        case .dataFrame(let header):
            if self.clientFrameStart(now: now) { actions.append(.forwardToPartner(.frameStart(header))) }
        case .data(let buffer):
            if self.clientPayload(buffer.readableBytes, now: now) {
                actions.append(.forwardToPartner(.payload(buffer)))
            }
        case .ping(let payload):
            guard self.client == .open else { return }
            if self.clientWritable {
                actions.append(.writeToClient(WebSocketFrame(fin: true, opcode: .pong, data: payload)))
                self.clientNeedsFlush = true
            } else {
                // Only the latest Ping needs an answer: a client that pings and never reads holds one Pong.
                self.pendingPong = payload
            }
        case .pong:
            break  // `lastReceived` moved: the peer is alive.
        case .compressed:
            Self.illegal("compressed payload reached the session: the frame decoder inflates it")
        case .close(let code, _):
            if self.client == .open {
                self.note(code?.rawValue ?? CloseCode.noStatus.rawValue, by: .client, reason: "")
                // The client's code is echoed; a Close without one is answered with 1000.
                self.sendClose(
                    code?.rawValue ?? CloseCode.normal.rawValue,
                    reason: "",
                    thenClose: true,
                    now: now,
                    &actions
                )
            } else {
                self.client = .closing
                actions.append(.closeClient)
            }
            self.finishPartner(now: now, &actions)
        }
    }

    // MARK: The relay's hot path
    //
    // The events of every relayed message, decided here without an actions array: the driver calls these directly
    // when it is not carrying out other actions, and `handle` calls the same functions, so each has one decision.

    /// A client data frame starts: true when its header goes to the partner.
    mutating func clientFrameStart(now: NIODeadline) -> Bool {
        guard self.clientFrameCounts(now: now) else { return false }
        return self.forwardsToPartner()
    }

    /// Any client frame shows the peer alive; nothing after the client's Close or a protocol error counts.
    private mutating func clientFrameCounts(now: NIODeadline) -> Bool {
        self.lastReceived = now
        return self.client == .open || self.client == .closeSent
    }

    /// Client payload of `count` bytes: true when it goes to the partner.
    mutating func clientPayload(_ count: Int, now: NIODeadline) -> Bool {
        guard self.clientFrameCounts(now: now) else { return false }
        self.bytesUp += UInt64(count)
        self.lastData = now
        return self.forwardsToPartner()
    }

    /// Once the partner takes no more data (its output shut, or gone), client data is dropped.
    private mutating func forwardsToPartner() -> Bool {
        guard self.partnerTakesData else { return false }
        self.partnerNeedsFlush = true
        return true
    }

    /// The partner read `count` bytes: true when they go to the client. After our Close the client takes no more
    /// data: the partner is read only to see its end.
    mutating func partnerData(_ count: Int, now: NIODeadline) -> Bool {
        guard self.client == .open else { return false }
        self.bytesDown += UInt64(count)
        self.lastData = now
        self.clientNeedsFlush = true
        return true
    }

    /// The client's pipeline asks for a read: true when it may read now; false holds it until the partner can take
    /// more.
    mutating func clientReadRequested() -> Bool {
        guard self.holdsClient else { return true }
        self.clientReadHeld = true
        return false
    }

    /// The partner asks for a read: true when it may read now; false holds it until the client can take more.
    mutating func partnerReadRequested() -> Bool {
        guard self.holdsPartner else { return true }
        self.partnerReadHeld = true
        return false
    }

    /// The end of a client read cycle: which legs have data written and not yet flushed.
    mutating func clientReadComplete() -> (partner: Bool, client: Bool) {
        let flush = (partner: self.partnerNeedsFlush, client: self.clientNeedsFlush)
        self.partnerNeedsFlush = false
        self.clientNeedsFlush = false
        return flush
    }

    /// The end of a partner read cycle: true when the client has data to flush.
    mutating func partnerReadComplete() -> Bool {
        defer { self.clientNeedsFlush = false }
        return self.clientNeedsFlush
    }

    private mutating func timerFired(_ timer: Timer, now: NIODeadline, _ actions: inout [Action]) {
        switch timer {
        case .ping:
            guard self.client == .open, let interval = self.settings.pingInterval else { return }
            actions.append(.writeToClient(WebSocketFrame(fin: true, opcode: .ping, data: ByteBuffer())))
            actions.append(.flushClient)
            actions.append(.schedule(.ping, now + interval))
            if self.pong == .none {
                self.pong = .waiting(sentAt: now)
                actions.append(.schedule(.pong, now + self.settings.pongTimeout))
            }
        case .pong:
            guard self.client == .open, case .waiting(let sentAt) = self.pong else { return }
            if self.lastReceived >= sentAt {
                self.pong = .none  // answered (anything received after the Ping shows the peer is alive)
            } else if self.clientReadHeld {
                self.pong = .paused(sentAt: sentAt)  // its answer may sit unread behind our own backpressure
            } else if max(sentAt, self.readsResumedAt) + self.settings.pongTimeout > now {
                actions.append(.schedule(.pong, max(sentAt, self.readsResumedAt) + self.settings.pongTimeout))
            } else {
                self.pong = .none
                self.note(CloseCode.abnormal.rawValue, by: .server, reason: "dead peer")
                self.client = .closing
                actions.append(contentsOf: [.cancel(.ping), .cancel(.idle), .closeClient])
            }
        case .idle:
            guard self.client == .open, let idle = self.settings.idleTimeout else { return }
            let due = self.lastData + idle
            if due > now {
                actions.append(.schedule(.idle, due))
            } else {
                self.note(CloseCode.goingAway.rawValue, by: .server, reason: "idle timeout")
                self.sendClose(
                    CloseCode.goingAway.rawValue,
                    reason: "idle timeout",
                    thenClose: false,
                    now: now,
                    &actions
                )
                self.finishPartner(now: now, &actions)
            }
        case .clientClose:
            // The client did not answer our Close, or does not read it: the connection ends anyway.
            guard self.client == .closeSent || self.client == .closing else { return }
            self.client = .closing
            actions.append(.closeClient)
        case .partnerClose:
            guard self.partner == .outputShut || self.partner == .closing else { return }
            self.partner = .closing
            actions.append(.closePartner(.now))
        }
    }

    // MARK: closing

    private mutating func note(_ code: UInt16, by side: Side, reason: String) {
        guard self.close == nil else { return }
        self.close = CloseRecord(code: code, by: side, reason: reason)
    }

    /// Starts our side of the closing handshake, once: the Close frame, the open phase's timers stopped, and the
    /// client given `closeTimeout` to answer (or, if it does not read, to be unable to).
    private mutating func sendClose(
        _ code: UInt16,
        reason: String,
        thenClose: Bool,
        now: NIODeadline,
        _ actions: inout [Action]
    ) {
        guard self.client == .open else { return }
        self.client = thenClose ? .closing : .closeSent
        self.pendingPong = nil
        self.pong = .none
        self.clientNeedsFlush = false  // the Close is flushed, and what was written before it with it
        actions.append(contentsOf: [.cancel(.ping), .cancel(.pong), .cancel(.idle)])
        actions.append(.schedule(.clientClose, now + self.settings.closeTimeout))
        actions.append(.sendClose(code: code, reason: reason, thenClose: thenClose))
    }

    /// The client sends no more data: the partner gets what was accepted, then its output is shut (or it is closed,
    /// when its input already ended), within `closeTimeout`.
    private mutating func finishPartner(now: NIODeadline, _ actions: inout [Action]) {
        let mode: PartnerClose
        switch self.partner {
        case .open:
            self.partner = .outputShut
            mode = .shutOutput
        case .inputClosed:
            self.partner = .closing
            mode = .drainThenClose
        case .outputShut, .closing, .closed:
            return
        }
        self.partnerNeedsFlush = false  // the close delivers what was written
        actions.append(.schedule(.partnerClose, now + self.settings.closeTimeout))
        actions.append(.closePartner(mode))
    }

    /// Issues the reads held back whose reason is gone.
    private mutating func releaseReads(now: NIODeadline, _ actions: inout [Action]) {
        if self.clientReadHeld, !self.holdsClient {
            self.clientReadHeld = false
            self.readsResumedAt = now
            actions.append(.readClient)
            if case .paused(let sentAt) = self.pong, self.client == .open {
                self.pong = .waiting(sentAt: sentAt)
                actions.append(.schedule(.pong, now + self.settings.pongTimeout))
            }
        }
        if self.partnerReadHeld, !self.holdsPartner {
            self.partnerReadHeld = false
            actions.append(.readPartner)
        }
    }

    private mutating func flushClientIfNeeded(_ actions: inout [Action]) {
        if self.clientNeedsFlush {
            self.clientNeedsFlush = false
            actions.append(.flushClient)
        }
    }

    /// Called by the two transitions into a leg's `.closed` (each happens once), so the end is reported once.
    private func finishIfDone(_ actions: inout [Action]) {
        guard self.client == .closed, self.partner == .closed else { return }
        let close = self.close ?? CloseRecord(code: CloseCode.abnormal.rawValue, by: .client, reason: "")
        actions.append(.finished(Summary(close: close, bytesUp: self.bytesUp, bytesDown: self.bytesDown)))
    }

    private static func illegal(_ what: String) {
        assertionFailure("SessionStateMachine: \(what)")
    }
}
