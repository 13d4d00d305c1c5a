import Foundation
import PandoData
import PandoEngine
import PandoText
import PandoTraining

/// Settings of an in-process federated simulation.
public struct SimulationSettings: Sendable {
    public var rounds = 3
    /// Fraction of schools asked each round (at least one), drawn with the seed.
    public var fractionPerRound = 1.0
    /// Accepted updates needed to commit a round.
    public var quorum = 1
    /// The coordinator's local-training plan (the strategy may amend it, e.g. FedProx's μ).
    public var plan = LocalTrainingPlan()
    /// The validator's L2 bound on a delta.
    public var maxUpdateNorm: Double = 1e4
    public var evaluationBatchSize = 64
    public var seed: UInt64 = 42
    public init() {}
}

/// One school of a simulation: an id and its private data.
public struct SimulatedSchool: Sendable {
    public var id: String
    public var data: LabeledDataset
    public init(id: String, data: LabeledDataset) {
        self.id = id
        self.data = data
    }
}

/// What one round did: who took part, what was rejected and why, the
/// global model's test metrics after the round, bytes and time.
public struct RoundRecord: Codable, Sendable {
    public var round: Int
    /// The version trained from and the version the round produced (the same when aborted).
    public var baseVersion: String
    public var version: String
    public var committed: Bool
    public var schools: [String]
    /// School id → rejection reason.
    public var rejected: [String: String]
    public var examples: Int
    /// Example-weighted mean of the schools' mean local training loss.
    public var trainLoss: Double
    /// L2 norm of each accepted delta.
    public var updateNorms: [String: Double]
    /// SHA-256 of each update's wire bytes (`ModelUpdate.wireSHA256`), accepted or not; empty without a ledger.
    public var updateSHA256: [String: String] = [:]
    /// Test metrics of the global model after the round (`accuracy`, `macro_f1`, `rmse`, `loss`, …).
    public var test: [String: Double]
    /// Bytes of one delta on the wire as Float32: 4 × parameter count.
    public var bytesPerUpdate: Int
    /// Deltas sent to the coordinator this round (accepted or not).
    public var bytesUp: Int
    /// Global weights sent to the schools asked this round.
    public var bytesDown: Int
    /// Local training time summed over schools, and the longest school.
    public var trainSeconds: Double
    public var slowestSchoolSeconds: Double
    public var aggregateSeconds: Double
    public var evaluateSeconds: Double
    public var seconds: Double
}

/// Runs federated rounds in one process, as a stepping stone until the TLS
/// transport exists: the schools are simulated, but the coordinator side is
/// the production code (`AggregationRound`: `UpdateValidator`, the strategy's
/// aggregator and commit) and the school side is `LocalUpdater`.
///
/// Schools train one after another from the same global weights; each delta
/// is folded in and released before the next school starts, so memory is the
/// global model, one local copy (plus its optimiser state while training) and
/// the aggregator, whatever the number of schools.
public final class LocalFederation {
    public let global: BertModel
    public let strategy: any Strategy
    public let settings: SimulationSettings
    public let schools: [SimulatedSchool]
    public let labels: [String]
    public let task: TaskKind
    /// The current global version id: with a ledger (`record(to:)`) the SHA-256
    /// of its model.safetensors; without one `v0` for the base, `v<round>` after each commit.
    public private(set) var version = "v0"
    /// The number the next round gets (after the ledger's last round when it was reopened).
    public private(set) var nextRound = 1
    /// The coordinator's record keeper, when attached.
    public private(set) var ledger: FederationLedger?
    private let encoded: [EncodedDataset]
    private let testSequences: [[Int32]]
    private let testTargets: [Target]
    private let scoreRange: [Int]?
    private let updater: LocalUpdater
    private let evaluator: BatchedInference
    private var rng: SplitMix64
    /// Called after each school's local training with its id, the round and its training metrics.
    public var onSchoolTrained: ((String, Int, [String: Double]) -> Void)?
    /// Test hook: alters an update after local training, before it is sent (a faulty or hostile school).
    var tamper: ((inout ModelUpdate) -> Void)?

    /// - Parameters:
    ///   - global: the starting model; its parameters are updated in place each committed round.
    ///   - schools: each school's training data (same task and label map as `test`).
    public init(global: BertModel, tokenizer: BertTokenizer, schools: [SimulatedSchool], test: LabeledDataset,
                strategy: any Strategy, settings: SimulationSettings) throws {
        guard !schools.isEmpty else { throw TrainingError("a simulation needs at least one school") }
        guard test.count > 0 else { throw TrainingError("the test set is empty") }
        guard settings.rounds >= 1 else { throw TrainingError("rounds must be at least 1") }
        guard settings.fractionPerRound > 0, settings.fractionPerRound <= 1 else { throw TrainingError("fraction of schools per round must be in (0, 1]") }
        guard settings.plan.epochs >= 1, settings.plan.batchSize >= 1 else { throw TrainingError("local epochs and batch size must be at least 1") }
        guard Set(schools.map(\.id)).count == schools.count else { throw TrainingError("school ids must be distinct") }
        for s in schools {
            guard s.data.count > 0 else { throw TrainingError("school \(s.id) has no examples") }
            guard s.data.task == test.task else { throw TrainingError("school \(s.id) data is \(s.data.task.rawValue), the test data \(test.task.rawValue)") }
            if test.task != .regression, s.data.labels != test.labels { throw TrainingError("school \(s.id) has a different label map from the test data") }
        }
        task = test.task
        labels = task == .regression ? ["score"] : test.labels.names
        guard global.head.outputs == (task == .regression ? 1 : labels.count), TaskKind(objective: global.head.objective) == task else {
            throw TrainingError("the model's head (\(global.head.objective.rawValue), \(global.head.outputs) outputs) does not fit a \(task.rawValue) task with \(labels.count) labels")
        }
        self.global = global
        self.strategy = strategy
        self.settings = settings
        self.schools = schools
        let maxLength = min(settings.plan.maxLength, global.config.maxPositions)
        encoded = schools.map { EncodedDataset($0.data, tokenizer: tokenizer, maxLength: maxLength) }
        let testData = EncodedDataset(test, tokenizer: tokenizer, maxLength: maxLength)
        testSequences = testData.sequences
        testTargets = testData.targets
        scoreRange = task == .regression
            ? Evaluation.inferScoreRange(schools.flatMap { $0.data.examples.map { $0.target.score! } }) : nil
        updater = LocalUpdater(like: global)
        evaluator = BatchedInference(model: global, batchSize: settings.evaluationBatchSize, maxLength: maxLength)
        rng = SplitMix64(seed: settings.seed ^ 0xFED_A7E)
    }

    /// Makes `ledger` the coordinator's record keeper: a new state folder gets
    /// the current global weights as its base version; an existing one is
    /// continued from its head version, whose weights replace the global ones.
    /// Returns true when an existing federation was reopened.
    @discardableResult
    public func record(to ledger: FederationLedger) throws -> Bool {
        precondition(self.ledger == nil, "a ledger is already attached")
        let opened = try ledger.open(global: global, task: task.rawValue)
        self.ledger = ledger
        version = opened.version
        nextRound = opened.nextRound
        return opened.resumed
    }

    /// Test metrics of the current global model.
    public func evaluate() throws -> EvaluationMetrics {
        try Evaluation.metrics(logits: evaluator.logits(testSequences), targets: testTargets, task: task,
                               labels: labels, scoreRange: scoreRange)
    }

    /// The schools asked in the next round (all, or a seeded sample of `fractionPerRound`).
    func selectSchools() -> [Int] {
        let n = schools.count
        let k = min(n, max(1, Int((Double(n) * settings.fractionPerRound).rounded())))
        if k == n { return Array(0..<n) }
        var order = Array(0..<n)
        seededShuffle(&order, using: &rng)
        return order.prefix(k).sorted()
    }

    /// Runs the next round: select, train each school, validate and aggregate,
    /// commit, evaluate. With a ledger every step is recorded (round started,
    /// schools selected, each update received or rejected with its SHA-256, the
    /// new version or the abort) and each school logs what it sent.
    public func runRound() throws -> RoundRecord {
        let start = Date()
        let base = version
        let plan = strategy.plan(round: nextRound, configured: settings.plan)
        var round = nextRound
        if let ledger {
            let started = try ledger.startRound(strategy: strategy, plan: plan, maxUpdateNorm: settings.maxUpdateNorm,
                                                quorum: settings.quorum, fractionPerRound: settings.fractionPerRound)
            guard started.base == base else {
                try? ledger.abort(round: started.number, reason: "the simulation's global version differs from the ledger's head")
                throw TrainingError("the ledger's head \(started.base.prefix(12)) is not the simulation's version \(base.prefix(12))")
            }
            round = started.number
        }
        nextRound = round + 1
        do {
            return try runRound(round, base: base, plan: plan, start: start)
        } catch {
            // Never the error's text: it could quote data. The round stays unusable.
            if let ledger, (try? ledger.ledger.roundInFlight())?.number == round {
                try? ledger.abort(round: round, reason: "the round stopped with an error (\(type(of: error)))")
            }
            throw error
        }
    }

    private func runRound(_ round: Int, base: String, plan: LocalTrainingPlan, start: Date) throws -> RoundRecord {
        let aggregation = AggregationRound(round: round, baseVersion: base, layout: global.layout, strategy: strategy,
                                           maxNorm: settings.maxUpdateNorm)
        let selected = selectSchools()
        for s in selected { try ledger?.selected(schools[s].id, round: round, base: base) }
        var trainSeconds = 0.0, slowest = 0.0, aggregateSeconds = 0.0, weightedLoss = 0.0
        var bytesPerUpdate = 0, sent = 0
        var hashes = [String: String]()
        for s in selected {
            var schoolPlan = plan
            schoolPlan.seed = settings.seed
            var update = try updater.train(school: schools[s].id, data: encoded[s], from: global, round: round,
                                           baseVersion: base, plan: schoolPlan)
            tamper?(&update)
            onSchoolTrained?(update.school, round, update.metrics)
            let t = update.metrics["seconds"] ?? 0
            trainSeconds += t
            slowest = max(slowest, t)
            bytesPerUpdate = update.wireBytes
            sent += 1
            // In-process the bytes the school sends are the bytes the coordinator
            // receives, so one hash serves the school's log and the coordinator's record.
            let sha = ledger == nil ? nil : update.wireSHA256
            if let sha {
                hashes[update.school] = sha
                try ledger?.schoolSent(update, sha256: sha)
            }
            let a = Date()
            let rejection = aggregation.submit(update)
            if rejection == nil {
                weightedLoss += (update.metrics["train_loss"] ?? 0) * Double(update.exampleCount)
            }
            aggregateSeconds += Date().timeIntervalSince(a)
            if let sha, let ledger {
                let norm = rejection == nil ? aggregation.accepted.last!.norm : DeltaMath.norm(update.delta.buffer)
                try ledger.received(update, sha256: sha, norm: norm, rejection: rejection)
            }
        }
        let a = Date()
        let committed = aggregation.commit(to: global.parameters, quorum: settings.quorum)
        aggregateSeconds += Date().timeIntervalSince(a)
        let e = Date()
        let metrics = try evaluate()
        let evaluateSeconds = Date().timeIntervalSince(e)
        if committed {
            if let ledger {
                let examples = Dictionary(aggregation.accepted.map { ($0.school, $0.exampleCount) }, uniquingKeysWith: { a, _ in a })
                version = try ledger.commit(round: round, global: global, metrics: metrics.summary, examplesBySchool: examples)
            } else {
                version = "v\(round)"
            }
        } else if let ledger {
            let needed = max(1, settings.quorum)
            try ledger.abort(round: round, reason: "quorum not reached: \(aggregation.accepted.count) of \(selected.count) updates accepted, \(needed) required")
        }
        let examples = aggregation.totalExamples
        var record = RoundRecord(
            round: round, baseVersion: base, version: version, committed: committed,
            schools: selected.map { schools[$0].id },
            rejected: Dictionary(aggregation.rejected.map { ($0.school, $0.reason.description) }, uniquingKeysWith: { a, _ in a }),
            examples: examples, trainLoss: examples > 0 ? weightedLoss / Double(examples) : .nan,
            updateNorms: Dictionary(aggregation.accepted.map { ($0.school, $0.norm) }, uniquingKeysWith: { a, _ in a }),
            test: metrics.summary, bytesPerUpdate: bytesPerUpdate, bytesUp: sent * bytesPerUpdate,
            bytesDown: selected.count * 4 * global.parameterCount,
            trainSeconds: trainSeconds, slowestSchoolSeconds: slowest, aggregateSeconds: aggregateSeconds,
            evaluateSeconds: evaluateSeconds, seconds: Date().timeIntervalSince(start))
        record.updateSHA256 = hashes
        return record
    }

    /// Runs `settings.rounds` rounds; `onRound` sees each record as it completes.
    public func run(onRound: (RoundRecord) -> Void = { _ in }) throws -> [RoundRecord] {
        var records: [RoundRecord] = []
        for _ in 0..<settings.rounds {
            let record = try runRound()
            records.append(record)
            onRound(record)
        }
        return records
    }

    /// Per-round records as CSV: one row per round, test metrics as columns.
    public static func csv(_ records: [RoundRecord], initial: [String: Double]? = nil, initialVersion: String = "v0") -> String {
        let metricNames = Array(Set(records.flatMap { $0.test.keys } + (initial?.keys.map { $0 } ?? []))).sorted()
        var lines = [(["round", "version", "committed", "schools", "rejected", "examples", "train_loss"]
            + metricNames.map { "test_" + $0 }
            + ["bytes_per_update", "bytes_up", "bytes_down", "train_seconds", "slowest_school_seconds",
               "aggregate_seconds", "evaluate_seconds", "seconds"]).joined(separator: ",")]
        func f(_ x: Double?) -> String { x.map { String(format: "%.6g", $0) } ?? "" }
        if let initial {
            lines.append((["0", initialVersion, "true", "0", "0", "0", ""] + metricNames.map { f(initial[$0]) }
                + ["0", "0", "0", "0", "0", "0", "0", "0"]).joined(separator: ","))
        }
        for r in records {
            lines.append(([String(r.round), r.version, String(r.committed), String(r.schools.count), String(r.rejected.count),
                           String(r.examples), f(r.trainLoss)]
                + metricNames.map { f(r.test[$0]) }
                + [String(r.bytesPerUpdate), String(r.bytesUp), String(r.bytesDown), f(r.trainSeconds), f(r.slowestSchoolSeconds),
                   f(r.aggregateSeconds), f(r.evaluateSeconds), f(r.seconds)]).joined(separator: ","))
        }
        return lines.joined(separator: "\n") + "\n"
    }
}
