import XCTest

@testable import WSBridge

/// Every transition of the handshake phases, without sockets.
final class HandshakeStateMachineTests: XCTestCase {
    typealias Machine = HandshakeStateMachine

    func testInitialStateFollowsTheConfiguration() {
        XCTAssertEqual(Machine(proxyProtocol: true, tls: true).state, .proxyHeader)
        XCTAssertEqual(Machine(proxyProtocol: true, tls: false).state, .proxyHeader)
        XCTAssertEqual(Machine(proxyProtocol: false, tls: true).state, .tlsDetect)
        XCTAssertEqual(Machine(proxyProtocol: false, tls: false).state, .requestHead)
    }

    func testProxyHeaderLeadsToTLSDetectionOrTheRequest() {
        var withTLS = Machine(proxyProtocol: true, tls: true)
        withTLS.proxyHeaderReceived()
        XCTAssertEqual(withTLS.state, .tlsDetect)
        var plain = Machine(proxyProtocol: true, tls: false)
        plain.proxyHeaderReceived()
        XCTAssertEqual(plain.state, .requestHead)
    }

    func testTLSDetectionAndHandshake() {
        var tls = Machine(proxyProtocol: false, tls: true)
        tls.tlsDetected(true)
        XCTAssertEqual(tls.state, .tlsHandshake)
        tls.tlsHandshakeCompleted()
        XCTAssertEqual(tls.state, .requestHead)
        var plain = Machine(proxyProtocol: false, tls: true)
        plain.tlsDetected(false)
        XCTAssertEqual(plain.state, .requestHead)
    }

    func testRequestHeadLeadsToAdmissionOrAnAnswer() {
        var upgrade = Machine(proxyProtocol: false, tls: false)
        upgrade.requestHeadReceived(upgrade: true)
        XCTAssertEqual(upgrade.state, .admitting)
        var plain = Machine(proxyProtocol: false, tls: false)
        plain.requestHeadReceived(upgrade: false)
        XCTAssertEqual(plain.state, .answering)
        XCTAssertFalse(plain.deadlineApplies, "an answer being written is not under the handshake deadline")
    }

    func testAdmissionConnectsOrUpgradesAtOnce() {
        var relay = Self.admitting()
        XCTAssertEqual(relay.admitted(connectsBackend: true), .proceed)
        XCTAssertEqual(relay.state, .connecting)
        XCTAssertFalse(relay.deadlineApplies, "the backend connect has its own timeout")
        XCTAssertEqual(relay.backendConnectFinished(), .proceed)
        XCTAssertEqual(relay.state, .upgraded)
        XCTAssertFalse(relay.inHandshake)

        var echo = Self.admitting()
        XCTAssertEqual(echo.admitted(connectsBackend: false), .proceed)
        XCTAssertEqual(echo.state, .upgraded)

        var probe = Self.admitting()
        probe.selfCheckAccepted()
        XCTAssertEqual(probe.state, .upgraded)
    }

    func testRefusalFromEveryPhaseBeforeThe101() {
        var states: [Machine] = [Machine(proxyProtocol: true, tls: true), Machine(proxyProtocol: false, tls: true)]
        var handshaking = Machine(proxyProtocol: false, tls: true)
        handshaking.tlsDetected(true)
        states.append(handshaking)
        states.append(Machine(proxyProtocol: false, tls: false))
        states.append(Self.admitting())
        var connecting = Self.admitting()
        _ = connecting.admitted(connectsBackend: true)
        states.append(connecting)
        var answering = Machine(proxyProtocol: false, tls: false)
        answering.requestHeadReceived(upgrade: false)
        states.append(answering)
        for var machine in states {
            let before = machine.state
            XCTAssertEqual(machine.refuse(), .proceed, "\(before)")
            XCTAssertEqual(machine.state, .refused)
            XCTAssertEqual(machine.refuse(), .ignore, "refusing twice is ignored")
            XCTAssertEqual(machine.state, .refused)
        }
    }

    func testDeadlineClosesBeforeHTTPAndAnswers408After() {
        var proxy = Machine(proxyProtocol: true, tls: false)
        XCTAssertEqual(proxy.deadlineFired(), .closeNow(.proxy))
        XCTAssertEqual(proxy.state, .refused)

        var detect = Machine(proxyProtocol: false, tls: true)
        XCTAssertEqual(detect.deadlineFired(), .closeNow(.tls))

        var handshake = Machine(proxyProtocol: false, tls: true)
        handshake.tlsDetected(true)
        XCTAssertEqual(handshake.deadlineFired(), .closeNow(.tls), "no 408 into an unfinished TLS handshake")

        var head = Machine(proxyProtocol: false, tls: false)
        XCTAssertEqual(head.deadlineFired(), .answerTimeout(.request))
        XCTAssertEqual(head.state, .refused)

        var admitting = Self.admitting()
        XCTAssertEqual(admitting.deadlineFired(), .answerTimeout(.admission))
    }

    func testDeadlineIsIgnoredOnceItNoLongerApplies() {
        var connecting = Self.admitting()
        _ = connecting.admitted(connectsBackend: true)
        XCTAssertEqual(connecting.deadlineFired(), .ignore)
        XCTAssertEqual(connecting.state, .connecting)

        var answering = Machine(proxyProtocol: false, tls: false)
        answering.requestHeadReceived(upgrade: false)
        XCTAssertEqual(answering.deadlineFired(), .ignore)

        var refused = Self.admitting()
        _ = refused.refuse()
        XCTAssertEqual(refused.deadlineFired(), .ignore)

        var upgraded = Self.admitting()
        _ = upgraded.admitted(connectsBackend: false)
        XCTAssertEqual(upgraded.deadlineFired(), .ignore)

        var closed = Machine(proxyProtocol: false, tls: false)
        closed.channelClosed()
        XCTAssertEqual(closed.deadlineFired(), .ignore)
    }

    func testLateAsynchronousResultsAreIgnored() {
        var timedOut = Self.admitting()
        _ = timedOut.deadlineFired()
        XCTAssertEqual(timedOut.admitted(connectsBackend: true), .ignore)
        XCTAssertEqual(timedOut.state, .refused)

        var revoked = Self.admitting()
        _ = revoked.admitted(connectsBackend: true)
        XCTAssertEqual(revoked.refuse(), .proceed)
        XCTAssertEqual(revoked.backendConnectFinished(), .ignore, "a connect that ends after a refusal is dropped")

        var gone = Self.admitting()
        _ = gone.admitted(connectsBackend: true)
        gone.channelClosed()
        XCTAssertEqual(gone.state, .closed)
        XCTAssertEqual(gone.backendConnectFinished(), .ignore)
    }

    func testCloseAfterTheUpgradeBelongsToTheSession() {
        var upgraded = Self.admitting()
        _ = upgraded.admitted(connectsBackend: false)
        upgraded.channelClosed()
        XCTAssertEqual(upgraded.state, .upgraded)
    }

    func testBytesGoToTheParserThenToTheSessionBoundedThenNowhere() {
        var machine = Machine(proxyProtocol: false, tls: false, earlyBytesLimit: 100)
        XCTAssertEqual(machine.bytesArrived(), .parseHead)
        XCTAssertTrue(machine.mayRead(kept: 0))
        machine.requestHeadReceived(upgrade: true)
        XCTAssertEqual(machine.bytesArrived(), .keepForSession)
        XCTAssertTrue(machine.mayRead(kept: 99))
        XCTAssertFalse(machine.mayRead(kept: 100), "reads stop at the early-bytes bound")
        _ = machine.admitted(connectsBackend: true)
        XCTAssertEqual(machine.bytesArrived(), .keepForSession)
        XCTAssertFalse(machine.mayRead(kept: 100))
        _ = machine.refuse()
        XCTAssertEqual(machine.bytesArrived(), .discard)
        XCTAssertTrue(machine.mayRead(kept: 100))

        var answering = Machine(proxyProtocol: false, tls: false)
        answering.requestHeadReceived(upgrade: false)
        XCTAssertEqual(answering.bytesArrived(), .discard)
    }

    func testDeadlineAndHandshakeFlags() {
        var machine = Machine(proxyProtocol: true, tls: true)
        XCTAssertTrue(machine.deadlineApplies)
        XCTAssertTrue(machine.inHandshake)
        machine.proxyHeaderReceived()
        machine.tlsDetected(true)
        XCTAssertTrue(machine.deadlineApplies)
        machine.tlsHandshakeCompleted()
        machine.requestHeadReceived(upgrade: true)
        XCTAssertTrue(machine.deadlineApplies)
        XCTAssertTrue(machine.inHandshake)
    }

    private static func admitting() -> Machine {
        var machine = Machine(proxyProtocol: false, tls: false)
        machine.requestHeadReceived(upgrade: true)
        return machine
    }
}
