import NIOCore
import NIOWebSocket
import WSBridge

#if canImport(Glibc)
    import Glibc
#endif

/// `wsbridge-bench micro`: the client-frame decoding path in isolation, on one core, in GB/s of payload.
///
/// A "read" is 64 KiB holding four masked 16 KiB binary frames, decoded the way the bridge does it: payload slices
/// are kept alive until the read is done (the bridge hands them to the backend's write queue), which is what made
/// `withUnsafeMutableReadableBytes` copy the rest of the read for every frame before issue 5.
func runMicro(seconds: Double) -> Never {
    let frameSize = 16 << 10
    let framesPerRead = 4
    var wire = ByteBuffer()
    for index in 0..<framesPerRead {
        Frames.appendMasked(
            &wire,
            opcode: 0x2,
            payload: Pattern.window(at: UInt64(index * frameSize), length: frameSize),
            mask: 0xA1B2_C3D4
        )
    }
    let payloadPerRead = frameSize * framesPerRead
    let key = WebSocketMaskingKey([0xA1, 0xB2, 0xC3, 0xD4])!

    func measure(_ name: String, _ body: () -> Void) {
        var iterations = 0
        let start = nowNanos()
        let end = start + UInt64(seconds * 1e9)
        while nowNanos() < end {
            for _ in 0..<16 { body() }
            iterations += 16
        }
        let elapsed = Double(nowNanos() - start) / 1e9
        let gbps = Double(iterations * payloadPerRead) / elapsed / 1e9
        print(name + String(repeating: " ", count: max(1, 58 - name.count)) + "\(Double(Int(gbps * 100)) / 100) GB/s")
    }

    func decode(inPlace: Bool) {
        // A fresh read buffer, as NIO allocates one per read; the copy is timed too (see `copy` below).
        var read = wire
        read.withUnsafeMutableReadableBytes { _ in }  // own storage, like a buffer NIO just filled
        var parser = FrameParser(maxFrameSize: 1 << 30, unmaskInPlace: inPlace)
        var slices: [ByteBuffer] = []
        slices.reserveCapacity(framesPerRead)
        while let event = try! parser.next(&read) {
            if case .data(let slice) = event { slices.append(slice) }
        }
        precondition(slices.reduce(0) { $0 + $1.readableBytes } == payloadPerRead)
    }

    print("client-frame decoding, \(framesPerRead) x \(frameSize / 1024) KiB frames per 64 KiB read, one core:")
    measure("copy of the read (baseline every row below includes)") {
        var read = wire
        read.withUnsafeMutableReadableBytes { _ in }
    }
    measure("NIO webSocketUnmask (byte by byte), whole read") {
        var read = wire
        read.webSocketUnmask(key)
    }
    measure("FrameParser, copy-on-write unmask (before issue 5)") { decode(inPlace: false) }
    measure("FrameParser, in-place unmask (FrameDecoderHandler now)") { decode(inPlace: true) }
    exit(0)
}
