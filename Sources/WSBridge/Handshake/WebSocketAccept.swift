import Crypto
import Foundation
import NIOCore
import NIOHTTP1

/// The step at the 101 (RFC 6455 §4.2.2): the answer with its `Sec-WebSocket-Accept`, and the pipeline swap from the
/// handshake owner to the WebSocket codec and the session.
enum WebSocketAccept {
    static let guid = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

    /// Base64 of the SHA-1 of the key and the protocol's GUID (SHA-1 only proves that the server read the key).
    static func value(forKey key: String) -> String {
        Data(Insecure.SHA1.hash(data: Array((key + Self.guid).utf8))).base64EncodedString()
    }

    /// The 101 answer to a request with `key`, naming the `subprotocol` chosen from the client's offer and the
    /// accepted permessage-deflate offer.
    static func switchingProtocols(
        key: String,
        subprotocol: String?,
        compression: DeflateParameters? = nil
    ) -> HTTPResponseHead {
        var headers = HTTPHeaders([
            ("Upgrade", "websocket"), ("Connection", "Upgrade"), ("Sec-WebSocket-Accept", Self.value(forKey: key)),
        ])
        if let subprotocol { headers.add(name: "Sec-WebSocket-Protocol", value: subprotocol) }
        if let compression { headers.add(name: "Sec-WebSocket-Extensions", value: compression.response) }
        return HTTPResponseHead(version: .http1_1, status: .switchingProtocols, headers: headers)
    }

    /// Puts `handlers` in the place of the handler of `context` and of `encoder` (the handshake's HTTP answers),
    /// then hands the first of them the client bytes that came after the request (`early`).
    ///
    /// The handlers are added in pipeline order, so that the frame encoder is in place before the session writes
    /// (a Close 1014 from its `handlerAdded`).
    static func install(
        _ handlers: [ChannelHandler],
        replacing context: ChannelHandlerContext,
        and encoder: HTTPResponseEncoder,
        early: ByteBuffer?
    ) throws {
        let sync = context.pipeline.syncOperations
        sync.removeHandler(encoder, promise: nil)
        var previous = context.handler
        for handler in handlers {
            try sync.addHandler(handler, position: .after(previous))
            previous = handler
        }
        if var early, early.readableBytes > 0 {
            // Keep only what is readable, not the storage of the reads it came in.
            early = early.compacted(allocator: context.channel.allocator)
            context.fireChannelRead(NIOAny(early))
            context.fireChannelReadComplete()
        }
        sync.removeHandler(context: context, promise: nil)
    }
}
