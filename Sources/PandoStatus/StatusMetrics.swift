import Foundation
import PandoLedger
import PandoServices
import Prometheus

/// The coordinator's Prometheus metrics (`GET /metrics`, text exposition format 0.0.4), fed
/// by the monitor's events as rounds and stages end; the gauges of the current state
/// (schools connected, the last committed version's metrics) are set at each scrape.
///
/// Label values come from fixed sets (outcomes, stages, reason codes) or are checked
/// identifiers (metric names, at most `maxMetricNames`), so a school cannot grow the series
/// without bound by reporting metrics of new names.
public final class StatusMetrics: @unchecked Sendable {
    let registry: PrometheusCollectorRegistry
    static let maxMetricNames = 32

    private let schoolsConnected: Gauge
    private let schoolsKnown: Gauge
    private let roundsCommitted: Counter
    private let roundsAborted: Counter
    private let roundDuration: DurationHistogram
    private let stageDuration: [String: DurationHistogram]
    private let bytesUp: Counter
    private let bytesDown: Counter
    private let updateNorm: ValueHistogram
    private let leftOut: [String: Counter]
    private let updatesAccepted: Counter
    private let lastRound: Gauge
    private let lastExamples: Gauge
    private let lock = NSLock()
    private var lastMetrics: [String: Gauge] = [:]
    private var lastVersionSeen: String?

    /// Round and stage buckets, seconds: a few seconds on loopback to hours across a district.
    static let durationBuckets: [Duration] = [1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200].map { .seconds($0) }
    /// L2 norms of weight deltas (a fine-tuning round moves MiniLM's weights by about 0.1–10).
    static let normBuckets: [Double] = [0.001, 0.01, 0.1, 0.5, 1, 2, 5, 10, 20, 50, 100, 1000]

    public init(monitor: CoordinatorMonitor) {
        let registry = PrometheusCollectorRegistry()
        self.registry = registry
        func descriptor(_ name: String, _ unit: String, _ help: String) -> MetricNameDescriptor {
            MetricNameDescriptor(namespace: "pando", metricName: name, unitName: unit, helpText: help)
        }
        schoolsConnected = registry.makeGauge(descriptor: descriptor("schools", "connected", "Schools with a live mutual-TLS session."))
        schoolsKnown = registry.makeGauge(descriptor: descriptor("schools", "known", "Schools seen by this coordinator (connected or not)."))
        let rounds = descriptor("rounds", "total", "Rounds ended since the coordinator started, by outcome.")
        roundsCommitted = registry.makeCounter(descriptor: rounds, labels: [("outcome", "committed")])
        roundsAborted = registry.makeCounter(descriptor: rounds, labels: [("outcome", "aborted")])
        roundDuration = registry.makeDurationHistogram(descriptor: descriptor("round_duration", "seconds", "Wall time of a round, waiting for schools included."),
                                                       labels: [], buckets: Self.durationBuckets)
        let stage = descriptor("round_stage_duration", "seconds", "Wall time of one stage of a round.")
        stageDuration = Dictionary(uniqueKeysWithValues: CoordinatorMonitor.Stage.allCases.map {
            ($0.rawValue, registry.makeDurationHistogram(descriptor: stage, labels: [("stage", $0.rawValue)], buckets: Self.durationBuckets))
        })
        bytesUp = registry.makeCounter(descriptor: descriptor("update_bytes_received", "total", "Bytes of updates the schools uploaded (on the wire)."))
        bytesDown = registry.makeCounter(descriptor: descriptor("model_bytes_sent", "total", "Bytes of global versions the schools fetched (on the wire)."))
        updateNorm = registry.makeValueHistogram(descriptor: descriptor("update_l2_norm", "", "L2 norm of each update the validator checked."),
                                                 labels: [], buckets: Self.normBuckets)
        let left = descriptor("updates_left_out", "total", "Selected schools whose update is not in a round's aggregate, by reason code.")
        leftOut = Dictionary(uniqueKeysWithValues: LeftOutReason.codes.map { ($0, registry.makeCounter(descriptor: left, labels: [("reason", $0)])) })
        updatesAccepted = registry.makeCounter(descriptor: descriptor("updates_accepted", "total", "Updates taken into a round's aggregate."))
        lastRound = registry.makeGauge(descriptor: descriptor("last_committed_round", "", "Number of the last committed round (0: none yet)."))
        lastExamples = registry.makeGauge(descriptor: descriptor("last_committed_evaluation_examples", "",
                                                                 "Validation examples behind the last committed version's federated evaluation."))
        monitor.observe { [weak self] event in self?.observe(event) }
    }

    func observe(_ event: CoordinatorMonitor.Event) {
        switch event {
        case .stageEnded(let stage, let seconds):
            stageDuration[stage.rawValue]?.record(Self.duration(seconds))
        case .roundEnded(let h):
            (h.outcome == .committed ? roundsCommitted : roundsAborted).increment()
            roundDuration.record(Self.duration(h.seconds))
            bytesUp.increment(by: Int64(h.bytesUp))
            bytesDown.increment(by: Int64(h.bytesDown))
            for s in h.schools {
                if let n = s.updateNorm, n.isFinite { updateNorm.record(n) }
                if s.accepted { updatesAccepted.increment() }
                if s.selected, let code = s.leftOut { (leftOut[code] ?? leftOut["other"])?.increment() }
            }
        }
    }

    static func duration(_ seconds: Double) -> Duration {
        .nanoseconds(Int64((seconds.isFinite ? max(0, min(seconds, 1e9)) : 0) * 1e9))
    }

    /// The exposition text, with the state gauges brought up to date from `document`.
    func exposition(_ document: StatusDocument) -> [UInt8] {
        schoolsConnected.set(Double(document.schools.filter(\.connected).count))
        schoolsKnown.set(Double(document.schools.count))
        if let last = document.rounds.last(where: { $0.outcome == .committed }) {
            lastRound.set(Double(last.round))
            lastExamples.set(Double(last.evaluationExamples))
            lock.lock()
            if lastVersionSeen != last.version {
                lastVersionSeen = last.version
                // Series of metrics the new version lacks are set to NaN (Prometheus' "no value").
                for gauge in lastMetrics.values { gauge.set(Double.nan) }
                for (name, value) in last.evaluation.sorted(by: { $0.key < $1.key }) where value.isFinite && StatusPage.isIdentifier(name) {
                    if lastMetrics[name] == nil, lastMetrics.count < Self.maxMetricNames {
                        lastMetrics[name] = registry.makeGauge(
                            descriptor: MetricNameDescriptor(namespace: "pando", metricName: "last_committed_metric", unitName: "",
                                                             helpText: "Federated evaluation of the last committed version, by metric."),
                            labels: [("metric", name)])
                    }
                    lastMetrics[name]?.set(value)
                }
            }
            lock.unlock()
        }
        return registry.emitToBuffer()
    }
}
