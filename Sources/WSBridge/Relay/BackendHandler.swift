import NIOCore
import NIOWebSocket

/// The backend end of a session, as its `RelayPartner`: forwards the backend channel's events to the
/// `SessionHandler`, writes the client's payload bytes, and passes `read()` on only when the session allows it
/// (backpressure is decided by the session's state machine).
///
/// Installed when the backend connection is made, before the session exists: until `attach`, reads are held, so
/// bytes a backend sends at once (a VNC banner) wait in the kernel instead of being lost.
final class BackendHandler: ChannelDuplexHandler, RelayPartner {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private var session: SessionHandler?
    private var context: ChannelHandlerContext?
    /// A `read()` asked for before the session attached.
    private var readBeforeAttach = false
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

    var channel: Channel? { self.context?.channel }

    // MARK: RelayPartner

    func attach(_ session: SessionHandler) {
        self.session = session
        let early = self.early
        self.early = []
        for buffer in early { session.partnerRead(Self.frame(buffer)) }
        if !early.isEmpty { session.partnerReadComplete() }
        if self.earlyInputClosed {
            self.earlyInputClosed = false
            session.partnerInputClosed()
        }
        if self.context?.channel.isActive != true {
            session.partnerInactive()
        } else if self.readBeforeAttach {
            self.readBeforeAttach = false
            session.partnerWantsRead()
        }
    }

    func detach() {
        self.session = nil
    }

    var isWritable: Bool { self.context?.channel.isWritable ?? false }
    var writesToClient: Bool { false }

    func write(_ data: RelayData) {
        guard case .payload(let buffer) = data else { return }  // a byte stream has no frames
        self.context?.write(self.wrapOutboundOut(buffer), promise: nil)
    }

    func flush() {
        self.context?.flush()
    }

    func read() {
        self.context?.read()
    }

    func close(_ mode: SessionStateMachine.PartnerClose) {
        guard let channel = self.context?.channel else { return }
        switch mode {
        case .now:
            channel.close(promise: nil)
        case .shutOutput, .drainThenClose:
            // An empty write completes once everything before it is written.
            let drained = channel.eventLoop.makePromise(of: Void.self)
            channel.writeAndFlush(channel.allocator.buffer(capacity: 0), promise: drained)
            drained.futureResult.whenComplete { result in
                if case .success = result, mode == .shutOutput {
                    channel.close(mode: .output, promise: nil)
                } else {
                    channel.close(promise: nil)
                }
            }
        }
    }

    // MARK: channel events

    private static func frame(_ buffer: ByteBuffer) -> WebSocketFrame {
        WebSocketFrame(fin: true, opcode: .binary, data: buffer)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if let session = self.session {
            session.partnerRead(Self.frame(self.unwrapInboundIn(data)))
        } else {
            self.early.append(self.unwrapInboundIn(data))
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        self.session?.partnerReadComplete()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? ChannelEvent, event == .inputClosed {
            if let session = self.session { session.partnerInputClosed() } else { self.earlyInputClosed = true }
        } else {
            context.fireUserInboundEventTriggered(event)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        self.session?.partnerInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        self.session?.partnerError(error)
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        self.session?.partnerWritabilityChanged(context.channel.isWritable)
    }

    func read(context: ChannelHandlerContext) {
        if let session = self.session {
            session.partnerWantsRead()
        } else {
            self.readBeforeAttach = true
        }
    }
}
