import ArgumentParser
import Foundation
import PandoData
import PandoEngine
import PandoFederation
import PandoLedger
import PandoText
import PandoTraining

/// Federated strategies selectable on the command line.
enum StrategyName: String, ExpressibleByArgument, CaseIterable {
    case fedavg, fedprox, fedadam
    case trimmedMean = "trimmed-mean"
}

struct SimulateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "simulate",
        abstract: "Simulate federated fine-tuning over N schools in this process (no network yet).",
        discussion: """
        Splits --data into a stratified held-out test set and N school shards with a seeded \
        Dirichlet(α) label skew, then runs federated rounds: every school trains locally from the \
        global weights, its delta is validated and aggregated by --strategy, and the new global \
        model is scored on the test set. Per-round metrics are printed and written to --csv.

        RECORDS: the coordinator keeps its state in --state: every global version (the base model, \
        then each committed round) as a Hugging Face folder named by the SHA-256 of its \
        model.safetensors, state.sqlite, and the signed, hash-chained audit.jsonl (school selected, \
        each update's SHA-256, L2 norm and size, rejections with their reason, commits and aborts; \
        never any text of the data). Each school keeps its own log of what it sent in \
        <state>/schools/<school>.jsonl. At the end the trail is verified as `pando audit verify` \
        does, and the command to repeat that check is printed. An existing --state folder is \
        continued from its head version.

        IN-PROCESS: schools and coordinator run in this one process and exchange deltas in \
        memory. The aggregation, validation and strategy code are the coordinator's own, but the \
        mutual-TLS transport is not built yet, so nothing here goes over a network.
        """)

    @OptionGroup var model: ModelOption
    @Option(help: "Labeled data (.csv, .tsv, .jsonl) to divide among the schools.") var data: String
    @OptionGroup var columns: DataColumns
    @Option(help: "classification, multi-label or regression.") var task: TaskKind = .classification
    @Option(help: "Number of simulated schools.") var schools = 5
    @Option(help: "Dirichlet α of the label skew (small: strongly non-IID; large: near IID).") var alpha = 0.5
    @Option(help: "Fraction of --data held out as the test set (stratified, seeded), unless --test is given.") var testFraction = 0.2
    @Option(help: "Held-out test data; without it --test-fraction of --data is held out.") var test: String?
    @Option(help: "Federated rounds.") var rounds = 5
    @Option(help: "Fraction of schools asked each round.") var fraction = 1.0
    @Option(help: "fedavg, fedprox, fedadam or trimmed-mean.") var strategy: StrategyName = .fedavg
    @Option(help: "FedProx μ.") var mu: Float = 0.01
    @Option(help: "Server learning rate (fedavg/fedprox/trimmed-mean: 1 is plain averaging; fedadam: η, default 1e-3).") var serverLearningRate: Float?
    @Option(help: "FedAdam β1.") var beta1: Float = 0.9
    @Option(help: "FedAdam β2.") var beta2: Float = 0.99
    @Option(help: "FedAdam τ (adaptivity floor).") var tau: Float = 1e-6
    @Option(help: "Trimmed mean: updates dropped at each end per coordinate.") var trim = 1
    @Option(help: "Local epochs per round.") var localEpochs = 1
    @Option(help: "Local AdamW learning rate (fresh optimiser each round).") var learningRate: Float = 5e-5
    @Option(help: "Local warm-up fraction of each round's updates.") var warmupRatio = 0.0
    @Option(help: "Sequences per local update.") var batchSize = 32
    @Option(help: "Tokens per text, [CLS] and [SEP] included.") var maxLength = 128
    @Option(help: "Reject a delta whose L2 norm exceeds this.") var maxUpdateNorm = 1e4
    @Flag(help: "Train without dropout.") var noDropout = false
    @Option(help: "Seed for the split, the shards, school sampling, shuffling and dropout.") var seed: UInt64 = 42
    @Option(help: "Per-round metrics CSV to write.") var csv = "simulation.csv"
    @Option(help: "Coordinator state folder: versions, state.sqlite, signed audit log, keys, school logs (continued if it exists).") var state = "pando-state"
    @Option(help: "Federation id recorded in a new --state folder.") var federation = "simulation"
    @Option(help: "Threads for GEMMs and kernels (default: all cores).") var threads: Int?

    func run() throws {
        if let threads { Parallel.workers = max(1, threads) }
        guard schools >= 1 else { throw ValidationError("--schools must be at least 1") }
        guard testFraction > 0, testFraction < 1 else { throw ValidationError("--test-fraction must be in (0, 1)") }
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

        let folder = try model.resolve()
        let head = ClassifierHead(objective: task.objective, labels: task == .regression ? ["score"] : all.labels.names)
        let (global, _) = try BertModel.load(from: folder, head: head, seed: seed)
        let tokenizer = try BertTokenizer(folder: folder)

        let chosen: any Strategy
        switch strategy {
        case .fedavg: chosen = FedAvg(serverLearningRate: serverLearningRate ?? 1)
        case .fedprox: chosen = FedProx(mu: mu, serverLearningRate: serverLearningRate ?? 1)
        case .fedadam:
            chosen = FedAdam(layout: global.layout, settings: .init(learningRate: serverLearningRate ?? 1e-3, beta1: beta1, beta2: beta2, tau: tau))
        case .trimmedMean: chosen = TrimmedMean(trim: trim, serverLearningRate: serverLearningRate ?? 1)
        }
        var settings = SimulationSettings()
        settings.rounds = rounds
        settings.fractionPerRound = fraction
        settings.maxUpdateNorm = maxUpdateNorm
        settings.seed = seed
        settings.plan.epochs = localEpochs
        settings.plan.learningRate = learningRate
        settings.plan.warmupRatio = warmupRatio
        settings.plan.batchSize = batchSize
        settings.plan.maxLength = maxLength
        settings.plan.dropout = !noDropout
        settings.plan.seed = seed

        let simulated = shards.enumerated().map { SimulatedSchool(id: "school-\($0.offset + 1)", data: $0.element) }
        print("IN-PROCESS SIMULATION: \(schools) schools and the coordinator run in this process; deltas are exchanged in memory (the TLS transport is not built yet).")
        print("data: \(trainData.count) training examples across schools (Dirichlet α = \(alpha), sizes \(shards.map(\.count).map(String.init).joined(separator: "/"))), \(testData.count) test")
        print("strategy: \(chosen.name); \(rounds) rounds, \(localEpochs) local epoch(s) at lr \(learningRate), batch \(batchSize); \(global.parameterCount) parameters (\(bytes(4 * global.parameterCount)) per delta)")

        let federation = try LocalFederation(global: global, tokenizer: tokenizer, schools: simulated, test: testData,
                                             strategy: chosen, settings: settings)
        let stateURL = URL(fileURLWithPath: state)
        let ledger = try FederationLedger(folder: stateURL, federationID: self.federation, tokenizerFolder: folder)
        defer { ledger.close() }
        let resumed = try federation.record(to: ledger)
        let baseVersion = federation.version
        if resumed {
            print("state: \(state) (continuing federation '\(try ledger.ledger.federation()?.id ?? "?")' from version \(short(baseVersion)) at round \(federation.nextRound)\(chosen.state.isEmpty ? "" : "; \(chosen.name)'s server state starts afresh"))")
        } else {
            print("state: \(state) (new federation '\(self.federation)', base version \(short(baseVersion)))")
        }
        federation.onSchoolTrained = { school, round, metrics in
            FileHandle.standardError.write(Data(String(format: "  round %d: %@ trained, loss %.4f, %.0f steps, %.1f s\n",
                                                       round, school, metrics["train_loss"] ?? .nan, metrics["steps"] ?? 0,
                                                       metrics["seconds"] ?? 0).utf8))
        }
        let metricNames = task == .regression ? ["rmse", "mae", "loss"] : task == .multiLabel ? ["micro_f1", "macro_f1", "loss"] : ["accuracy", "macro_f1", "loss"]
        func show(_ m: [String: Double]) -> String {
            metricNames.map { name in String(format: "%@ %.4f", name, m[name] ?? .nan) }.joined(separator: ", ")
        }
        let initial = try federation.evaluate()
        print("round \(federation.nextRound - 1) (\(resumed ? "version" : "base model") \(short(baseVersion))): test \(show(initial.summary))")
        let records = try federation.run { r in
            let rejected = r.rejected.isEmpty ? "" : "; rejected: " + r.rejected.sorted { $0.key < $1.key }.map { "\($0.key) (\($0.value))" }.joined(separator: ", ")
            print(String(format: "round %d %@: %d schools, train loss %.4f, test %@; up %@, down %@; %.1f s%@",
                         r.round, r.committed ? "committed \(short(r.version)) (from \(short(r.baseVersion)))" : "ABORTED (kept \(short(r.version)))",
                         r.schools.count, r.trainLoss, show(r.test), bytes(r.bytesUp), bytes(r.bytesDown), r.seconds, rejected))
        }
        try AtomicFile.write(Data(LocalFederation.csv(records, initial: initial.summary, initialVersion: baseVersion).utf8),
                             to: URL(fileURLWithPath: csv))

        // Summary.
        let headline = metricNames[0]
        print("\nsummary (in-process simulation)")
        print("  rounds:       \(records.filter(\.committed).count) committed, \(records.filter { !$0.committed }.count) aborted")
        print("  " + "test \(headline):".padding(toLength: max(14, headline.count + 7), withPad: " ", startingAt: 0)
              + ([String(format: "start %.4f", initial.summary[headline] ?? .nan)]
                 + records.map { String(format: "r%d %.4f", $0.round, $0.test[headline] ?? .nan) }).joined(separator: " → "))
        let runVersions = Set([baseVersion] + records.filter(\.committed).map(\.version))
        print("  versions:     (id = SHA-256 of model.safetensors)")
        for v in try ledger.ledger.versions() where runVersions.contains(v.id) {
            let origin = v.round.map { "round \($0)" } ?? "base model"
            print("    \(short(v.id))  \(origin), parent \(v.parent.map(short) ?? "none")\(v.id == federation.version ? "  HEAD" : "")")
        }
        let up = records.map(\.bytesUp).reduce(0, +), down = records.map(\.bytesDown).reduce(0, +)
        print("  bytes moved:  \(bytes(up + down)) (updates up \(bytes(up)), global weights down \(bytes(down)))")
        let logPath = path(state, "audit.jsonl"), keyPath = path(state, "keys/coordinator.key.pub")
        let schoolLogs = ledger.schoolLogURLs.map { path(state, "schools/" + $0.lastPathComponent) }
        print("  state folder: \(path(state, "")) (state.sqlite, versions/)")
        print("  audit log:    \(logPath)")
        print("  public key:   \(keyPath)")
        print("  school logs:  \(schoolLogs.joined(separator: ", "))")
        print("  per-round metrics: \(csv)")
        let command = (["pando audit verify --log", shellQuoted(logPath), "--key", shellQuoted(keyPath)]
            + schoolLogs.flatMap { ["--client-log", shellQuoted($0)] } + ["--checkpoints", shellQuoted(state)]).joined(separator: " ")
        print("  verify:       \(command)")
        let report = try ledger.verify()
        var verdict = "\(report.recordsChecked) records, \(report.validSignatures) signatures valid with key \(report.keyFingerprint); \(report.clientEntriesChecked) school-log entries cross-checked; \(report.versionFilesChecked) version files hashed"
        if !report.notes.isEmpty { verdict += "; \(report.notes.count) note\(report.notes.count == 1 ? "" : "s")" }
        if report.isValid {
            print("audit verify: VERIFIED (\(verdict))")
        } else {
            print("audit verify: FAILED, \(report.problems.count) problem\(report.problems.count == 1 ? "" : "s") (\(verdict))")
            for p in report.problems { print("  \(p)") }
            throw ExitCode(1)
        }
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

    func bytes(_ n: Int) -> String {
        let units = ["B", "KB", "MB", "GB"]
        var x = Double(n), u = 0
        while x >= 1000, u < units.count - 1 { x /= 1000; u += 1 }
        return u == 0 ? "\(n) B" : String(format: "%.1f %@", x, units[u])
    }
}
