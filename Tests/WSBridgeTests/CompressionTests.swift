import NIOCore
import NIOEmbedded
import NIOWebSocket
import XCTest

@testable import WSBridge

/// permessage-deflate (RFC 7692): the negotiation as a pure function, the inflater and deflater against the RFC's
/// own bytes, the parser's RSV1 rules, and the decoder's bound on what one read cycle may inflate.
final class CompressionTests: XCTestCase {
    // MARK: negotiation (RFC 7692 §5, §7.1)

    private func negotiate(_ values: String...) -> String? {
        DeflateNegotiation.negotiate(offers: values)?.response
    }

    func testAcceptsTheOffersBrowsersAndLibrariesMake() {
        // Chromium and Firefox
        XCTAssertEqual(
            self.negotiate("permessage-deflate; client_max_window_bits"),
            "permessage-deflate; client_max_window_bits=12"
        )
        // A bare offer: no window parameter may be answered.
        XCTAssertEqual(self.negotiate("permessage-deflate"), "permessage-deflate")
        let bare = DeflateNegotiation.negotiate(offers: ["permessage-deflate"])
        XCTAssertEqual(bare?.clientWindowBits, 15)
        XCTAssertEqual(bare?.serverWindowBits, DeflateNegotiation.preferredWindowBits)
        XCTAssertEqual(bare?.serverNoContextTakeover, false)
        // Every parameter, answered as offered (windows no larger than the offer's)
        let all = DeflateNegotiation.negotiate(offers: [
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=10; client_max_window_bits=9"
        ])
        XCTAssertEqual(
            all?.response,
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=10; client_max_window_bits=9"
        )
        XCTAssertEqual(all?.serverWindowBits, 10)
        XCTAssertEqual(all?.clientWindowBits, 9)
        XCTAssertEqual(all?.serverNoContextTakeover, true)
        XCTAssertEqual(all?.clientNoContextTakeover, true)
        // A larger window asked for is still answered with the bridge's smaller one.
        XCTAssertEqual(
            self.negotiate("permessage-deflate; server_max_window_bits=15"),
            "permessage-deflate; server_max_window_bits=12"
        )
        // Quoted values and other case
        XCTAssertEqual(
            self.negotiate("Permessage-Deflate; Client_Max_Window_Bits=\"10\""),
            "permessage-deflate; client_max_window_bits=10"
        )
    }

    func testDeclinesOffersTheRFCSaysToDecline() {
        for offer in [
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",  // twice
            "permessage-deflate; client_max_window_bits; client_max_window_bits=10",
            "permessage-deflate; unknown_parameter",
            "permessage-deflate; server_max_window_bits",  // needs a value
            "permessage-deflate; server_max_window_bits=16",
            "permessage-deflate; server_max_window_bits=7",
            "permessage-deflate; server_max_window_bits=010",  // leading zero
            "permessage-deflate; client_max_window_bits=0",
            "permessage-deflate; client_max_window_bits=abc",
            "permessage-deflate; server_no_context_takeover=1",  // takes no value
            "permessage-deflate; client_no_context_takeover=\"\"",
            "permessage-deflate; server_max_window_bits=8",  // zlib's raw deflate has no 256-byte window
            "permessage-deflate; client_max_window_bits=\"1 0\"",
            "x-webkit-deflate-frame",
            "",
        ] {
            XCTAssertNil(self.negotiate(offer), offer)
        }
    }

    func testTheFirstAcceptableOfferWins() {
        // An offer zlib cannot honour (a 256-byte window) first, a fallback after it: the fallback is taken.
        XCTAssertEqual(
            self.negotiate("permessage-deflate; server_max_window_bits=8, permessage-deflate; client_max_window_bits"),
            "permessage-deflate; client_max_window_bits=12"
        )
        XCTAssertEqual(
            self.negotiate("foo; bar=\"a,b\", permessage-deflate; server_no_context_takeover", "permessage-deflate"),
            "permessage-deflate; server_no_context_takeover"
        )
        // An offer of 8 for the client's window is left unanswered: the bridge inflates with 15.
        let eight = DeflateNegotiation.negotiate(offers: ["permessage-deflate; client_max_window_bits=8"])
        XCTAssertEqual(eight?.response, "permessage-deflate")
        XCTAssertEqual(eight?.clientWindowBits, 15)
    }

    // MARK: inflating

    private let allocator = ByteBufferAllocator()

    /// Everything `inflater` yields for what was fed, and whether the message ended.
    private func drain(_ inflater: MessageInflater, limit: Int = 1 << 16) throws -> ([UInt8], Bool) {
        var bytes: [UInt8] = []
        while true {
            switch try inflater.next(limit: limit, allocator: self.allocator) {
            case .piece(let piece):
                XCTAssertLessThanOrEqual(piece.readableBytes, limit)
                bytes += piece.readableBytesView
            case .needsInput:
                return (bytes, false)
            case .endOfMessage:
                return (bytes, true)
            }
        }
    }

    func testInflatesTheRFCExamples() throws {
        // RFC 7692 §7.2.3.1 and §7.2.3.2: "Hello", then "Hello" again referring back into the window.
        let inflater = MessageInflater(windowBits: 15, freesAfterMessage: false, maxMessageSize: 1 << 20)
        inflater.feed(ByteBuffer(bytes: [0xF2, 0x48, 0xCD, 0xC9, 0xC9, 0x07, 0x00]), endsMessage: true)
        XCTAssertEqual(try self.drain(inflater).0, Array("Hello".utf8))
        inflater.feed(ByteBuffer(bytes: [0xF2, 0x00, 0x11, 0x00, 0x00]), endsMessage: true)
        let (second, ended) = try self.drain(inflater)
        XCTAssertEqual(second, Array("Hello".utf8))
        XCTAssertTrue(ended)
        // §7.2.3.3: no compression (a stored block), in two fragments; §7.2.3.6: an empty message.
        inflater.feed(ByteBuffer(bytes: [0x00, 0x05, 0x00, 0xFA, 0xFF]), endsMessage: false)
        XCTAssertEqual(try self.drain(inflater).1, false)
        inflater.feed(ByteBuffer(bytes: Array("Hello".utf8) + [0x00]), endsMessage: true)
        XCTAssertEqual(try self.drain(inflater).0, Array("Hello".utf8))
        inflater.feed(ByteBuffer(bytes: [0x00]), endsMessage: true)
        XCTAssertEqual(try self.drain(inflater).0, [])
    }

    func testDeflaterOutputInflatesByteForByteWithAndWithoutContext() throws {
        for freeing in [false, true] {
            let deflater = MessageDeflater(windowBits: 12, freesAfterMessage: freeing)
            let inflater = MessageInflater(windowBits: 12, freesAfterMessage: freeing, maxMessageSize: 1 << 24)
            var line = Array("wsbridge: session open client=10.0.0.1 target=console\r\n".utf8)
            for round in 0..<50 {
                line[line.count - 3] = UInt8(ascii: "a") + UInt8(round % 26)
                // Some messages in several frames, one of them empty.
                let frames: [[UInt8]] = round % 5 == 0 ? [Array(line[..<10]), [], Array(line[10...])] : [line]
                for (index, frame) in frames.enumerated() {
                    let ends = index == frames.count - 1
                    let compressed = try deflater.compress(
                        ByteBuffer(bytes: frame),
                        endsMessage: ends,
                        allocator: self.allocator
                    )
                    inflater.feed(compressed, endsMessage: ends)
                }
                let (bytes, ended) = try self.drain(inflater)
                XCTAssertEqual(bytes, line, "round \(round)")
                XCTAssertTrue(ended)
                XCTAssertEqual(deflater.holdsState, !freeing)
                XCTAssertEqual(inflater.holdsState, !freeing)
            }
        }
        // With context takeover a repeated line costs a few bytes.
        let deflater = MessageDeflater(windowBits: 12, freesAfterMessage: false)
        let line = ByteBuffer(string: "the same log line, repeated, as terminals do\r\n")
        let first = try deflater.compress(line, endsMessage: true, allocator: self.allocator)
        let again = try deflater.compress(line, endsMessage: true, allocator: self.allocator)
        XCTAssertLessThan(again.readableBytes, first.readableBytes / 3)
    }

    func testAnEmptyMessageAfterAFlushedFrameStaysDecodable() throws {
        // The echo ends an inflated message with an empty final frame: zlib has nothing to flush then, and the
        // deflater must still send a block the receiver can complete with 00 00 FF FF.
        let deflater = MessageDeflater(windowBits: 12, freesAfterMessage: false)
        let inflater = MessageInflater(windowBits: 12, freesAfterMessage: false, maxMessageSize: 1 << 20)
        let start = try deflater.compress(ByteBuffer(string: "abc"), endsMessage: false, allocator: self.allocator)
        let end = try deflater.compress(ByteBuffer(), endsMessage: true, allocator: self.allocator)
        XCTAssertEqual(Array(end.readableBytesView), [0x00])
        inflater.feed(start, endsMessage: false)
        inflater.feed(end, endsMessage: true)
        XCTAssertEqual(try self.drain(inflater).0, Array("abc".utf8))
        // and the stream goes on: a next message refers back to "abc"
        let next = try deflater.compress(ByteBuffer(string: "abcabc"), endsMessage: true, allocator: self.allocator)
        inflater.feed(next, endsMessage: true)
        XCTAssertEqual(try self.drain(inflater).0, Array("abcabc".utf8))
    }

    /// A message of `count` zero bytes, deflated as a client would send it.
    private func bomb(_ count: Int) throws -> ByteBuffer {
        let deflater = MessageDeflater(windowBits: 15, freesAfterMessage: true)
        return try deflater.compress(
            ByteBuffer(repeating: 0, count: count),
            endsMessage: true,
            allocator: self.allocator
        )
    }

    func testABombIsInflatedInPiecesAndStoppedAtTheMessageLimit() throws {
        let compressed = try self.bomb(16 << 20)
        XCTAssertLessThan(compressed.readableBytes, 128 << 10)  // 16 MiB in under 128 KiB (zlib level 1)
        let inflater = MessageInflater(windowBits: 15, freesAfterMessage: false, maxMessageSize: 1 << 20)
        inflater.feed(compressed, endsMessage: true)
        var inflated = 0
        XCTAssertThrowsError(
            try {
                while case .piece(let piece) = try inflater.next(limit: 16 << 10, allocator: self.allocator) {
                    XCTAssertLessThanOrEqual(piece.readableBytes, 16 << 10)
                    inflated += piece.readableBytes
                }
            }()
        ) { error in
            XCTAssertEqual(error as? FrameParser.Failure, FrameParser.Failure(.tooBig, "message too big"))
        }
        // Stopped within one piece of the limit.
        XCTAssertLessThanOrEqual(inflated, 1 << 20)
        XCTAssertGreaterThan(inflated, (1 << 20) - (16 << 10) * 2)
    }

    func testInvalidDeflateDataIs1007() {
        let inflater = MessageInflater(windowBits: 15, freesAfterMessage: false, maxMessageSize: 1 << 20)
        // BTYPE 11 (reserved) in the first block header
        inflater.feed(ByteBuffer(bytes: [0xFF, 0xFF, 0xFF]), endsMessage: true)
        XCTAssertThrowsError(try self.drain(inflater)) { error in
            XCTAssertEqual(
                error as? FrameParser.Failure,
                FrameParser.Failure(.invalidPayload, "invalid compressed data")
            )
        }
    }

    // MARK: the parser's RSV1 rules (RFC 7692 §6.1)

    private func parse(_ frames: [FrameBuilder], compression: Bool) -> ([FrameParser.Event], FrameParser.Failure?) {
        var parser = FrameParser(allowsCompression: compression)
        var buffer = ByteBuffer(bytes: frames.flatMap(\.bytes))
        var events: [FrameParser.Event] = []
        do {
            while let event = try parser.next(&buffer) { events.append(event) }
        } catch {
            return (events, error as? FrameParser.Failure)
        }
        return (events, nil)
    }

    private func compressed(_ builder: FrameBuilder) -> FrameBuilder {
        var builder = builder
        builder.rsv = 0b100
        return builder
    }

    func testRSV1MarksTheFirstFrameOfADataMessageOnly() {
        let protocolError = { (reason: String) in FrameParser.Failure(.protocolError, reason) }
        XCTAssertEqual(
            self.parse([self.compressed(.binary([1]))], compression: false).1,
            protocolError("reserved bits set")
        )
        XCTAssertEqual(
            self.parse([.binary([1], fin: false), self.compressed(.init(opcode: 0, payload: [2]))], compression: true)
                .1,
            protocolError("RSV1 set on a continuation frame")
        )
        XCTAssertEqual(
            self.parse([self.compressed(.init(opcode: 0x9, payload: []))], compression: true).1,
            protocolError("compressed control frame")
        )
        var rsv2 = FrameBuilder.binary([1])
        rsv2.rsv = 0b010
        XCTAssertEqual(self.parse([rsv2], compression: true).1, protocolError("reserved bits set"))

        // A compressed message in three frames, a Ping between them; an uncompressed one after it.
        let (events, failure) = self.parse(
            [
                self.compressed(.text("ab", fin: false)), .init(opcode: 0x9, payload: [7]),
                .init(opcode: 0, payload: [], fin: false), .init(opcode: 0, payload: Array("c".utf8)),
                .text("plain"),
            ],
            compression: true
        )
        XCTAssertNil(failure)
        let expected: [FrameParser.Event] = [
            .compressed(.init(bytes: ByteBuffer(string: "ab"), opcode: .text, endsMessage: false)),
            .ping(ByteBuffer(bytes: [7])),
            .compressed(.init(bytes: ByteBuffer(string: "c"), opcode: .text, endsMessage: true)),
            .data(ByteBuffer(string: "plain")),
        ]
        XCTAssertEqual(events, expected)
        // An empty final frame still ends the message; compressed payload is not checked as UTF-8.
        let (empty, _) = self.parse(
            [self.compressed(.init(opcode: 0x1, payload: [0xFF], fin: false)), .init(opcode: 0, payload: [])],
            compression: true
        )
        XCTAssertEqual(
            empty,
            [
                .compressed(.init(bytes: ByteBuffer(bytes: [0xFF]), opcode: .text, endsMessage: false)),
                .compressed(.init(bytes: ByteBuffer(), opcode: .text, endsMessage: true)),
            ]
        )
    }

    // MARK: the decoder: a bounded amount inflated per read cycle

    /// Counts what reaches the session, and the read() calls that reach the socket.
    private final class Sink: ChannelDuplexHandler {
        typealias InboundIn = FrameParser.Event
        typealias OutboundIn = NIOAny
        var bytes = 0
        var allZero = true
        var events: [FrameParser.Event] = []
        var errors: [Error] = []
        static let zeros = [UInt8](repeating: 0, count: 64 << 10)
        /// Most inflated bytes between two ends of a read cycle.
        var mostPerCycle = 0
        private var cycleBytes = 0
        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            let event = self.unwrapInboundIn(data)
            if case .data(let buffer) = event {
                self.bytes += buffer.readableBytes
                self.cycleBytes += buffer.readableBytes
                self.mostPerCycle = max(self.mostPerCycle, self.cycleBytes)
                if self.allZero {
                    // memcmp: a byte-by-byte loop over megabytes is slow in debug builds.
                    self.allZero = buffer.withUnsafeReadableBytes { bytes in
                        Self.zeros.withUnsafeBytes { memcmp(bytes.baseAddress!, $0.baseAddress!, bytes.count) == 0 }
                    }
                }
            } else {
                self.events.append(event)
            }
        }
        func channelReadComplete(context: ChannelHandlerContext) { self.cycleBytes = 0 }
        func errorCaught(context: ChannelHandlerContext, error: Error) { self.errors.append(error) }
    }

    private final class ReadCounter: ChannelOutboundHandler {
        typealias OutboundIn = NIOAny
        var reads = 0
        func read(context: ChannelHandlerContext) {
            self.reads += 1
            context.read()
        }
    }

    private func decoder(budget: Int, maxMessageSize: UInt64 = 16 << 20) throws -> (EmbeddedChannel, Sink, ReadCounter)
    {
        let channel = EmbeddedChannel()
        let counter = ReadCounter()
        let sink = Sink()
        try channel.pipeline.syncOperations.addHandlers([
            counter,
            FrameDecoderHandler(
                maxFrameSize: 1 << 20,
                maxMessageSize: maxMessageSize,
                compression: DeflateParameters(),
                inflateBudget: budget
            ),
            sink,
        ])
        return (channel, sink, counter)
    }

    func testEachReadCycleInflatesAtMostItsBudget() throws {
        let size = 4 << 20
        let budget = 100_000  // not a power of two: the pieces must still add up to no more
        let (channel, sink, counter) = try self.decoder(budget: budget)
        var frame = FrameBuilder.binary(Array(try self.bomb(size).readableBytesView))
        frame.rsv = 0b100
        // A Ping after the message: it must wait behind it, not overtake it.
        try channel.writeInbound(ByteBuffer(bytes: frame.bytes + FrameBuilder(opcode: 0x9, payload: [1]).bytes))
        XCTAssertEqual(sink.bytes, sink.mostPerCycle)
        XCTAssertGreaterThan(sink.bytes, 0)
        XCTAssertTrue(sink.events.isEmpty)
        // Without a read() (a session holding reads: its partner is full) nothing more comes.
        (channel.eventLoop as! EmbeddedEventLoop).run()
        XCTAssertEqual(sink.bytes, sink.mostPerCycle)
        let socketReads = counter.reads
        channel.read()  // the session asks for the next cycle: one more budget, then each asks for the next
        XCTAssertLessThanOrEqual(sink.bytes, 2 * budget)
        (channel.eventLoop as! EmbeddedEventLoop).run()
        XCTAssertEqual(counter.reads, socketReads + 1, "the socket is read again only once the backlog is used up")
        XCTAssertEqual(sink.bytes, size)
        XCTAssertTrue(sink.allZero)
        XCTAssertLessThanOrEqual(sink.mostPerCycle, budget)
        XCTAssertGreaterThan(sink.mostPerCycle, budget / 2)
        XCTAssertEqual(sink.events, [.ping(ByteBuffer(bytes: [1]))])
        XCTAssertTrue(sink.errors.isEmpty)
    }

    func testABombThroughTheDecoderEndsWith1009AndHoldsNoMore() throws {
        let (channel, sink, _) = try self.decoder(budget: 1 << 20, maxMessageSize: 2 << 20)
        var frame = FrameBuilder.binary(Array(try self.bomb(16 << 20).readableBytesView))
        frame.rsv = 0b100
        try channel.writeInbound(ByteBuffer(bytes: frame.bytes))
        for _ in 0..<8 {
            channel.read()
            (channel.eventLoop as! EmbeddedEventLoop).run()
        }
        XCTAssertEqual(sink.errors.compactMap { $0 as? FrameParser.Failure }, [.init(.tooBig, "message too big")])
        XCTAssertLessThanOrEqual(sink.bytes, 2 << 20)
    }

    func testInvalidUTF8InAnInflatedTextMessageIs1007() throws {
        let (channel, sink, _) = try self.decoder(budget: 1 << 20)
        let deflater = MessageDeflater(windowBits: 12, freesAfterMessage: false)
        let payload = try deflater.compress(
            ByteBuffer(bytes: [0x61, 0xC3]),
            endsMessage: true,
            allocator: self.allocator
        )
        var frame = FrameBuilder.text("")
        frame.payload = Array(payload.readableBytesView)
        frame.rsv = 0b100
        try channel.writeInbound(ByteBuffer(bytes: frame.bytes))
        XCTAssertEqual(
            sink.errors.compactMap { $0 as? FrameParser.Failure },
            [.init(.invalidPayload, "invalid UTF-8 in text message")]
        )
    }
}
