import NIOCore

@testable import WSBridge

#if canImport(Glibc)
    import Glibc
#endif

// The harness of Fuzz/Sources/FuzzFrameParser (whose FuzzFrameParserHarness.swift is a symlink to this file), compiled
// into the fuzzer by Fuzz/Package.swift and into WSBridgeTests, where FuzzCorpusReplayTests runs every seed of
// Fuzz/corpus/FuzzFrameParser and every crash reproducer of Fuzz/reproducers/FuzzFrameParser through it on each `swift test`:
// a finding traps (fatalError), which fails the run. The comments below are the harness's own.
enum FuzzFrameParserHarness {
    // Fuzzes the streaming client-frame parser (FrameParser) with arbitrary bytes.
    //
    // Input: byte 0 seeds how the rest is cut into reads; byte 1 picks the options (reportsDataFrames, the frame size
    // limit, permessage-deflate); the rest is what a client sends. With permessage-deflate, compressed messages go
    // through a MessageInflater too, in pieces of another size in each run, and their inflated bytes must not
    // depend on the cut or the piece size, nor a piece be larger than asked for. The parser runs twice, on the whole input at once and in reads of
    // pseudo-random sizes, and the harness traps when
    //   - the two runs disagree (payload, control events, frame headers, failure), beyond what the cut explains;
    //   - a .data event is empty, or the payloads after a frame header do not add up to its length;
    //   - a control payload is over 125 bytes, or a Close carries a code that is not valid on the wire;
    //   - a text message that completed is not valid UTF-8 according to the standard library (the parser's own
    //     validator is the one under test), or one that failed as invalid UTF-8 is valid;
    //   - the echo framing (what an echo target sends back) does not carry the same payload.

    struct Run: Equatable {
        var payload: [UInt8] = []
        var controls: [String] = []
        var headers: [FrameParser.DataFrameHeader] = []
        var failure: FrameParser.Failure?
        /// Compressed payload as the parser handed it out, and what the inflater made of it.
        var compressed: [UInt8] = []
        var inflated: [UInt8] = []
        var inflateFailure: FrameParser.Failure?
    }

    struct SplitMix {
        var state: UInt64
        mutating func next() -> UInt64 {
            self.state &+= 0x9E37_79B9_7F4A_7C15
            var z = self.state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
    }

    static func check(_ condition: Bool, _ message: @autoclosure () -> String) {
        if !condition { fatalError("fuzz finding: \(message())") }
    }

    static func parse(
        _ bytes: [UInt8],
        chunks: [Int],
        reports: Bool,
        maxFrameSize: UInt64,
        compression: Bool = false,
        pieceLimit: Int = 1 << 16
    ) -> Run {
        var parser = FrameParser(maxFrameSize: maxFrameSize, reportsDataFrames: reports, allowsCompression: compression)
        let inflater = MessageInflater(windowBits: 15, freesAfterMessage: false, maxMessageSize: 1 << 20)
        var run = Run()
        var pending = ByteBuffer()
        var offset = 0
        // Per frame and per message bookkeeping for the invariants.
        var remainingInFrame: UInt64 = 0
        var frameIsFinal = false
        var messageIsText = false
        var messageBytes: [UInt8] = []
        var echo = EchoFramer()
        var echoed: [UInt8] = []

        func endOfFrameIfDone() {
            guard reports, remainingInFrame == 0, frameIsFinal else { return }
            if messageIsText {
                check(
                    String(validating: messageBytes, as: UTF8.self) != nil,
                    "a completed text message is not UTF-8: \(messageBytes)"
                )
            }
            messageBytes = []
            frameIsFinal = false
        }

        for size in chunks where offset < bytes.count {
            let end = min(bytes.count, offset + size)
            pending.writeBytes(bytes[offset..<end])
            offset = end
            do {
                while let event = try parser.next(&pending) {
                    switch event {
                    case .dataFrame(let header):
                        check(reports, "a header event from a parser that does not report them")
                        check(remainingInFrame == 0, "a frame header inside the previous frame's payload")
                        run.headers.append(header)
                        remainingInFrame = header.length
                        frameIsFinal = header.fin
                        if header.opcode != .continuation { messageIsText = header.opcode == .text }
                        if let frame = echo.frameStarted(header) {
                            check(frame.data.readableBytes == 0, "an echo of an empty frame carries bytes")
                        }
                        endOfFrameIfDone()
                    case .data(let buffer):
                        check(buffer.readableBytes > 0, "an empty .data event")
                        let chunk = Array(buffer.readableBytesView)
                        run.payload += chunk
                        if reports {
                            check(UInt64(chunk.count) <= remainingInFrame, "more payload than the header announced")
                            remainingInFrame -= UInt64(chunk.count)
                            messageBytes += chunk
                            let frame = echo.payload(buffer)
                            echoed += frame.data.readableBytesView
                            endOfFrameIfDone()
                        }
                    case .ping(let payload):
                        check(payload.readableBytes <= 125, "a ping over 125 bytes")
                        run.controls.append("ping \(Array(payload.readableBytesView))")
                    case .pong(let payload):
                        check(payload.readableBytes <= 125, "a pong over 125 bytes")
                        run.controls.append("pong \(Array(payload.readableBytesView))")
                    case .close(let code, let reason):
                        if let code { check(code.isValidOnWire, "a Close with code \(code) was accepted") }
                        check(reason.utf8.count <= 123, "a close reason over 123 bytes")
                        run.controls.append("close \(String(describing: code)) \(reason)")
                    case .compressed(let piece):
                        check(compression, "a compressed payload from a parser made without compression")
                        check(piece.bytes.readableBytes > 0 || piece.endsMessage, "an empty compressed piece")
                        run.compressed += piece.bytes.readableBytesView
                        guard run.inflateFailure == nil else { break }
                        inflater.feed(piece.bytes, endsMessage: piece.endsMessage)
                        do {
                            while case .piece(let out) = try inflater.next(
                                limit: pieceLimit,
                                allocator: ByteBufferAllocator()
                            ) {
                                check(out.readableBytes > 0, "an empty inflated piece")
                                check(out.readableBytes <= pieceLimit, "an inflated piece larger than asked for")
                                run.inflated += out.readableBytesView
                            }
                        } catch {
                            run.inflateFailure = error as? FrameParser.Failure
                            check(run.inflateFailure != nil, "an inflater error that is not a Failure: \(error)")
                        }
                    }
                }
            } catch let failure as FrameParser.Failure {
                run.failure = failure
                if failure.code == .invalidPayload, failure.reason == "invalid UTF-8 in text message", reports {
                    // What was handed out is a valid prefix; with the rest of the frame in this read it must not be
                    // valid UTF-8 as a whole message (else the parser refused a valid message).
                    check(messageIsText, "a UTF-8 failure outside a text message")
                }
                break
            } catch {
                check(false, "an error that is not a FrameParser.Failure: \(error)")
            }
            if run.failure != nil { break }
        }
        if reports { check(echoed == run.payload, "the echo framing lost or changed payload bytes") }
        return run
    }

    static func testOneInput(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
        guard size >= 2 else { return 0 }
        let input = Array(UnsafeBufferPointer(start: data, count: size))
        var random = SplitMix(state: UInt64(input[0]) &* 0x1000_0001)
        let reports = input[1] & 1 != 0
        let maxFrameSize: UInt64 = [16, 125, 126, 65535, 65536, 1 << 20, 64 << 20, UInt64.max >> 1][
            Int(input[1] >> 1) & 7
        ]
        let compression = input[1] & 0x10 != 0
        let bytes = Array(input[2...])

        var chunks: [Int] = []
        var total = 0
        while total < bytes.count {
            let n = Int(random.next() % 9) == 0 ? 1 : Int(random.next() % 64) + 1
            chunks.append(n)
            total += n
        }
        let whole = parse(
            bytes,
            chunks: [max(1, bytes.count)],
            reports: reports,
            maxFrameSize: maxFrameSize,
            compression: compression
        )
        // Pieces of 1 to 4096 bytes (a power of two, as the frame decoder asks for).
        let cut = parse(
            bytes,
            chunks: chunks,
            reports: reports,
            maxFrameSize: maxFrameSize,
            compression: compression,
            pieceLimit: 1 << Int(random.next() % 13)
        )
        if compression {
            // What was inflated before either run stopped agrees; without a failure, all of it.
            check(
                isPrefix(whole.inflated, of: cut.inflated) || isPrefix(cut.inflated, of: whole.inflated),
                "inflated bytes depend on the cut or the piece size"
            )
            if whole.failure == nil && cut.failure == nil {
                check(whole.inflateFailure == cut.inflateFailure, "the inflater failed in one run only")
            }
        }

        check(
            whole.failure == cut.failure,
            "whole: \(String(describing: whole.failure)), cut: \(String(describing: cut.failure))"
        )
        if whole.failure == nil {
            // The inflated bytes were compared above: before a 1009 their amount depends on the piece size.
            var (wholeEvents, cutEvents) = (whole, cut)
            (wholeEvents.inflated, cutEvents.inflated) = ([], [])
            (wholeEvents.inflateFailure, cutEvents.inflateFailure) = (nil, nil)
            check(wholeEvents == cutEvents, "the same bytes in other reads gave other events")
        } else {
            // On a failure the cut run may have handed out more of a frame's valid prefix; nothing else may differ.
            check(
                isPrefix(whole.payload, of: cut.payload) || isPrefix(cut.payload, of: whole.payload),
                "payloads diverge"
            )
            check(
                isPrefix(whole.controls, of: cut.controls) || isPrefix(cut.controls, of: whole.controls),
                "controls diverge"
            )
            check(
                isPrefix(whole.headers, of: cut.headers) || isPrefix(cut.headers, of: whole.headers),
                "headers diverge"
            )
        }

        // The validator against the standard library, on the same bytes.
        var validator = UTF8Validator()
        let valid = bytes.withUnsafeBytes { validator.feed($0) } && validator.isComplete
        check(
            valid == (String(validating: bytes, as: UTF8.self) != nil),
            "UTF8Validator disagrees with the standard library"
        )
        return 0
    }

    static func isPrefix<T: Equatable>(_ a: [T], of b: [T]) -> Bool { a.count <= b.count && Array(b[..<a.count]) == a }
}
