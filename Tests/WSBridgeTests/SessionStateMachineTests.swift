import NIOCore
import NIOWebSocket
import XCTest

@testable import WSBridge

/// The close and backpressure matrix of a session, without sockets: events in, actions out.
final class SessionStateMachineTests: XCTestCase {
    typealias Machine = SessionStateMachine
    typealias Action = SessionStateMachine.Action

    static let settings = Machine.Settings(
        pingInterval: .seconds(30),
        pongTimeout: .seconds(10),
        idleTimeout: nil,
        closeTimeout: .seconds(5)
    )

    /// A deadline `seconds` after the test's origin.
    static func at(_ seconds: Double) -> NIODeadline {
        .uptimeNanoseconds(1_000_000_000_000 + UInt64(seconds * 1e9))
    }

    static func started(
        _ settings: Machine.Settings = settings,
        clientWritable: Bool = true,
        partnerWritable: Bool = true
    ) -> Machine {
        var machine = Machine(settings: settings)
        _ = machine.handle(
            .start(connectFailure: nil, clientWritable: clientWritable, partnerWritable: partnerWritable),
            now: at(0)
        )
        return machine
    }

    static func payload(_ bytes: [UInt8]) -> ByteBuffer { ByteBuffer(bytes: bytes) }

    static func sendCloses(_ actions: [Action]) -> [Action] {
        actions.filter { if case .sendClose = $0 { return true } else { return false } }
    }

    static func finished(_ actions: [Action]) -> Machine.Summary? {
        for case .finished(let summary) in actions { return summary }
        return nil
    }

    // MARK: start

    func testStartSchedulesThePingAndIdleDeadlines() {
        var settings = Self.settings
        settings.idleTimeout = .seconds(60)
        var machine = Machine(settings: settings)
        let actions = machine.handle(
            .start(connectFailure: nil, clientWritable: true, partnerWritable: true),
            now: Self.at(0)
        )
        XCTAssertEqual(actions, [.schedule(.ping, Self.at(30)), .schedule(.idle, Self.at(60))])
        XCTAssertEqual(machine.client, .open)
    }

    func testAFailedConnectIsReportedAs1014AndEndsWhenTheClientLeaves() {
        var machine = Machine(settings: Self.settings)
        let actions = machine.handle(
            .start(connectFailure: "backend unreachable", clientWritable: true, partnerWritable: false),
            now: Self.at(0)
        )
        XCTAssertEqual(
            Self.sendCloses(actions),
            [.sendClose(code: 1014, reason: "backend unreachable", thenClose: false)]
        )
        XCTAssertTrue(actions.contains(.schedule(.clientClose, Self.at(5))))
        XCTAssertEqual(machine.partner, .closed)
        XCTAssertEqual(machine.handle(.clientFrame(.close(.normal, "")), now: Self.at(1)), [.closeClient])
        let end = machine.handle(.clientInactive, now: Self.at(1))
        XCTAssertEqual(
            Self.finished(end),
            .init(close: .init(code: 1014, by: .server, reason: "backend unreachable"), bytesUp: 0, bytesDown: 0)
        )
    }

    // MARK: relaying

    func testDataIsRelayedBothWaysAndFlushedAtTheEndOfEachRead() {
        var machine = Self.started()
        let up = Self.payload([1, 2, 3])
        XCTAssertEqual(machine.handle(.clientFrame(.data(up)), now: Self.at(1)), [.forwardToPartner(.payload(up))])
        XCTAssertEqual(machine.handle(.clientFrame(.data(up)), now: Self.at(1)), [.forwardToPartner(.payload(up))])
        XCTAssertEqual(machine.handle(.clientReadComplete, now: Self.at(1)), [.flushPartner])
        XCTAssertEqual(machine.handle(.clientReadComplete, now: Self.at(1)), [], "nothing new to flush")
        let down = WebSocketFrame(fin: true, opcode: .binary, data: Self.payload([9]))
        XCTAssertEqual(machine.handle(.partnerData(down), now: Self.at(2)), [.forwardToClient(down)])
        XCTAssertEqual(machine.handle(.partnerReadComplete, now: Self.at(2)), [.flushClient])
        XCTAssertEqual(machine.bytesUp, 6)
        XCTAssertEqual(machine.bytesDown, 1)
    }

    func testFrameHeadersGoToThePartnerForTheEcho() {
        var machine = Self.started()
        let header = FrameParser.DataFrameHeader(opcode: .text, fin: true, length: 0)
        XCTAssertEqual(
            machine.handle(.clientFrame(.dataFrame(header)), now: Self.at(1)),
            [.forwardToPartner(.frameStart(header))]
        )
    }

    // MARK: backpressure

    func testAFullPartnerHoldsTheClientsReadsUntilItDrains() {
        var machine = Self.started()
        XCTAssertEqual(machine.handle(.clientReadRequested, now: Self.at(1)), [.readClient])
        XCTAssertEqual(machine.handle(.partnerWritability(false), now: Self.at(1)), [])
        XCTAssertEqual(machine.handle(.clientReadRequested, now: Self.at(1)), [], "held")
        XCTAssertTrue(machine.clientReadHeld)
        XCTAssertEqual(
            machine.handle(.partnerWritability(true), now: Self.at(2)),
            [.readClient],
            "issued once it drains"
        )
        XCTAssertEqual(machine.handle(.partnerWritability(true), now: Self.at(2)), [], "and only once")
    }

    func testAFullClientHoldsThePartnersReadsUntilItDrains() {
        var machine = Self.started()
        XCTAssertEqual(machine.handle(.clientWritability(false), now: Self.at(1)), [])
        XCTAssertEqual(machine.handle(.partnerReadRequested, now: Self.at(1)), [])
        XCTAssertTrue(machine.partnerReadHeld)
        XCTAssertEqual(machine.handle(.clientWritability(true), now: Self.at(2)), [.readPartner])
    }

    func testAPartnerThatTakesNoMoreDataNoLongerHoldsTheClient() {
        var machine = Self.started(partnerWritable: false)
        XCTAssertEqual(machine.handle(.clientReadRequested, now: Self.at(1)), [])
        // The revocation shuts the partner's output: the client must be read for its Close.
        let actions = machine.handle(.revoked("token revoked"), now: Self.at(2))
        XCTAssertEqual(actions.last, .readClient)
        XCTAssertTrue(actions.contains(.closePartner(.shutOutput)))
    }

    func testAClientThatTakesNoMoreDataNoLongerHoldsThePartner() {
        var machine = Self.started(clientWritable: false)
        XCTAssertEqual(machine.handle(.partnerReadRequested, now: Self.at(1)), [])
        // Our Close is out: partner bytes are read only to see the partner's end, and dropped.
        let actions = machine.handle(.shutdown, now: Self.at(2))
        XCTAssertEqual(actions.last, .readPartner)
        let late = WebSocketFrame(fin: true, opcode: .binary, data: Self.payload([1]))
        XCTAssertEqual(machine.handle(.partnerData(late), now: Self.at(3)), [])
        XCTAssertEqual(machine.bytesDown, 0)
    }

    func testAPartnerThatWritesToTheClientFollowsTheClientsWritability() {
        var machine = Machine(settings: Self.settings)
        _ = machine.handle(
            .start(connectFailure: nil, clientWritable: true, partnerWritable: true, partnerWritesToClient: true),
            now: Self.at(0)
        )
        _ = machine.handle(.clientWritability(false), now: Self.at(1))
        XCTAssertEqual(
            machine.handle(.clientReadRequested, now: Self.at(1)),
            [],
            "an echo reads no more than the client takes"
        )
        XCTAssertEqual(machine.handle(.clientWritability(true), now: Self.at(2)), [.readClient])
        _ = machine.handle(.clientWritability(false), now: Self.at(3))
        XCTAssertEqual(machine.handle(.clientReadRequested, now: Self.at(3)), [])
        // Once our Close is out, what the echo sends back is dropped: the client is read for its Close.
        XCTAssertEqual(machine.handle(.shutdown, now: Self.at(4)).last, .readClient)
    }

    // MARK: replies under backpressure

    func testPingsAreAnsweredAtOnceWhileTheClientTakesMore() {
        var machine = Self.started()
        let ping = Self.payload([7])
        XCTAssertEqual(
            machine.handle(.clientFrame(.ping(ping)), now: Self.at(1)),
            [.writeToClient(WebSocketFrame(fin: true, opcode: .pong, data: ping))]
        )
        XCTAssertEqual(machine.handle(.clientReadComplete, now: Self.at(1)), [.flushClient])
    }

    func testAClientThatPingsAndNeverReadsHoldsOnePongWithTheLatestPayload() {
        var machine = Self.started()
        _ = machine.handle(.clientWritability(false), now: Self.at(1))
        for index in 0..<1000 {
            let actions = machine.handle(.clientFrame(.ping(Self.payload([UInt8(index % 256), 1]))), now: Self.at(1))
            XCTAssertEqual(actions, [], "no Pong is queued while the client takes no more")
        }
        // Data keeps flowing to the partner while the Pong waits.
        let up = Self.payload([5])
        XCTAssertEqual(machine.handle(.clientFrame(.data(up)), now: Self.at(1)), [.forwardToPartner(.payload(up))])
        XCTAssertEqual(machine.pendingPong, Self.payload([UInt8(999 % 256), 1]))
        let pong = WebSocketFrame(fin: true, opcode: .pong, data: Self.payload([UInt8(999 % 256), 1]))
        XCTAssertEqual(machine.handle(.clientWritability(true), now: Self.at(2)), [.writeToClient(pong), .flushClient])
        XCTAssertEqual(machine.handle(.clientWritability(true), now: Self.at(2)), [], "one Pong, once")
    }

    func testAWaitingPongIsDroppedOnceOurCloseIsOut() {
        var machine = Self.started()
        _ = machine.handle(.clientWritability(false), now: Self.at(1))
        _ = machine.handle(.clientFrame(.ping(Self.payload([1]))), now: Self.at(1))
        _ = machine.handle(.shutdown, now: Self.at(2))
        XCTAssertEqual(machine.handle(.clientWritability(true), now: Self.at(3)), [])
        XCTAssertEqual(
            machine.handle(.clientFrame(.ping(Self.payload([2]))), now: Self.at(3)),
            [],
            "no Pong after our Close"
        )
    }

    // MARK: liveness

    func testAClientThatAnswersThePingStaysOpen() {
        var machine = Self.started()
        let ping = machine.handle(.timer(.ping), now: Self.at(30))
        XCTAssertEqual(ping.first, .writeToClient(WebSocketFrame(fin: true, opcode: .ping, data: ByteBuffer())))
        XCTAssertTrue(ping.contains(.schedule(.ping, Self.at(60))))
        XCTAssertTrue(ping.contains(.schedule(.pong, Self.at(40))))
        _ = machine.handle(.clientFrame(.pong(ByteBuffer())), now: Self.at(31))
        XCTAssertEqual(machine.handle(.timer(.pong), now: Self.at(40)), [])
        XCTAssertEqual(machine.client, .open)
        XCTAssertEqual(machine.pong, .none)
    }

    func testAClientThatCouldAnswerAndDoesNotIsDead() {
        var machine = Self.started()
        _ = machine.handle(.timer(.ping), now: Self.at(30))
        let actions = machine.handle(.timer(.pong), now: Self.at(40))
        XCTAssertEqual(actions.last, .closeClient)
        XCTAssertEqual(machine.close, .init(code: 1006, by: .server, reason: "dead peer"))
    }

    func testThePongDeadlineDoesNotRunWhileTheBridgeHoldsTheClientsReads() {
        var machine = Self.started()
        _ = machine.handle(.timer(.ping), now: Self.at(30))
        // The backend is slow: the client's reads (and its Pong) are held back by the bridge.
        _ = machine.handle(.partnerWritability(false), now: Self.at(31))
        _ = machine.handle(.clientReadRequested, now: Self.at(31))
        XCTAssertEqual(machine.handle(.timer(.pong), now: Self.at(40)), [], "paused, not dead")
        XCTAssertEqual(machine.pong, .paused(sentAt: Self.at(30)))
        XCTAssertEqual(machine.client, .open)
        // Reads resume at 100 s: the client gets the whole timeout from there.
        XCTAssertEqual(
            machine.handle(.partnerWritability(true), now: Self.at(100)),
            [.readClient, .schedule(.pong, Self.at(110))]
        )
        _ = machine.handle(.clientFrame(.pong(ByteBuffer())), now: Self.at(100.1))
        XCTAssertEqual(machine.handle(.timer(.pong), now: Self.at(110)), [])
        XCTAssertEqual(machine.client, .open)
    }

    func testReadsHeldForPartOfTheWindowExtendTheDeadline() {
        var machine = Self.started()
        _ = machine.handle(.timer(.ping), now: Self.at(30))
        _ = machine.handle(.partnerWritability(false), now: Self.at(31))
        _ = machine.handle(.clientReadRequested, now: Self.at(31))
        _ = machine.handle(.partnerWritability(true), now: Self.at(39))
        XCTAssertEqual(machine.handle(.timer(.pong), now: Self.at(40)), [.schedule(.pong, Self.at(49))])
        XCTAssertEqual(
            machine.handle(.timer(.pong), now: Self.at(49)).last,
            .closeClient,
            "no answer in a full window of reading"
        )
    }

    // MARK: closing: who closes first

    func testTheClientClosesFirst() {
        var machine = Self.started()
        let closing = machine.handle(.clientFrame(.close(CloseCode(4000), "bye")), now: Self.at(1))
        XCTAssertEqual(
            Self.sendCloses(closing),
            [.sendClose(code: 4000, reason: "", thenClose: true)],
            "the code is echoed"
        )
        XCTAssertTrue(closing.contains(.closePartner(.shutOutput)))
        XCTAssertTrue(closing.contains(.schedule(.partnerClose, Self.at(6))))
        XCTAssertEqual(machine.partner, .outputShut)
        // Data after the client's Close does not count.
        XCTAssertEqual(machine.handle(.clientFrame(.data(Self.payload([1]))), now: Self.at(1)), [])
        XCTAssertEqual(machine.handle(.partnerInputClosed, now: Self.at(2)), [.closePartner(.now)])
        XCTAssertNil(Self.finished(machine.handle(.partnerInactive, now: Self.at(2))))
        let end = machine.handle(.clientInactive, now: Self.at(2))
        XCTAssertEqual(Self.finished(end)?.close, .init(code: 4000, by: .client, reason: ""))
    }

    func testACloseWithoutACodeIsAnsweredWith1000AndLoggedAs1005() {
        var machine = Self.started()
        XCTAssertEqual(
            Self.sendCloses(machine.handle(.clientFrame(.close(nil, "")), now: Self.at(1))),
            [.sendClose(code: 1000, reason: "", thenClose: true)]
        )
        XCTAssertEqual(machine.close?.code, 1005)
    }

    func testTheBackendClosesFirstAndTheClientsLastDataStillReachesIt() {
        var machine = Self.started()
        let eof = machine.handle(.partnerInputClosed, now: Self.at(1))
        XCTAssertEqual(Self.sendCloses(eof), [.sendClose(code: 1000, reason: "backend closed", thenClose: false)])
        XCTAssertTrue(eof.contains(.schedule(.clientClose, Self.at(6))))
        XCTAssertEqual(machine.client, .closeSent)
        let last = Self.payload([4, 2])
        XCTAssertEqual(
            machine.handle(.clientFrame(.data(last)), now: Self.at(2)),
            [.forwardToPartner(.payload(last))],
            "half-closed: the client's data still goes"
        )
        let reply = machine.handle(.clientFrame(.close(.normal, "")), now: Self.at(2))
        XCTAssertEqual(reply, [.closeClient, .schedule(.partnerClose, Self.at(7)), .closePartner(.drainThenClose)])
        _ = machine.handle(.partnerInactive, now: Self.at(2))
        let end = machine.handle(.clientInactive, now: Self.at(2))
        XCTAssertEqual(
            Self.finished(end),
            .init(close: .init(code: 1000, by: .backend, reason: "backend closed"), bytesUp: 2, bytesDown: 0)
        )
    }

    func testABackendErrorCloses1011() {
        var machine = Self.started()
        let actions = machine.handle(.partnerInactive, now: Self.at(1))
        XCTAssertEqual(Self.sendCloses(actions), [.sendClose(code: 1011, reason: "backend error", thenClose: false)])
        XCTAssertEqual(
            machine.handle(.clientFrame(.data(Self.payload([1]))), now: Self.at(1)),
            [],
            "nowhere to send it"
        )
    }

    func testAProtocolErrorClosesWithItsCodeAndShutsTheBackend() {
        var machine = Self.started()
        let failure = FrameParser.Failure(.invalidPayload, "invalid UTF-8 in text message")
        let actions = machine.handle(.clientProtocolError(failure), now: Self.at(1))
        XCTAssertEqual(
            Self.sendCloses(actions),
            [.sendClose(code: 1007, reason: "invalid UTF-8 in text message", thenClose: true)]
        )
        XCTAssertTrue(actions.contains(.closePartner(.shutOutput)))
    }

    func testAProtocolErrorAfterOurCloseEndsTheConnection() {
        var machine = Self.started()
        _ = machine.handle(.shutdown, now: Self.at(1))
        let actions = machine.handle(.clientProtocolError(.init(.protocolError, "x")), now: Self.at(2))
        XCTAssertEqual(actions.first, .closeClient)
        XCTAssertEqual(Self.sendCloses(actions), [], "a Close is sent once")
    }

    func testTheClientVanishing() {
        var machine = Self.started()
        let actions = machine.handle(.clientInactive, now: Self.at(1))
        XCTAssertTrue(actions.contains(.closePartner(.shutOutput)))
        XCTAssertEqual(machine.close, .init(code: 1006, by: .client, reason: "connection lost"))
        XCTAssertEqual(Self.finished(machine.handle(.partnerInactive, now: Self.at(2)))?.close.code, 1006)
    }

    func testAResetIsRecordedAs1006ByTheClient() {
        var machine = Self.started()
        XCTAssertEqual(
            machine.handle(.clientConnectionError("connection reset by peer"), now: Self.at(1)),
            [.closeClient]
        )
        XCTAssertEqual(machine.close, .init(code: 1006, by: .client, reason: "connection reset by peer"))
    }

    // MARK: closing: the server's reasons

    func testRevocationCloses1008AndShutsTheBackend() {
        var machine = Self.started()
        let actions = machine.handle(.revoked("token revoked"), now: Self.at(1))
        XCTAssertEqual(Self.sendCloses(actions), [.sendClose(code: 1008, reason: "token revoked", thenClose: false)])
        XCTAssertTrue(actions.contains(.closePartner(.shutOutput)))
        XCTAssertTrue(actions.contains(.cancel(.ping)))
    }

    func testShutdownCloses1001AndTheBackendStillGetsTheClientsLastData() {
        var machine = Self.started()
        let actions = machine.handle(.shutdown, now: Self.at(1))
        XCTAssertEqual(
            Self.sendCloses(actions),
            [.sendClose(code: 1001, reason: "server shutting down", thenClose: false)]
        )
        XCTAssertFalse(actions.contains(.closePartner(.shutOutput)))
        let last = Self.payload([1])
        XCTAssertEqual(machine.handle(.clientFrame(.data(last)), now: Self.at(2)), [.forwardToPartner(.payload(last))])
        XCTAssertTrue(
            machine.handle(.clientFrame(.close(.goingAway, "")), now: Self.at(2)).contains(.closePartner(.shutOutput))
        )
    }

    func testCloseIsSentOnceWhateverHappensNext() {
        var machine = Self.started()
        var closes = Self.sendCloses(machine.handle(.revoked("a"), now: Self.at(1)))
        closes += Self.sendCloses(machine.handle(.shutdown, now: Self.at(1)))
        closes += Self.sendCloses(machine.handle(.partnerInputClosed, now: Self.at(1)))
        closes += Self.sendCloses(machine.handle(.partnerInactive, now: Self.at(1)))
        closes += Self.sendCloses(machine.handle(.timer(.idle), now: Self.at(100)))
        XCTAssertEqual(closes.count, 1)
        XCTAssertEqual(machine.close?.code, 1008, "the first reason is the one reported")
    }

    func testIdleTimeoutMovesWithDataAndCloses1001() {
        var settings = Self.settings
        settings.idleTimeout = .seconds(10)
        var machine = Self.started(settings)
        _ = machine.handle(.clientFrame(.data(Self.payload([1]))), now: Self.at(6))
        XCTAssertEqual(machine.handle(.timer(.idle), now: Self.at(10)), [.schedule(.idle, Self.at(16))])
        _ = machine.handle(
            .partnerData(WebSocketFrame(fin: true, opcode: .binary, data: Self.payload([1]))),
            now: Self.at(12)
        )
        XCTAssertEqual(
            machine.handle(.timer(.idle), now: Self.at(16)),
            [.schedule(.idle, Self.at(22))],
            "data either way counts"
        )
        // Pings and pongs are not data.
        _ = machine.handle(.clientFrame(.ping(Self.payload([]))), now: Self.at(20))
        let actions = machine.handle(.timer(.idle), now: Self.at(22))
        XCTAssertEqual(Self.sendCloses(actions), [.sendClose(code: 1001, reason: "idle timeout", thenClose: false)])
        XCTAssertTrue(actions.contains(.closePartner(.shutOutput)))
    }

    func testEachLegHasTheCloseTimeoutToEnd() {
        var machine = Self.started()
        _ = machine.handle(.revoked("r"), now: Self.at(1))
        XCTAssertEqual(machine.handle(.timer(.clientClose), now: Self.at(6)), [.closeClient])
        XCTAssertEqual(machine.handle(.timer(.partnerClose), now: Self.at(6)), [.closePartner(.now)])
    }

    func testLateTimersAreIgnored() {
        var machine = Self.started()
        XCTAssertEqual(machine.handle(.timer(.clientClose), now: Self.at(1)), [], "no Close was sent")
        XCTAssertEqual(machine.handle(.timer(.partnerClose), now: Self.at(1)), [])
        XCTAssertEqual(machine.handle(.timer(.pong), now: Self.at(1)), [], "no Ping was sent")
        _ = machine.handle(.clientInactive, now: Self.at(2))
        XCTAssertEqual(machine.handle(.timer(.ping), now: Self.at(30)), [])
    }
}
