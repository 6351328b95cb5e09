import NIOCore
import NIOWebSocket

/// The far end of a session: what the client's data goes to and what the client's frames come from. The backend
/// connection (`BackendHandler`) and the echo target (`EchoPartner`) are the two, so the relay in `SessionHandler`
/// has no branch for either; like the paired glue handlers of swift-nio-examples' `connect-proxy`, but with the
/// WebSocket framing on one side.
///
/// A partner reports to its session through `SessionHandler`'s `partner…` methods; both live on one event loop.
protocol RelayPartner: AnyObject {
    /// Connects the partner to its session and hands over what happened before (early bytes, an early end, a held
    /// read).
    func attach(_ session: SessionHandler)
    /// Stops reporting to the session (it is over).
    func detach()
    /// Whether it can take more data now.
    var isWritable: Bool { get }
    /// It writes what it is given to the client itself (the echo): it can take more exactly while the client can.
    var writesToClient: Bool { get }
    func write(_ data: RelayData)
    func flush()
    /// Issues a `read()` the session held back.
    func read()
    func close(_ mode: SessionStateMachine.PartnerClose)
}

/// The echo target as a partner: what the client sends comes back as the same messages (`EchoFramer`), in order
/// with the bridge's own answers (Pongs); it can take more exactly while the client can (`writesToClient`).
final class EchoPartner: RelayPartner {
    private var session: SessionHandler?
    private var framer = EchoFramer()
    /// Frames sent back since the last flush.
    private var unflushed = false
    private var open = true

    func attach(_ session: SessionHandler) {
        self.session = session
    }

    func detach() {
        self.session = nil
    }

    var isWritable: Bool { true }
    var writesToClient: Bool { true }

    func write(_ data: RelayData) {
        guard self.open, let session = self.session else { return }
        let frame: WebSocketFrame?
        switch data {
        case .frameStart(let header): frame = self.framer.frameStarted(header)
        case .payload(let buffer): frame = self.framer.payload(buffer)
        }
        guard let frame else { return }
        self.unflushed = true
        session.partnerRead(frame)
    }

    func flush() {
        guard self.unflushed, let session = self.session else { return }
        self.unflushed = false
        session.partnerReadComplete()
    }

    func read() {}

    func close(_ mode: SessionStateMachine.PartnerClose) {
        guard self.open else { return }
        self.open = false
        self.session?.partnerInactive()
    }
}
