/// The phases of one connection from accept to its 101 (or its refusal), as a value: events in, actions out.
///
/// `HandshakeHandler` drives it; it is tested without sockets. Events that cannot happen in a state fail loudly
/// in debug builds (`assertionFailure`) and are ignored in release builds. Results of asynchronous steps
/// (authentication, token services, the backend connect) that arrive after the connection was refused or closed
/// are expected, and only reported as `.ignore`.
struct HandshakeStateMachine: Equatable {
    enum State: Equatable {
        /// Waiting for the PROXY protocol header (`--proxy-protocol`).
        case proxyHeader
        /// Waiting for the first byte, which tells TLS from plain (`--cert`).
        case tlsDetect
        /// The TLS handshake is running.
        case tlsHandshake
        /// Reading the request head.
        case requestHead
        /// A plain HTTP request (health, readiness, metrics, static files) is being answered.
        case answering
        /// Deciding an upgrade: rate, authentication, policy, token services, session limits.
        case admitting
        /// Admitted; the backend connect runs (under `--connect-timeout`, not the handshake deadline).
        case connecting
        /// The 101 was written and the session installed: this owner is done.
        case upgraded
        /// A refusal is being written; the connection closes after it.
        case refused
        /// The connection is gone.
        case closed
    }

    /// Where the handshake deadline hit, for `wsbridge_handshake_timeouts_total{phase}`.
    enum Phase: String, CaseIterable, Sendable {
        case proxy
        case tls
        case request
        case admission
    }

    enum DeadlineAction: Equatable {
        /// Nothing HTTP can be said yet (PROXY header, TLS): close the socket at once.
        case closeNow(Phase)
        /// Answer 408 (inside TLS when TLS is up) under a short write deadline, then close.
        case answerTimeout(Phase)
        /// The deadline no longer applies.
        case ignore
    }

    enum Result: Equatable {
        case proceed
        /// A late result for a connection that was already refused or closed.
        case ignore
    }

    private(set) var state: State
    /// Bytes of the session kept before the 101 at most (beyond them reads stop until the 101).
    let earlyBytesLimit: Int

    init(proxyProtocol: Bool, tls: Bool, earlyBytesLimit: Int = Self.defaultEarlyBytesLimit) {
        self.state = proxyProtocol ? .proxyHeader : (tls ? .tlsDetect : .requestHead)
        self.tlsConfigured = tls
        self.earlyBytesLimit = earlyBytesLimit
    }

    /// 64 KiB: a websockify client's largest frame, sent with the request (docs/behaviour.md).
    static let defaultEarlyBytesLimit = 64 << 10

    private let tlsConfigured: Bool

    /// Whether the handshake deadline still runs.
    var deadlineApplies: Bool {
        switch self.state {
        case .proxyHeader, .tlsDetect, .tlsHandshake, .requestHead, .admitting: return true
        case .answering, .connecting, .upgraded, .refused, .closed: return false
        }
    }

    /// Whether the connection is still in its handshake (for the handshake caps and the in-progress gauge).
    var inHandshake: Bool {
        switch self.state {
        case .upgraded, .closed: return false
        default: return true
        }
    }

    // MARK: events

    mutating func proxyHeaderReceived() {
        guard case .proxyHeader = self.state else { return self.illegal("PROXY header") }
        self.state = self.tlsConfigured ? .tlsDetect : .requestHead
    }

    mutating func tlsDetected(_ isTLS: Bool) {
        guard case .tlsDetect = self.state else { return self.illegal("TLS detection") }
        self.state = isTLS ? .tlsHandshake : .requestHead
    }

    mutating func tlsHandshakeCompleted() {
        guard case .tlsHandshake = self.state else { return self.illegal("TLS handshake completion") }
        self.state = .requestHead
    }

    /// The request head is complete: an upgrade is admitted, anything else answered.
    mutating func requestHeadReceived(upgrade: Bool) {
        guard case .requestHead = self.state else { return self.illegal("request head") }
        self.state = upgrade ? .admitting : .answering
    }

    /// Admission said yes. With a backend the connect starts; without one (echo, self-check) the 101 follows.
    mutating func admitted(connectsBackend: Bool) -> Result {
        switch self.state {
        case .admitting:
            self.state = connectsBackend ? .connecting : .upgraded
            return .proceed
        case .refused, .closed:
            return .ignore
        default:
            self.illegal("admission")
            return .ignore
        }
    }

    /// The self-check probe skips admission.
    mutating func selfCheckAccepted() {
        guard case .admitting = self.state else { return self.illegal("self-check") }
        self.state = .upgraded
    }

    /// The backend connect finished (either way: a failure is reported after the 101, Close 1014).
    mutating func backendConnectFinished() -> Result {
        switch self.state {
        case .connecting:
            self.state = .upgraded
            return .proceed
        case .refused, .closed:
            return .ignore
        default:
            self.illegal("backend connect")
            return .ignore
        }
    }

    /// The connection is refused with an HTTP answer (or, before any HTTP, closed). Refusing twice is ignored.
    mutating func refuse() -> Result {
        switch self.state {
        case .proxyHeader, .tlsDetect, .tlsHandshake, .requestHead, .admitting, .connecting, .answering:
            self.state = .refused
            return .proceed
        case .refused, .closed:
            return .ignore
        case .upgraded:
            self.illegal("refusal")
            return .ignore
        }
    }

    mutating func deadlineFired() -> DeadlineAction {
        let action: DeadlineAction
        switch self.state {
        case .proxyHeader: action = .closeNow(.proxy)
        case .tlsDetect, .tlsHandshake: action = .closeNow(.tls)
        case .requestHead: action = .answerTimeout(.request)
        case .admitting: action = .answerTimeout(.admission)
        case .answering, .connecting, .upgraded, .refused, .closed: return .ignore
        }
        self.state = .refused
        return action
    }

    mutating func channelClosed() {
        if case .upgraded = self.state { return }  // the session owns the connection now
        self.state = .closed
    }

    // MARK: reads

    /// What to do with client bytes that arrive in the current state.
    enum BytesAction: Equatable {
        /// Feed them to the request head parser.
        case parseHead
        /// Keep them for the session (at most `earlyBytesLimit` plus one read cycle).
        case keepForSession
        /// Drop them: the connection is being answered, refused or closed.
        case discard
    }

    func bytesArrived() -> BytesAction {
        switch self.state {
        case .requestHead: return .parseHead
        case .admitting, .connecting: return .keepForSession
        case .answering, .refused, .closed, .upgraded: return .discard
        case .proxyHeader, .tlsDetect, .tlsHandshake:
            // The PROXY decoder and the TLS detector report their decision before passing bytes on.
            assertionFailure("client bytes before the \(self.state) phase ended")
            return .discard
        }
    }

    /// Whether to let a `read()` through, with `kept` bytes held for the session.
    func mayRead(kept: Int) -> Bool {
        switch self.state {
        case .admitting, .connecting: return kept < self.earlyBytesLimit
        case .upgraded: return true
        default: return true
        }
    }

    private func illegal(_ event: String) {
        assertionFailure("handshake: \(event) in state \(self.state)")
    }
}
