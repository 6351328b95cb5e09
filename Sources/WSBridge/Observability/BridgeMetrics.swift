import CoreMetrics
import NIOConcurrencyHelpers
import Prometheus

/// Every metric wsbridge exports, created once and passed to the parts that update them.
///
/// Names follow Prometheus conventions (`wsbridge_…_total` counters, `…_seconds` histograms). Label values are
/// bounded: targets' `metricLabel` (from the configuration, never a full token; one per token service), close
/// codes by range, and fixed reason sets.
public final class BridgeMetrics: Sendable {
    /// The registry `/metrics` renders.
    public let registry: PrometheusCollectorRegistry
    private let factory: PrometheusMetricsFactory
    private let rejections: [HTTPRejection.Kind: CoreMetrics.Counter]
    private let connectFailures: [BackendConnectError.Kind: CoreMetrics.Counter]
    private let reloadsOK: CoreMetrics.Counter
    private let handshakesInProgress: CoreMetrics.Meter
    private let handshakeTimeouts: [HandshakeStateMachine.Phase: CoreMetrics.Counter]
    private let reloadsFailed: CoreMetrics.Counter
    private let targetsWarningsGauge: CoreMetrics.Gauge
    private let rereads: CoreMetrics.Counter
    private let perTarget = NIOLockedValueBox<[String: TargetMetrics]>([:])
    private let closes = NIOLockedValueBox<[String: CoreMetrics.Counter]>([:])

    /// Counters and gauges of one target, shared by its sessions.
    public final class TargetMetrics: Sendable {
        let active: CoreMetrics.Meter
        let opened: CoreMetrics.Counter
        let bytesUp: CoreMetrics.Counter
        let bytesDown: CoreMetrics.Counter
        let connectLatency: CoreMetrics.Timer
        let duration: CoreMetrics.Timer

        init(target: String, factory: MetricsFactory) {
            let labels = [("target", target)]
            func counter(_ label: String) -> CoreMetrics.Counter {
                CoreMetrics.Counter(label: label, dimensions: labels, factory: factory)
            }
            func timer(_ label: String) -> CoreMetrics.Timer {
                CoreMetrics.Timer(label: label, dimensions: labels, factory: factory)
            }
            self.active = CoreMetrics.Meter(label: "wsbridge_sessions_active", dimensions: labels, factory: factory)
            self.opened = counter("wsbridge_sessions_opened_total")
            self.bytesUp = counter("wsbridge_bytes_to_backend_total")
            self.bytesDown = counter("wsbridge_bytes_to_client_total")
            self.connectLatency = timer("wsbridge_backend_connect_seconds")
            self.duration = timer("wsbridge_session_duration_seconds")
        }
    }

    public init(registry: PrometheusCollectorRegistry = PrometheusCollectorRegistry()) {
        self.registry = registry
        var factory = PrometheusMetricsFactory(registry: registry)
        factory.durationHistogramBuckets["wsbridge_session_duration_seconds"] = [
            .seconds(1), .seconds(10), .seconds(60), .seconds(300), .seconds(1800), .seconds(3600), .seconds(14400),
            .seconds(86400),
        ]
        factory.durationHistogramBuckets["wsbridge_backend_connect_seconds"] = [
            .microseconds(500), .milliseconds(1), .milliseconds(5), .milliseconds(25), .milliseconds(100),
            .milliseconds(500), .seconds(1), .seconds(5), .seconds(10),
        ]
        self.factory = factory
        self.rejections = Self.counters("wsbridge_handshake_rejections_total", by: "reason", factory)
        self.connectFailures = Self.counters("wsbridge_backend_connect_failures_total", by: "kind", factory)
        self.handshakesInProgress = CoreMetrics.Meter(label: "wsbridge_handshakes_in_progress", factory: factory)
        self.handshakeTimeouts = Self.counters("wsbridge_handshake_timeouts_total", by: "phase", factory)
        self.reloadsOK = CoreMetrics.Counter(
            label: "wsbridge_targets_reloads_total",
            dimensions: [("result", "ok")],
            factory: factory
        )
        self.reloadsFailed = CoreMetrics.Counter(
            label: "wsbridge_targets_reloads_total",
            dimensions: [("result", "error")],
            factory: factory
        )
        self.targetsWarningsGauge = CoreMetrics.Gauge(label: "wsbridge_targets_warnings", factory: factory)
        self.rereads = CoreMetrics.Counter(label: "wsbridge_targets_rereads_total", factory: factory)
    }

    public func target(_ name: String) -> TargetMetrics {
        self.perTarget.withLockedValue { cache in
            if let existing = cache[name] { return existing }
            let created = TargetMetrics(target: name, factory: self.factory)
            cache[name] = created
            return created
        }
    }

    func rejected(_ kind: HTTPRejection.Kind) {
        self.rejections[kind]?.increment()
    }

    /// A connection entered its handshake (`wsbridge_handshakes_in_progress`).
    func handshakeStarted() {
        self.handshakesInProgress.increment()
    }

    /// A connection's handshake ended: upgraded, refused or closed.
    func handshakeEnded() {
        self.handshakesInProgress.decrement()
    }

    /// The handshake deadline hit a connection in `phase` (`wsbridge_handshake_timeouts_total{phase}`).
    func handshakeTimedOut(_ phase: HandshakeStateMachine.Phase) {
        self.handshakeTimeouts[phase]?.increment()
    }

    func connectFailed(_ kind: BackendConnectError.Kind) {
        self.connectFailures[kind]?.increment()
    }

    func reloaded(ok: Bool) {
        (ok ? self.reloadsOK : self.reloadsFailed).increment()
    }

    /// An unknown token found the targets files changed and read them (`wsbridge_targets_rereads_total`).
    func reread() {
        self.rereads.increment()
    }

    /// What the targets in force read past (`TargetTable.warnings`): skipped lines, tokens defined again, a
    /// missing token file.
    func targetsWarnings(_ count: Int) {
        self.targetsWarningsGauge.record(count)
    }

    /// Counts a finished session by target and close code (see `codeLabel`).
    func sessionClosed(target: String, code: UInt16) {
        let code = Self.codeLabel(code)
        let key = "\(target)\u{0}\(code)"
        let counter = self.closes.withLockedValue { cache in
            if let existing = cache[key] { return existing }
            let created = CoreMetrics.Counter(
                label: "wsbridge_sessions_closed_total",
                dimensions: [("target", target), ("code", code)],
                factory: self.factory
            )
            cache[key] = created
            return created
        }
        counter.increment()
    }

    /// The `code` label of a close code: the codes of RFC 6455 (1000–1015) as they are; a client's own codes,
    /// which it chooses freely, by range (`3xxx` registered, `4xxx` private), anything else `other`. The label set
    /// stays bounded whatever clients send.
    static func codeLabel(_ code: UInt16) -> String {
        switch code {
        case 1000...1015: return String(code)
        case 3000...3999: return "3xxx"
        case 4000...4999: return "4xxx"
        default: return "other"
        }
    }

    /// The Prometheus text exposition of every metric.
    public func render() -> [UInt8] {
        self.registry.emitToBuffer()
    }
}

extension BridgeMetrics {
    /// One counter `label` for each case of `Case`, told apart by the dimension `name` (a bounded set of series).
    fileprivate static func counters<Case: CaseIterable & RawRepresentable & Hashable>(
        _ label: String,
        by name: String,
        _ factory: MetricsFactory
    ) -> [Case: CoreMetrics.Counter] where Case.RawValue == String {
        Dictionary(
            uniqueKeysWithValues: Case.allCases.map {
                ($0, CoreMetrics.Counter(label: label, dimensions: [(name, $0.rawValue)], factory: factory))
            }
        )
    }
}
