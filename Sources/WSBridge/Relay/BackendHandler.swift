import NIOCore

/// The backend end of a session: forwards the backend channel's events to the `SessionHandler` and holds back
/// `read()` while the client cannot take more (backpressure).
///
/// Installed when the backend connection is made, before the session exists: until `attach`, reads are held, so
/// bytes a backend sends at once (a VNC banner) wait in the kernel instead of being lost.
final class BackendHandler: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private var session: SessionHandler?
    private var context: ChannelHandlerContext?
    private var pendingRead = false
    /// Bytes (and an EOF) that arrived before the session attached: a TLS backend's first data can come with the
    /// end of its handshake, before reads are held. Bounded by one read.
    private var early: [ByteBuffer] = []
    private var earlyInputClosed = false

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
        self.session = nil
    }

    /// Connects this backend to its session; both live on the same event loop.
    func attach(_ session: SessionHandler) {
        self.session = session
    }

    /// Hands the session what arrived before it attached.
    func deliverEarly() {
        guard let session = self.session else { return }
        let early = self.early
        self.early = []
        for buffer in early { session.backendRead(buffer) }
        if !early.isEmpty { session.backendReadComplete() }
        if self.earlyInputClosed {
            self.earlyInputClosed = false
            session.backendInputClosed()
        }
    }

    func detach() {
        self.session = nil
    }

    var channel: Channel? { self.context?.channel }
    var isWritable: Bool { self.context?.channel.isWritable ?? false }

    func write(_ buffer: ByteBuffer) {
        self.context?.write(self.wrapOutboundOut(buffer), promise: nil)
    }

    func flush() {
        self.context?.flush()
    }

    /// Issues a `read()` held back earlier.
    func readIfPending() {
        guard self.pendingRead, let context = self.context else { return }
        self.pendingRead = false
        context.read()
    }

    // MARK: events

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if let session = self.session {
            session.backendRead(self.unwrapInboundIn(data))
        } else {
            self.early.append(self.unwrapInboundIn(data))
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        self.session?.backendReadComplete()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? ChannelEvent, event == .inputClosed {
            if let session = self.session { session.backendInputClosed() } else { self.earlyInputClosed = true }
        } else {
            context.fireUserInboundEventTriggered(event)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        self.session?.backendInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        self.session?.backendError(error)
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable {
            self.session?.backendBecameWritable()
        }
    }

    func read(context: ChannelHandlerContext) {
        if let session = self.session, session.clientIsWritable {
            context.read()
        } else {
            self.pendingRead = true
        }
    }
}
