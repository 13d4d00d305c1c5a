import ArgumentParser
import Foundation
import PandoData
import PandoEngine
import PandoFederation
import Logging
import PandoLedger
import PandoServices
import PandoText
import PandoTraining

/// How schools compress their deltas, on the command line (`update.compression` in coordinator.yaml).
extension ClassBalance: ExpressibleByArgument {}
extension RoundDecay: ExpressibleByArgument {}

enum CompressionName: String, ExpressibleByArgument, CaseIterable {
    case none, float16, int8, topk
}

/// Federated strategies selectable on the command line.
enum StrategyName: String, ExpressibleByArgument, CaseIterable {
    case fedavg, fedprox, fedadam, fedavgm
    case trimmedMean = "trimmed-mean"
    case dpFedAvg = "dp-fedavg"
}

struct SimulateCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "simulate",
        abstract: "Simulate federated fine-tuning over N schools: the real coordinator and clients over TLS on loopback.",
        discussion: """
        Splits --data into a stratified held-out test set and N school shards with a seeded \
        Dirichlet(α) label skew (each shard keeps --school-validation-fraction for federated \
        evaluation). Then it runs the production code path on this machine: a district CA and \
        certificates are made in a temporary folder, the coordinator listens on 127.0.0.1, and N \
        school clients dial in over mutual TLS; each round the coordinator sends the head version's \
        hash and the plan, the schools fetch it, train locally, upload their deltas, and the \
        coordinator validates, aggregates with --strategy and commits. After each commit the new \
        global model is scored on the held-out test split (here only: a real coordinator has no \
        test data) and the schools evaluate it on their validation splits.

        Prints per-round test metrics, bytes moved and, unless --centralized-epochs 0, the result of \
        centralized fine-tuning on the same pooled training examples for comparison; writes --csv \
        (per-round metrics) and --plot (SVG).

        RECORDS: the coordinator keeps its state in --state: every global version as a Hugging Face \
        folder named by the SHA-256 of its model.safetensors, state.sqlite, and the signed, \
        hash-chained audit.jsonl (never any text of the data). Each school keeps its own log of what \
        it sent in <state>/schools/<school>.jsonl. At the end the trail is verified as `pando audit \
        verify` does. An existing --state folder is continued from its head version.
        """)

    @OptionGroup var model: ModelOption
    @Option(help: "Labeled data (.csv, .tsv, .jsonl) to divide among the schools.") var data: String
    @OptionGroup var columns: DataColumns
    @Option(help: "classification, multi-label, regression or ordinal (levels in --labels order, or numeric level names by value).") var task: TaskKind = .classification
    @Option(help: "Number of simulated schools.") var schools = 5
    @Option(help: "Dirichlet α of the label skew (small: strongly non-IID; large: near IID).") var alpha = 0.5
    @Option(help: "Fraction of --data held out as the test set (stratified, seeded), unless --test is given.") var testFraction = 0.2
    @Option(help: "Held-out test data; without it --test-fraction of --data is held out.") var test: String?
    @Option(help: "Federated rounds.") var rounds = 5
    @Option(help: "Fraction of schools asked each round.") var fraction = 1.0
    @Option(help: "fedavg, fedprox, fedadam, fedavgm (server momentum) or trimmed-mean.") var strategy: StrategyName = .fedavg
    @Option(help: "FedProx μ.") var mu: Float = 0.01
    @Option(help: "Server learning rate (fedavg/fedprox/trimmed-mean/fedavgm: 1 is plain averaging; fedadam: η, default 1e-3).") var serverLearningRate: Float?
    @Option(help: "fedavgm: server momentum β (v ← β·v + Δ, w ← w + η·v).") var serverMomentum: Float = 0.9
    @Option(help: "FedAdam β1.") var beta1: Float = 0.9
    @Option(help: "FedAdam β2.") var beta2: Float = 0.99
    @Option(help: "FedAdam τ (adaptivity floor).") var tau: Float = 1e-6
    @Option(help: "Trimmed mean: updates dropped at each end per coordinate.") var trim = 1
    @Option(help: "dp-fedavg: each school's delta is clipped to this L2 norm.") var schoolClip: Float = 1
    @Option(help: "dp-fedavg: noise multiplier at the coordinator (noise σ·clip on the sum of clipped deltas).") var schoolNoiseMultiplier: Float = 1
    @Option(help: "Example-level DP-SGD at every school with this noise multiplier.") var dpNoiseMultiplier: Double?
    @Option(help: "DP-SGD's per-example clip.") var dpMaxGradNorm: Float = 1
    @Option(help: "Each school's own ε budget over all rounds (δ 1e-5): rounds beyond it are declined.") var schoolEpsilon: Double?
    @Option(help: "Local epochs per round.") var localEpochs = 1
    @Option(help: "Local AdamW learning rate (fresh optimiser each round).") var learningRate: Float = 5e-5
    @Option(help: "Local warm-up fraction of each round's updates.") var warmupRatio = 0.0
    @Option(help: "How the local learning rate falls over the rounds: none, linear or cosine (round r of R at the rate's value at (r − ½)/R).")
    var roundDecay: RoundDecay = .none
    @Option(help: "Sequences per local update.") var batchSize = 32
    @Option(help: "Tokens per text, [CLS] and [SEP] included.") var maxLength = 128
    @Option(help: "Reject a delta whose L2 norm exceeds this (default: the bound honest AdamW training with the plan can reach).")
    var maxUpdateNorm: Double?
    @Option(help: "How schools compress their deltas: none (Float32), float16, int8 (one scale per row) or topk (with error feedback).")
    var compression: CompressionName = .none
    @Option(help: "Fraction of the trained values a top-k update sends.") var topkDensity = 0.01
    @Flag(help: "Secure aggregation: the coordinator learns only the weighted sum of the schools' updates.") var secureAggregation = false
    @Option(help: "Secure aggregation: SecAgg+ neighbours per school (default: every other school).") var secaggNeighbours: Int?
    @Option(help: "Secure aggregation: shares that rebuild a school's secrets (default: a majority of its neighbours).") var secaggThreshold: Int?
    @Option(help: "Secure aggregation: update values are clipped to ±this before the fixed-point encoding.") var secaggClip = 1.0
    @Option(help: "Secure aggregation: this many schools vanish in the first round (at the share, masked-input and unmasking stages in turn).")
    var secaggDropouts = 0
    @Option(help: "Encoder layers 0..<N are neither trained nor sent.") var freezeLayers = 0
    @Option(help: "Federated LoRA: adapters of this rank (A shared per round, B and the head trained and sent, merged each round).") var loraRank: Int?
    @Option(help: "LoRA α (default 2 × rank).") var loraAlpha: Float?
    @Option(help: "LoRA dropout on the adapter input.") var loraDropout: Float = 0
    @Option(help: "LoRA targets: query,key,value,attention-output,intermediate,output.") var loraTargets = "query,value"
    @Option(help: "How the head reads the encoder: pooler (the family's own head), cls or mean.") var pooling: Pooling = .pooler
    @Option(help: "How each school's loss treats its own label skew (classification): none, weighted, oversampled, present-classes, prior-adjusted, weighted-present-classes or weighted-global (district prior, with --secure-aggregation).")
    var classBalance: ClassBalance = .none
    @Flag(help: "Train without dropout.") var noDropout = false
    @Option(help: "Seed for the split, the shards, school sampling, shuffling and dropout.") var seed: UInt64 = 42
    @Option(help: "Fraction of each school's shard kept for its federated evaluation (0: none).") var schoolValidationFraction = 0.1
    @Option(help: "Accepted updates needed to commit a round (default: all schools asked).") var quorum: Int?
    @Option(help: "Epochs of centralized fine-tuning on the pooled training data, for comparison (0: skip).") var centralizedEpochs = 3
    @Option(help: "Learning rate of the centralized comparison (default: --learning-rate).") var centralizedLearningRate: Float?
    @Option(help: "Per-round metrics CSV to write.") var csv = "simulation.csv"
    @Option(help: "Plot of test accuracy (or the task's headline metric) per round, SVG.") var plot = "simulation.svg"
    @Option(help: "Coordinator state folder: versions, state.sqlite, signed audit log, keys, school logs (continued if it exists).") var state = "pando-state"
    @Option(help: "Federation id recorded in a new --state folder.") var federation = "simulation"
    @Option(help: "Threads for GEMMs and kernels (default: all cores).") var threads: Int?
    @Flag(help: "Show the services' log lines (connections, transfers) on standard error.") var verbose = false

    func run() async throws {
        if let threads { Parallel.workers = max(1, threads) }
        guard schools >= 1 else { throw ValidationError("--schools must be at least 1") }
        guard testFraction > 0, testFraction < 1 else { throw ValidationError("--test-fraction must be in (0, 1)") }
        guard schoolValidationFraction >= 0, schoolValidationFraction < 1 else { throw ValidationError("--school-validation-fraction must be in [0, 1)") }
        guard rounds >= 1 else { throw ValidationError("--rounds must be at least 1") }
        guard UpdateCompression.validDensity(topkDensity) else { throw ValidationError("--topk-density must be in (0, 1]") }
        let format = columns.format(task: task)
        let all = try format.load(URL(fileURLWithPath: data), labels: nil)
        reportSkips(all)
        var rng = SplitMix64(seed: seed)
        let trainData: LabeledDataset, testData: LabeledDataset
        if let test {
            trainData = all
            testData = try format.load(URL(fileURLWithPath: test), labels: task == .regression ? nil : all.labels)
            reportSkips(testData)
        } else {
            (trainData, testData) = all.stratifiedSplit(validationFraction: testFraction, using: &rng)
        }
        guard testData.count > 0 else { throw ValidationError("--test-fraction \(testFraction) leaves no test examples") }
        let shards = try trainData.dirichletShards(schools, alpha: alpha, using: &rng)
        var members: [LoopbackFederation.School] = []
        for (i, shard) in shards.enumerated() {
            guard shard.count > 0 else { throw ValidationError("school \(i + 1) received no examples: use fewer --schools or a larger α") }
            var split = SplitMix64(seed: seed &+ UInt64(i + 1))
            let parts = schoolValidationFraction > 0 && shard.count >= 10
                ? shard.stratifiedSplit(validationFraction: schoolValidationFraction, using: &split) : (shard, nil)
            members.append(LoopbackFederation.School(id: "school-\(i + 1)", training: parts.0, validation: parts.1))
        }

        let folder = try model.resolve()
        let labels = task == .regression ? ["score"] : all.labels.names
        let head = ClassifierHead(objective: task.objective, labels: labels, pooling: pooling)
        let tokenizer = try BertTokenizer(folder: folder)
        let maxLength = maxLength
        var config = CoordinatorConfiguration(
            federationID: federation, task: task, labels: labels, baseModel: folder, stateFolder: URL(fileURLWithPath: state),
            certificate: URL(fileURLWithPath: "/"), privateKey: URL(fileURLWithPath: "/"), caCertificate: URL(fileURLWithPath: "/"),
            revocationList: URL(fileURLWithPath: "/"))
        config.rounds.rounds = rounds
        config.rounds.fraction = fraction
        let asked = min(schools, max(1, Int((Double(schools) * fraction).rounded(.up))))
        config.rounds.minSchools = asked
        config.rounds.quorum = min(quorum ?? asked, asked)
        config.rounds.seed = seed
        config.rounds.federatedEvaluation = schoolValidationFraction > 0
        config.rounds.learningRateDecay = roundDecay
        config.plan.epochs = localEpochs
        config.plan.learningRate = learningRate
        config.plan.warmupRatio = warmupRatio
        config.plan.batchSize = batchSize
        config.plan.maxLength = maxLength
        config.plan.dropout = !noDropout
        config.plan.seed = seed
        config.plan.freezeLayers = freezeLayers
        config.plan.pooling = pooling
        if classBalance != .none {
            guard task == .classification else { throw ValidationError("--class-balance applies to classification, not \(task.rawValue)") }
            guard dpNoiseMultiplier == nil else { throw ValidationError("--class-balance cannot be combined with --dp-noise-multiplier: the weights would come from each school's label counts, outside the DP accountant") }
            guard !classBalance.revealsAbsentClasses || secureAggregation else {
                throw ValidationError("--class-balance \(classBalance.rawValue) leaves the head row of a class a school lacks exactly unchanged, so each update would show which classes that school has none of: add --secure-aggregation, or use weighted")
            }
            if classBalance == .weightedGlobal {
                guard secureAggregation else { throw ValidationError("--class-balance weighted-global sums each school's label fractions, which in the clear would show its label mix: add --secure-aggregation, or use weighted") }
                guard secaggClip >= 1 else { throw ValidationError("--secagg-clip \(secaggClip) would clip the label fractions of --class-balance weighted-global (each up to 1): use at least 1") }
            }
            config.plan.classBalance = classBalance
        }
        if let rank = loraRank {
            let lora = LoRAConfig(rank: rank, alpha: loraAlpha, dropout: loraDropout, targets: try LoRATarget.parseList(loraTargets))
            do { try lora.validate() } catch { throw ValidationError("--lora-rank: \(error)") }
            guard strategy != .fedadam && strategy != .fedavgm else {
                throw ValidationError("--lora-rank works with fedavg, fedprox, trimmed-mean and dp-fedavg, not \(strategy.rawValue)")
            }
            config.plan.lora = lora
        }
        switch compression {
        case .none: config.plan.compression = .none
        case .float16: config.plan.compression = .float16
        case .int8: config.plan.compression = .int8
        case .topk: config.plan.compression = .topK(density: topkDensity)
        }
        var choice = StrategyChoice()
        switch strategy {
        case .fedavg: choice.name = .fedavg
        case .fedprox: choice.name = .fedprox
        case .fedadam: choice.name = .fedadam
        case .fedavgm: choice.name = .fedavgm
        case .trimmedMean: choice.name = .trimmedMean
        case .dpFedAvg: choice.name = .dpFedAvg
        }
        choice.clip = schoolClip
        choice.noiseMultiplier = schoolNoiseMultiplier
        choice.expectedSchools = Int((Double(schools) * fraction).rounded(.up))
        if let sigma = dpNoiseMultiplier { config.plan.privacy = RoundPrivacy(noiseMultiplier: sigma, maxGradientNorm: dpMaxGradNorm) }
        if schoolEpsilon != nil, dpNoiseMultiplier == nil { throw ValidationError("--school-epsilon needs --dp-noise-multiplier (rounds without DP would all be declined)") }
        choice.mu = mu
        choice.serverLearningRate = serverLearningRate
        choice.momentum = serverMomentum
        choice.beta1 = beta1
        choice.beta2 = beta2
        choice.tau = tau
        choice.trim = trim
        choice.maxUpdateNorm = maxUpdateNorm
        config.strategy = choice
        if secureAggregation {
            var settings = SecureAggregationSettings()
            settings.neighbours = secaggNeighbours
            settings.threshold = secaggThreshold
            settings.clip = secaggClip
            config.secureAggregation = settings
            if quorum == nil { config.rounds.quorum = max(1, asked - secaggDropouts) }
            do { try settings.validate(file: "pando simulate", strategy: choice, rounds: config.rounds) } catch {
                throw ValidationError("\(error)")
            }
        } else if secaggDropouts > 0 {
            throw ValidationError("--secagg-dropouts needs --secure-aggregation")
        }

        let pki = FileManager.default.temporaryDirectory.appendingPathComponent("pando-simulate-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: pki) }
        let verbose = self.verbose
        var logger = Logger(label: "pando.simulate") { label in
            var h = StreamLogHandler.standardError(label: label)
            h.logLevel = verbose ? .info : .error
            return h
        }
        logger.logLevel = verbose ? .info : .error
        let loopback = try LoopbackFederation(configuration: config, schools: members, workFolder: pki,
                                              schoolLogFolder: URL(fileURLWithPath: state).appendingPathComponent("schools"),
                                              logger: logger)
        let stages = ["shares", "masked-input", "unmasking"]
        for (i, m) in members.suffix(min(secaggDropouts, members.count)).enumerated() { loopback.secureDropouts[m.id] = stages[i % stages.count] }
        if let e = schoolEpsilon {
            loopback.schoolPrivacy = Dictionary(uniqueKeysWithValues: members.map { ($0.id, SchoolPrivacyBudget(targetEpsilon: e)) })
        }

        // The simulation's own view: the held-out test split, scored after every commit.
        let testSet = EncodedDataset(testData, tokenizer: tokenizer, maxLength: min(maxLength, 512))
        let scoreRange = task == .regression ? Evaluation.inferScoreRange(trainData.examples.compactMap { $0.target.score }) : nil
        let task = self.task
        let evaluateTest: @Sendable (BertModel) throws -> [String: Double] = { model in
            let inference = BatchedInference(model: model, batchSize: 64, maxLength: testSet.sequences.map(\.count).max() ?? 8)
            return Self.withClassRecall(try Evaluation.metrics(logits: inference.logits(testSet.sequences), targets: testSet.targets,
                                                                task: task, labels: labels, scoreRange: scoreRange))
        }
        loopback.coordinator.observeCommit = evaluateTest
        let metricNames = task == .regression ? ["rmse", "mae", "loss"] : task == .multiLabel ? ["micro_f1", "macro_f1", "loss"] : ["accuracy", "macro_f1", "loss"]
        let headline = metricNames[0]
        @Sendable func show(_ m: [String: Double]) -> String {
            metricNames.map { name in String(format: "%@ %.4f", name, m[name] ?? .nan) }.joined(separator: ", ")
        }
        print("federated simulation: \(schools) schools dial in to the coordinator over mutual TLS on 127.0.0.1 (certificates from a temporary district CA)")
        let sizes = members.map { "\($0.training.count)" + ($0.validation.map { "+\($0.count)" } ?? "") }.joined(separator: "/")
        print("data: \(trainData.count) training examples across schools (Dirichlet α = \(alpha); train+validation per school \(sizes)), \(testData.count) test")
        if task == .classification {
            // The label skew each school trains on: what class balance (--class-balance) works against.
            for m in members {
                let counts = zip(all.labels.names, m.training.labelCounts).map { "\(TerminalText.safe($0)) \($1)" }.joined(separator: ", ")
                print("  \(m.id): \(counts)")
            }
        }
        let initialModel = try BertModel.load(from: folder, head: head, seed: seed).0
        print("strategy: \(choice.name.rawValue); \(rounds) round(s), \(asked) of \(schools) schools asked per round, quorum \(config.rounds.quorum); \(localEpochs) local epoch(s) at lr \(learningRate)\(roundDecay == .none ? "" : " (\(roundDecay.rawValue) decay over the rounds)"), batch \(batchSize), max length \(maxLength); \(initialModel.parameterCount) parameters (\(bytes(4 * initialModel.parameterCount)) per delta)")
        let pipeline = UpdatePipeline(layout: FederatedLoRA.layout(config: initialModel.config, head: head, plan: config.plan), plan: config.plan)
        let float32Bytes = 4 * pipeline.selection.trainedCount
        print("updates: \(UpdatePipeline.describe(config.plan)); \(bytes(pipeline.encodedBytes)) per school per round (\(percent(pipeline.encodedBytes, of: float32Bytes)) of the \(bytes(float32Bytes)) Float32 delta of the trained tensors)")

        loopback.coordinator.onProgress = { line in progressLine("  " + line) }
        // Where each round's time goes: the schools share this machine's cores and train one
        // after another on the compute lane (each with every core), not three at once.
        let training = TrainingClock()
        loopback.onSchoolEvent = { school, event in
            if case .trained(let round, let examples, let m) = event {
                training.add(round: round, seconds: m["seconds"] ?? 0)
                progressLine(String(format: "  round %d: %@ trained on %d examples, loss %.4f, %.1f s",
                                    round, school, examples, m["train_loss"] ?? .nan, m["seconds"] ?? 0))
            }
        }
        loopback.coordinator.onRound = { r in
            let left = r.leftOut.isEmpty ? "" : "; left out: " + r.leftOut.sorted { $0.key < $1.key }.map { "\($0.key) (\($0.value))" }.joined(separator: ", ")
            let fed = r.evaluation[headline].map { String(format: "; schools' validation %@ %.4f", headline, $0) } ?? ""
            print(String(format: "round %d %@: %d/%d updates, train loss %.4f, test %@%@; up %@, down %@; %.1f s%@",
                         r.round, r.committed ? "committed \(short(r.version)) (from \(short(r.baseVersion)))" : "ABORTED (kept \(short(r.version)))",
                         r.accepted.count, r.selected.count, r.trainLoss, show(r.test), fed,
                         bytes(Int(r.bytesUp)), bytes(Int(r.bytesDown)), r.seconds, left))
            let trained = training.seconds(round: r.round)
            print(String(format: "  time: %.1f s local training (the schools one after another, each on all %d cores), %.1f s validating, aggregating and writing the version, %.1f s scoring the test split, %.1f s the rest (fetches, transfers, hashing, the schools' evaluation)",
                         trained, Parallel.workers, r.aggregateSeconds, r.testSeconds, max(0, r.seconds - trained - r.aggregateSeconds - r.testSeconds)))
        }
        let initial = try evaluateTest(initialModel)
        print("round 0 (base model): test \(show(initial))")
        let reports = try await loopback.run()
        let committedHead = reports.last?.version ?? ""

        var centralized: [String: Double]? = nil
        if centralizedEpochs > 0 {
            print("centralized comparison: \(centralizedEpochs) epoch(s) on the same \(members.map(\.training.count).reduce(0, +)) training examples pooled, lr \(centralizedLearningRate ?? learningRate)…")
            var options = TrainingOptions()
            options.epochs = centralizedEpochs
            options.learningRate = centralizedLearningRate ?? learningRate
            options.batchSize = batchSize
            options.maxLength = maxLength
            options.seed = seed
            options.warmupRatio = 0.1
            options.patience = nil
            options.dropout = !noDropout
            options.freezeLayers = freezeLayers
            options.pooling = pooling
            let pooled = LabeledDataset(task: trainData.task, labels: trainData.labels,
                                        examples: members.flatMap(\.training.examples))
            let trainer = try Trainer(baseModel: folder, task: task, labels: trainData.labels, options: options)
            let out = pki.appendingPathComponent("centralized")
            // Scored on the test split after every epoch; the last epoch is reported (no selection on test).
            let record = try trainer.run(train: pooled, validation: testData, output: out)
            centralized = record.epochs.last.map { Self.withClassRecall($0.validation) }
            print("centralized: test \(show(centralized ?? [:])) after \(record.epochs.count) epoch(s)")
        }

        try AtomicFile.write(Data(Self.csv(reports, initial: initial).utf8), to: URL(fileURLWithPath: csv))
        let points = [initial[headline] ?? .nan] + reports.map { $0.test[headline] ?? .nan }
        // Bytes per school per round under the chart: what each upload and download cost.
        let traffic = reports.map { r in
            "r\(r.round) ↑\(bytes(Int(r.bytesUp) / max(1, r.accepted.count))) ↓\(bytes(Int(r.bytesDown) / max(1, r.selected.count)))"
        }.joined(separator: "  ")
        try AtomicFile.write(Data(SVGPlot.rounds(points, reference: centralized?[headline], metric: headline,
                                                 title: "\(choice.name.rawValue), \(schools) schools, α = \(alpha), updates \(config.plan.compression)",
                                                 footnote: "per school: " + traffic).utf8),
                             to: URL(fileURLWithPath: plot))

        // Summary.
        let ledger = try CoordinatorLedger(folder: URL(fileURLWithPath: state), readOnly: true)
        print("\nsummary (coordinator and \(schools) school clients over mutual TLS on loopback)")
        print("  rounds:       \(reports.filter(\.committed).count) committed, \(reports.filter { !$0.committed }.count) aborted")
        print("  " + "test \(headline):".padding(toLength: max(14, headline.count + 7), withPad: " ", startingAt: 0)
              + ([String(format: "start %.4f", initial[headline] ?? .nan)]
                 + reports.map { String(format: "r%d %.4f", $0.round, $0.test[headline] ?? .nan) }).joined(separator: " → "))
        if let centralized {
            print(String(format: "  centralized:  %@ %.4f (%d epochs, pooled data)", headline, centralized[headline] ?? .nan, centralizedEpochs))
        }
        let recallLabels = labels.filter { initial[Self.recallKey($0)] != nil }
        if !recallLabels.isEmpty, let last = reports.last {
            func row(_ m: [String: Double]) -> String {
                recallLabels.map { String(format: "%@ %.3f", TerminalText.safe($0), m[Self.recallKey($0)] ?? .nan) }.joined(separator: ", ")
            }
            print("  test recall by class, round \(last.round): \(row(last.test))")
            if let centralized { print("  test recall by class, centralized: \(row(centralized))") }
        }
        let runVersions = Set(reports.flatMap { [$0.baseVersion, $0.version] })
        print("  versions:     (id = SHA-256 of model.safetensors)")
        for v in try ledger.versions() where runVersions.contains(v.id) {
            let origin = v.round.map { "round \($0)" } ?? "base model"
            print("    \(short(v.id))  \(origin), parent \(v.parent.map(short) ?? "none")\(v.id == committedHead ? "  HEAD" : "")")
        }
        let up = reports.map { Int($0.bytesUp) }.reduce(0, +), down = reports.map { Int($0.bytesDown) }.reduce(0, +)
        print("  bytes moved:  \(bytes(up + down)) (updates up \(bytes(up)), global versions down \(bytes(down)))")
        let uploads = reports.map(\.accepted.count).reduce(0, +)
        if uploads > 0 {
            print("  per school per round: up \(bytes(up / uploads)) (\(config.plan.compression); \(percent(up / uploads, of: float32Bytes)) of Float32), down \(bytes(down / max(1, reports.map(\.selected.count).reduce(0, +)))) (new versions: a patch from the one held, or the whole file)")
        }
        let logPath = path(state, "audit.jsonl"), keyPath = path(state, "keys/coordinator.key.pub")
        let schoolLogFolder = URL(fileURLWithPath: state).appendingPathComponent("schools")
        let schoolLogs = ((try? FileManager.default.contentsOfDirectory(atPath: schoolLogFolder.path)) ?? [])
            .filter { $0.hasSuffix(".jsonl") }.sorted().map { path(state, "schools/" + $0) }
        print("  state folder: \(path(state, "")) (state.sqlite, versions/)")
        print("  audit log:    \(logPath)")
        print("  public key:   \(keyPath)")
        print("  school logs:  \(schoolLogs.joined(separator: ", "))")
        print("  per-round metrics: \(csv); plot: \(plot)")
        let command = (["pando audit verify --log", shellQuoted(logPath), "--key", shellQuoted(keyPath)]
            + schoolLogs.flatMap { ["--client-log", shellQuoted($0)] } + ["--checkpoints", shellQuoted(state)]).joined(separator: " ")
        print("  verify:       \(command)")
        let report = AuditVerifier.verify(log: URL(fileURLWithPath: logPath), key: try AuditPublicKey.load(from: URL(fileURLWithPath: keyPath)),
                                          clientLogs: schoolLogs.map { URL(fileURLWithPath: $0) }, checkpoints: URL(fileURLWithPath: state))
        var verdict = "\(report.recordsChecked) records, \(report.validSignatures) signatures valid with key \(report.keyFingerprint); \(report.clientEntriesChecked) school-log entries cross-checked; \(report.versionFilesChecked) version files hashed"
        if !report.notes.isEmpty { verdict += "; \(report.notes.count) note\(report.notes.count == 1 ? "" : "s")" }
        if report.isValid {
            print("audit verify: VERIFIED (\(verdict))")
        } else {
            print("audit verify: FAILED, \(report.problems.count) problem\(report.problems.count == 1 ? "" : "s") (\(verdict))")
            for p in report.problems { print("  \(TerminalText.safe(p.description))") }
            throw ExitCode(1)
        }
    }

    /// The summary metrics plus each class's recall (`recall:NAME`), which shows a rare class
    /// the federated model stops predicting long before accuracy does.
    static func withClassRecall(_ metrics: EvaluationMetrics) -> [String: Double] {
        var summary = metrics.summary
        for score in metrics.classification?.perClass ?? [] { summary[recallKey(score.name)] = score.recall }
        return summary
    }

    static func recallKey(_ label: String) -> String { "recall:" + label }

    /// A CSV field, quoted when it holds a comma, a quote or a line break (RFC 4180).
    static func csvField(_ s: String) -> String {
        s.contains(where: { $0 == "," || $0 == "\"" || $0.isNewline }) ? "\"" + s.replacingOccurrences(of: "\"", with: "\"\"") + "\"" : s
    }

    /// Per-round records as CSV: one row per round, test and federated-evaluation metrics as
    /// columns (`test_recall:NAME` per class for classification).
    static func csv(_ reports: [FederatedRoundReport], initial: [String: Double]) -> String {
        let testNames = Array(Set(reports.flatMap { $0.test.keys } + initial.keys)).sorted()
        let evalNames = Array(Set(reports.flatMap { $0.evaluation.keys })).sorted()
        var lines = [(["round", "version", "committed", "selected", "accepted", "left_out", "examples", "train_loss"]
            + testNames.map { "test_" + $0 } + evalNames.map { "federated_" + $0 }
            + ["evaluation_examples", "bytes_up", "bytes_down", "bytes_up_per_school", "bytes_down_per_school", "aggregate_seconds", "seconds"])
            .map(csvField).joined(separator: ",")]
        func f(_ x: Double?) -> String { x.map { String(format: "%.6g", $0) } ?? "" }
        lines.append((["0", reports.first?.baseVersion ?? "", "true", "0", "0", "0", "0", ""] + testNames.map { f(initial[$0]) } + evalNames.map { _ in "" }
            + ["0", "0", "0", "0", "0", "0", "0"]).joined(separator: ","))
        for r in reports {
            let upEach = r.bytesUp / UInt64(max(1, r.accepted.count)), downEach = r.bytesDown / UInt64(max(1, r.selected.count))
            let traffic: [String] = [String(r.evaluationExamples), String(r.bytesUp), String(r.bytesDown), String(upEach), String(downEach),
                                     f(r.aggregateSeconds), f(r.seconds)]
            lines.append(([String(r.round), r.version, String(r.committed), String(r.selected.count), String(r.accepted.count),
                           String(r.leftOut.count), String(r.examples), f(r.trainLoss)]
                + testNames.map { f(r.test[$0]) } + evalNames.map { f(r.evaluation[$0]) } + traffic).joined(separator: ","))
        }
        return lines.joined(separator: "\n") + "\n"
    }

    /// `folder/name` as the user wrote `folder` (relative stays relative).
    func path(_ folder: String, _ name: String) -> String {
        var f = folder
        while f.count > 1, f.hasSuffix("/") { f.removeLast() }
        return f + "/" + name
    }

    func shellQuoted(_ s: String) -> String {
        s.allSatisfy { $0.isLetter || $0.isNumber || "/._-+:=@".contains($0) } ? s : "'" + s.replacingOccurrences(of: "'", with: "'\\''") + "'"
    }

    func percent(_ n: Int, of whole: Int) -> String { String(format: "%.2f%%", 100 * Double(n) / Double(max(whole, 1))) }

    func bytes(_ n: Int) -> String {
        let units = ["B", "KB", "MB", "GB"]
        var x = Double(n), u = 0
        while x >= 1000, u < units.count - 1 { x /= 1000; u += 1 }
        return u == 0 ? "\(n) B" : String(format: "%.1f %@", x, units[u])
    }
}

/// Local training seconds per round, summed over the schools (their `.trained` events).
final class TrainingClock: @unchecked Sendable {
    private let lock = NSLock()
    private var byRound: [Int: Double] = [:]
    func add(round: Int, seconds: Double) { lock.withLock { byRound[round, default: 0] += seconds } }
    func seconds(round: Int) -> Double { lock.withLock { byRound[round] ?? 0 } }
}
