import NIOCore
import NIOEmbedded
import XCTest

@testable import WSBridge

/// The zero-copy decoding path of issue 5: `FrameParser(unmaskInPlace: true)` and `FrameDecoderHandler`'s
/// completion of headers split across reads.
final class InPlaceDecodingTests: XCTestCase {
    private func frames(_ count: Int, size: Int) -> (wire: [UInt8], payloads: [[UInt8]]) {
        var wire: [UInt8] = []
        var payloads: [[UInt8]] = []
        for index in 0..<count {
            let payload = (0..<size).map { UInt8(truncatingIfNeeded: $0 &* 13 &+ index) }
            var frame = FrameBuilder.binary(payload)
            frame.mask = [UInt8(index), 0x5A, 0xC3, UInt8(truncatingIfNeeded: index &* 7)]
            wire += frame.bytes
            payloads.append(payload)
        }
        return (wire, payloads)
    }

    func testInPlaceUnmaskLeavesEarlierSlicesIntact() throws {
        let (wire, payloads) = self.frames(8, size: 1000)
        var parser = FrameParser(maxFrameSize: 1 << 20, unmaskInPlace: true)
        var buffer = ByteBuffer(bytes: wire)
        var slices: [ByteBuffer] = []  // kept alive while later frames are unmasked in the same storage
        while let event = try parser.next(&buffer) {
            guard case .data(let slice) = event else { return XCTFail("unexpected \(event)") }
            slices.append(slice)
        }
        XCTAssertEqual(slices.map { Array($0.readableBytesView) }, payloads)
    }

    func testDecoderRelaysEveryByteWhateverTheReadBoundaries() throws {
        let (wire, payloads) = self.frames(6, size: 200)
        let expected = payloads.flatMap { $0 }
        // Every split point once, and a few read sizes that put headers across reads.
        var splits: [[Int]] = (1..<wire.count).map { [$0] }
        splits += [1, 2, 3, 5, 7, 13, 203, 211].map { Array(stride(from: $0, to: wire.count, by: $0)) }
        for cuts in splits {
            let channel = EmbeddedChannel(handler: FrameDecoderHandler(maxFrameSize: 1 << 20))
            var start = 0
            for end in cuts + [wire.count] where end > start {
                try channel.writeInbound(ByteBuffer(bytes: wire[start..<end]))
                start = end
            }
            var got: [UInt8] = []
            while let event = try channel.readInbound(as: FrameParser.Event.self) {
                guard case .data(let slice) = event else { return XCTFail("unexpected \(event)") }
                got += slice.readableBytesView
            }
            XCTAssertEqual(got, expected, "reads cut at \(cuts.prefix(4))…")
            _ = try channel.finish()
        }
    }
}
