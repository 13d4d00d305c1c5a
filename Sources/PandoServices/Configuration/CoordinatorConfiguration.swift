import Foundation
import PandoData
import PandoEngine
import PandoFederation

/// Which aggregation method a federation uses, and its settings, as written in
/// the configuration file; `make(layout:)` turns it into the `Strategy` value.
public struct StrategyChoice: Sendable, Equatable, Decodable {
    public enum Name: String, Sendable, Codable, CaseIterable {
        case fedavg, fedprox, fedadam, fedavgm
        case trimmedMean = "trimmed-mean"
        case dpFedAvg = "dp-fedavg"
    }

    public var name: Name = .fedavg
    /// FedProx's μ.
    public var mu: Float = 0.01
    /// FedAvg/FedProx/trimmed mean: 1 is plain averaging; FedAdam: η; FedAvgM: η (default 1).
    public var serverLearningRate: Float?
    /// FedAvgM's server momentum β.
    public var momentum: Float = 0.9
    public var beta1: Float = 0.9
    public var beta2: Float = 0.99
    public var tau: Float = 1e-6
    /// Trimmed mean: updates dropped at each end per coordinate.
    public var trim = 1
    /// The validator's L2 bound on one delta; `nil` (`auto`, the default) bounds each update
    /// by what honest AdamW training with the round's plan on its example count can reach
    /// (``UpdateBounds/maxDeltaNorm(plan:examples:trainedParameters:baseNorm:)``). A number is
    /// used as well, whichever is smaller.
    public var maxUpdateNorm: Double? = nil
    /// A school's weight is capped at this multiple of the median example count of the last
    /// committed round (its update is still taken, at the capped weight; the audit says so).
    public var weightCapMultiple = 3.0
    /// A school reporting more training examples than this is left out as implausible.
    public var maxExamplesPerSchool = 1_000_000
    /// The median the weight cap uses before any round has committed (so the first round is
    /// capped too): weights above `weightCapMultiple` × this count as the cap.
    public var initialMedianExamples = 1_000
    /// DP-FedAvg: each school's delta is clipped to `clip` and noise of `noiseMultiplier`·clip
    /// added to the sum, divided by `expectedSchools` (default: `selection.min_schools`).
    public var clip: Float = 1
    public var noiseMultiplier: Float = 1
    public var expectedSchools: Int?
    public var delta = 1e-5

    public init(name: Name = .fedavg) { self.name = name }

    enum Keys: String, CodingKey, CaseIterable {
        case name, mu, server_learning_rate, momentum, beta1, beta2, tau, trim, max_update_norm, weight_cap_multiple, max_examples_per_school
        case initial_median_examples, clip, noise_multiplier, expected_schools, delta
    }

    public init(from decoder: Decoder) throws {
        try decoder.rejectUnknownKeys(Keys.self)
        let c = try decoder.container(keyedBy: Keys.self)
        name = try c.decodeIfPresent(Name.self, forKey: .name) ?? .fedavg
        mu = try c.decodeIfPresent(Float.self, forKey: .mu) ?? mu
        serverLearningRate = try c.decodeIfPresent(Float.self, forKey: .server_learning_rate)
        momentum = try c.decodeIfPresent(Float.self, forKey: .momentum) ?? momentum
        beta1 = try c.decodeIfPresent(Float.self, forKey: .beta1) ?? beta1
        beta2 = try c.decodeIfPresent(Float.self, forKey: .beta2) ?? beta2
        tau = try c.decodeIfPresent(Float.self, forKey: .tau) ?? tau
        trim = try c.decodeIfPresent(Int.self, forKey: .trim) ?? trim
        if (try? c.decodeIfPresent(String.self, forKey: .max_update_norm)) == "auto" {
            maxUpdateNorm = nil
        } else {
            maxUpdateNorm = try c.decodeIfPresent(Double.self, forKey: .max_update_norm) ?? maxUpdateNorm
        }
        weightCapMultiple = try c.decodeIfPresent(Double.self, forKey: .weight_cap_multiple) ?? weightCapMultiple
        maxExamplesPerSchool = try c.decodeIfPresent(Int.self, forKey: .max_examples_per_school) ?? maxExamplesPerSchool
        initialMedianExamples = try c.decodeIfPresent(Int.self, forKey: .initial_median_examples) ?? initialMedianExamples
        clip = try c.decodeIfPresent(Float.self, forKey: .clip) ?? clip
        noiseMultiplier = try c.decodeIfPresent(Float.self, forKey: .noise_multiplier) ?? noiseMultiplier
        expectedSchools = try c.decodeIfPresent(Int.self, forKey: .expected_schools)
        delta = try c.decodeIfPresent(Double.self, forKey: .delta) ?? delta
    }

    /// The strategy value, with server state sized for `layout`.
    public func make(layout: ParameterLayout) -> any Strategy {
        switch name {
        case .fedavg: return FedAvg(serverLearningRate: serverLearningRate ?? 1)
        case .fedprox: return FedProx(mu: mu, serverLearningRate: serverLearningRate ?? 1)
        case .fedadam:
            return FedAdam(layout: layout, settings: .init(learningRate: serverLearningRate ?? 1e-3, beta1: beta1, beta2: beta2, tau: tau))
        case .fedavgm: return FedAvgM(layout: layout, serverLearningRate: serverLearningRate ?? 1, momentum: momentum)
        case .trimmedMean: return TrimmedMean(trim: trim, serverLearningRate: serverLearningRate ?? 1)
        case .dpFedAvg:
            return DPFedAvg(clip: clip, noiseMultiplier: noiseMultiplier, expectedSchools: expectedSchools ?? 1, delta: delta,
                            serverLearningRate: serverLearningRate ?? 1)
        }
    }

    /// Problems a person should fix before a federation starts.
    func validate(file: String) throws {
        func bad(_ field: String, _ why: String) -> ConfigurationError { ConfigurationError(file: file, field: "strategy.\(field)", why) }
        if let lr = serverLearningRate, !(lr > 0 && lr.isFinite) { throw bad("server_learning_rate", "must be positive and finite") }
        if name == .fedprox, !(mu >= 0 && mu.isFinite) { throw bad("mu", "must be a finite number of at least 0") }
        if name == .fedadam {
            if !(beta1 >= 0 && beta1 < 1) { throw bad("beta1", "must be in [0, 1)") }
            if !(beta2 >= 0 && beta2 < 1) { throw bad("beta2", "must be in [0, 1)") }
            if !(tau > 0 && tau.isFinite) { throw bad("tau", "must be positive and finite") }
        }
        if name == .fedavgm, !(momentum >= 0 && momentum < 1) { throw bad("momentum", "must be in [0, 1)") }
        if name == .trimmedMean, trim < 0 { throw bad("trim", "must be at least 0") }
        if let bound = maxUpdateNorm, !(bound > 0 && bound.isFinite) { throw bad("max_update_norm", "must be a positive finite number or auto") }
        if !(weightCapMultiple >= 1 && weightCapMultiple.isFinite) { throw bad("weight_cap_multiple", "must be a finite number of at least 1") }
        if maxExamplesPerSchool < 1 { throw bad("max_examples_per_school", "must be at least 1") }
        if initialMedianExamples < 1 { throw bad("initial_median_examples", "must be at least 1") }
        if name == .dpFedAvg {
            if !(clip > 0 && clip.isFinite) { throw bad("clip", "must be positive and finite") }
            if !(noiseMultiplier >= 0 && noiseMultiplier <= 1000) { throw bad("noise_multiplier", "must be in [0, 1000]") }
            if let m = expectedSchools, m < 1 { throw bad("expected_schools", "must be at least 1") }
            if !(delta > 0 && delta < 1) { throw bad("delta", "must be in (0, 1)") }
        }
    }
}

/// How rounds are run: the part of a federation's settings that is not the model.
public struct RoundSettings: Sendable, Equatable {
    public var rounds = 5
    /// Fraction of connected schools asked each round …
    public var fraction = 1.0
    /// … but at least this many; a round does not start with fewer connected.
    public var minSchools = 1
    /// Accepted updates needed to commit a round.
    public var quorum = 1
    /// A round that has not gathered every selected school's update by then commits
    /// with what it has (if the quorum holds) or is aborted.
    public var roundDeadline: Duration = .seconds(3600)
    /// How long a round waits for `minSchools` to be connected; after that the coordinator
    /// stops with an error naming the shortfall (restart it once schools are online).
    public var waitForSchools: Duration = .seconds(600)
    /// Ask the schools to score each new version on their validation data.
    public var federatedEvaluation = true
    public var evaluationDeadline: Duration = .seconds(900)
    public var seed: UInt64 = 42
    /// How the local learning rate falls over the `rounds` rounds (`local.round_decay`).
    public var learningRateDecay: RoundDecay = .none
    public init() {}
}

/// Everything `pando-coordinator --config FILE` reads (YAML).
///
/// ```yaml
/// federation:
///   id: district-questions
///   task: classification            # classification | multi-label | regression
///   labels: [ABBR, DESC, ENTY, HUM, LOC, NUM]
///   base_model: ../models/default   # a Hugging Face BERT folder
///   rounds: 5
///   seed: 42
///   pooling: pooler                 # pooler | cls | mean: how the head reads the encoder
/// selection: {fraction: 1.0, min_schools: 2, quorum: 2, round_deadline_seconds: 3600}
/// local: {epochs: 1, learning_rate: 5e-5, batch_size: 32, max_length: 128}
///                                   # round_decay: none | linear | cosine (the rate over `rounds`)
///                                   # class_balance: none | weighted | oversampled | present-classes | prior-adjusted | weighted-present-classes | weighted-global
/// strategy: {name: fedadam, server_learning_rate: 1e-3, beta1: 0.9, beta2: 0.99}
/// update: {compression: int8}          # none | float16 | int8 | topk (with topk_density: 0.01); lora: {rank: 8}
/// secure_aggregation: {neighbours: 8}  # optional: the coordinator sees only the sum (SecureAggregationSettings)
/// coordinator:
///   listen: 0.0.0.0
///   port: 7443
///   state: coordinator-state
///   certificate: certs/coordinator.pem
///   key: certs/coordinator.key
///   ca: certs/ca.pem
///   crl: certs/crl.pem
/// ```
/// Relative paths are relative to the configuration file's folder.
public struct CoordinatorConfiguration: Sendable {
    public var federationID: String
    public var task: TaskKind
    /// Class or label names in model output order (`["score"]` for regression).
    public var labels: [String]
    public var baseModel: URL
    public var rounds = RoundSettings()
    public var plan = LocalTrainingPlan()
    public var strategy = StrategyChoice()
    public var listen = "0.0.0.0"
    public var port = 7443
    public var stateFolder: URL
    public var certificate: URL
    public var privateKey: URL
    public var caCertificate: URL
    public var revocationList: URL
    /// The status page, JSON API and metrics listener (`status:`); nil when not configured.
    public var status: StatusSettings?
    /// Secure aggregation of every training round (`secure_aggregation:`); nil: off.
    public var secureAggregation: SecureAggregationSettings?

    public init(federationID: String, task: TaskKind, labels: [String], baseModel: URL, stateFolder: URL,
                certificate: URL, privateKey: URL, caCertificate: URL, revocationList: URL) {
        self.federationID = federationID
        self.task = task
        self.labels = labels
        self.baseModel = baseModel
        self.stateFolder = stateFolder
        self.certificate = certificate
        self.privateKey = privateKey
        self.caCertificate = caCertificate
        self.revocationList = revocationList
    }

    /// Reads and checks `url`; errors name the file and the field.
    public static func load(from url: URL) throws -> CoordinatorConfiguration {
        let file = try ConfigurationFile.load(CoordinatorFile.self, from: url)
        let f = file.federation, c = file.coordinator
        var config = CoordinatorConfiguration(
            federationID: f.id, task: f.task, labels: f.task == .regression ? ["score"] : (f.labels ?? []),
            baseModel: resolve(f.base_model, relativeTo: url), stateFolder: resolve(c.state, relativeTo: url),
            certificate: resolve(c.certificate, relativeTo: url), privateKey: resolve(c.key, relativeTo: url),
            caCertificate: resolve(c.ca, relativeTo: url),
            revocationList: c.crl.map { resolve($0, relativeTo: url) } ?? resolve("crl.pem", relativeTo: resolve(c.ca, relativeTo: url)))
        config.listen = c.listen ?? config.listen
        config.port = c.port ?? config.port
        config.rounds.rounds = f.rounds ?? config.rounds.rounds
        config.rounds.seed = f.seed ?? config.rounds.seed
        if let s = file.selection {
            config.rounds.fraction = s.fraction ?? config.rounds.fraction
            config.rounds.minSchools = s.min_schools ?? config.rounds.minSchools
            config.rounds.quorum = s.quorum ?? config.rounds.quorum
            if let d = s.round_deadline_seconds { config.rounds.roundDeadline = .seconds(d) }
            if let d = s.wait_for_schools_seconds { config.rounds.waitForSchools = .seconds(d) }
            config.rounds.federatedEvaluation = s.federated_evaluation ?? config.rounds.federatedEvaluation
            if let d = s.evaluation_deadline_seconds { config.rounds.evaluationDeadline = .seconds(d) }
        }
        if let l = file.local {
            config.plan = try l.apply(to: config.plan, file: url.path)
            config.rounds.learningRateDecay = try l.roundDecay(file: url.path) ?? config.rounds.learningRateDecay
        }
        config.plan.seed = config.rounds.seed
        config.plan.pooling = f.pooling ?? config.plan.pooling
        if let u = file.update {
            config.plan.compression = try u.compression(file: url.path)
            config.plan.lora = try u.lora?.config(file: url.path)
        }
        if let s = file.strategy { config.strategy = s }
        if config.strategy.name == .dpFedAvg, config.strategy.expectedSchools == nil { config.strategy.expectedSchools = config.rounds.minSchools }
        config.status = try file.status?.settings(relativeTo: url)
        config.secureAggregation = file.secure_aggregation?.settings
        try config.validate(file: url.path, labelsGiven: f.labels != nil)
        return config
    }

    func validate(file: String, labelsGiven: Bool) throws {
        func bad(_ field: String, _ why: String) -> ConfigurationError { ConfigurationError(file: file, field: field, why) }
        if task != .regression {
            if let problem = FederationStart.labelProblem(task: task, labels: labelsGiven ? labels : []) { throw bad("federation.labels", problem) }
        }
        guard !federationID.isEmpty else { throw bad("federation.id", "must not be empty") }
        let r = rounds
        if r.rounds < 1 { throw bad("federation.rounds", "must be at least 1") }
        if !(r.fraction > 0 && r.fraction <= 1) { throw bad("selection.fraction", "must be in (0, 1]") }
        if r.minSchools < 1 { throw bad("selection.min_schools", "must be at least 1") }
        if r.quorum < 1 { throw bad("selection.quorum", "must be at least 1") }
        if r.roundDeadline <= .zero { throw bad("selection.round_deadline_seconds", "must be positive") }
        if r.waitForSchools <= .zero { throw bad("selection.wait_for_schools_seconds", "must be positive") }
        if r.evaluationDeadline <= .zero { throw bad("selection.evaluation_deadline_seconds", "must be positive") }
        if r.quorum > r.minSchools { throw bad("selection.quorum", "\(r.quorum) can never be met with min_schools \(r.minSchools): raise min_schools") }
        try plan.check(file: file)
        if plan.classBalance != .none {
            if task != .classification { throw bad("local.class_balance", "applies to classification, not \(task.rawValue)") }
            if plan.privacy != nil { throw bad("local.class_balance", "cannot be combined with local.privacy: the weights would come from each school's label counts, which the DP accountant does not cover") }
            if plan.classBalance.revealsAbsentClasses && secureAggregation == nil {
                throw bad("local.class_balance", "\(plan.classBalance.rawValue) leaves the head row of a class a school lacks exactly unchanged, so each update would show which classes that school has none of: use it with secure_aggregation, or use weighted")
            }
            if plan.classBalance == .weightedGlobal {
                guard let secureAggregation else {
                    throw bad("local.class_balance", "weighted-global sums each school's label fractions, which in the clear would show its label mix: use it with secure_aggregation, or use weighted")
                }
                if secureAggregation.clip < 1 {
                    throw bad("secure_aggregation.clip", "\(secureAggregation.clip) would clip the label fractions weighted-global adds (each up to 1): use a clip of at least 1")
                }
                if labels.count > ClassBalance.maxGlobalClasses {
                    throw bad("local.class_balance", "weighted-global takes at most \(ClassBalance.maxGlobalClasses) labels (its prior rides in each assignment); this federation has \(labels.count)")
                }
            }
        }
        try strategy.validate(file: file)
        if plan.lora != nil {
            if strategy.name == .fedadam || strategy.name == .fedavgm {
                throw bad("strategy.name", "\(strategy.name.rawValue) keeps server state of the full model, and LoRA rounds average adapters: use fedavg or fedprox with update.lora")
            }
            if plan.freezeLayers > 0 { throw bad("local.freeze_layers", "LoRA already freezes every base weight: leave freeze_layers out with update.lora") }
        }
        if !(1...65535).contains(port) { throw bad("coordinator.port", "must be 1–65535") }
        try status?.validate(file: file)
        try secureAggregation?.validate(file: file, strategy: strategy, rounds: rounds)
    }
}

extension LocalTrainingPlan {
    func check(file: String) throws {
        func bad(_ field: String, _ why: String) -> ConfigurationError { ConfigurationError(file: file, field: "local.\(field)", why) }
        // The same ranges schools accept in an assignment (`RoundParameters.decode`).
        if !(1...1000).contains(epochs) { throw bad("epochs", "must be 1–1000") }
        if !(learningRate > 0 && learningRate < 1) { throw bad("learning_rate", "must be in (0, 1)") }
        if !(1...4096).contains(batchSize) { throw bad("batch_size", "must be 1–4096") }
        if !(3...8192).contains(maxLength) { throw bad("max_length", "must be 3–8192 ([CLS] text [SEP] at least)") }
        if !(warmupRatio >= 0 && warmupRatio < 1) { throw bad("warmup_ratio", "must be in [0, 1)") }
        if !(weightDecay >= 0 && weightDecay.isFinite) { throw bad("weight_decay", "must be a finite number of at least 0") }
    }
}

// MARK: File schema

struct CoordinatorFile: Decodable {
    var federation: FederationSection
    var selection: SelectionSection?
    var local: LocalSection?
    var strategy: StrategyChoice?
    var update: UpdateSection?
    var coordinator: CoordinatorSection
    var status: StatusSection?
    var secure_aggregation: SecureAggregationSection?

    enum Keys: String, CodingKey, CaseIterable { case federation, selection, local, strategy, update, coordinator, status, secure_aggregation }
    init(from decoder: Decoder) throws {
        try decoder.rejectUnknownKeys(Keys.self)
        let c = try decoder.container(keyedBy: Keys.self)
        federation = try c.decode(FederationSection.self, forKey: .federation)
        selection = try c.decodeIfPresent(SelectionSection.self, forKey: .selection)
        local = try c.decodeIfPresent(LocalSection.self, forKey: .local)
        strategy = try c.decodeIfPresent(StrategyChoice.self, forKey: .strategy)
        update = try c.decodeIfPresent(UpdateSection.self, forKey: .update)
        coordinator = try c.decode(CoordinatorSection.self, forKey: .coordinator)
        status = try c.decodeIfPresent(StatusSection.self, forKey: .status)
        secure_aggregation = try c.decodeIfPresent(SecureAggregationSection.self, forKey: .secure_aggregation)
    }
}

struct FederationSection: Decodable {
    var id: String
    var task: TaskKind
    var labels: [String]?
    var base_model: String
    var rounds: Int?
    var seed: UInt64?
    var pooling: Pooling?
    enum Keys: String, CodingKey, CaseIterable { case id, task, labels, base_model, rounds, seed, pooling }
    init(from decoder: Decoder) throws {
        try decoder.rejectUnknownKeys(Keys.self)
        let c = try decoder.container(keyedBy: Keys.self)
        id = try c.decode(String.self, forKey: .id)
        task = try c.decode(TaskKind.self, forKey: .task)
        labels = try c.decodeIfPresent([String].self, forKey: .labels)
        base_model = try c.decode(String.self, forKey: .base_model)
        rounds = try c.decodeIfPresent(Int.self, forKey: .rounds)
        seed = try c.decodeIfPresent(UInt64.self, forKey: .seed)
        pooling = try c.decodeIfPresent(Pooling.self, forKey: .pooling)
    }
}

struct SelectionSection: Decodable {
    var fraction: Double?
    var min_schools: Int?
    var quorum: Int?
    var round_deadline_seconds: Int64?
    var wait_for_schools_seconds: Int64?
    var federated_evaluation: Bool?
    var evaluation_deadline_seconds: Int64?
    enum Keys: String, CodingKey, CaseIterable {
        case fraction, min_schools, quorum, round_deadline_seconds, wait_for_schools_seconds, federated_evaluation, evaluation_deadline_seconds
    }
    init(from decoder: Decoder) throws {
        try decoder.rejectUnknownKeys(Keys.self)
        let c = try decoder.container(keyedBy: Keys.self)
        fraction = try c.decodeIfPresent(Double.self, forKey: .fraction)
        min_schools = try c.decodeIfPresent(Int.self, forKey: .min_schools)
        quorum = try c.decodeIfPresent(Int.self, forKey: .quorum)
        round_deadline_seconds = try c.decodeIfPresent(Int64.self, forKey: .round_deadline_seconds)
        wait_for_schools_seconds = try c.decodeIfPresent(Int64.self, forKey: .wait_for_schools_seconds)
        federated_evaluation = try c.decodeIfPresent(Bool.self, forKey: .federated_evaluation)
        evaluation_deadline_seconds = try c.decodeIfPresent(Int64.self, forKey: .evaluation_deadline_seconds)
    }
}

struct LocalSection: Decodable {
    var values: [Keys: Double] = [:]
    var dropout: Bool?
    var linear_decay: Bool?
    var freeze_embeddings: Bool?
    var privacy: PrivacySection?
    var class_balance: String?
    var round_decay: String?
    enum Keys: String, CodingKey, CaseIterable {
        case epochs, learning_rate, batch_size, max_length, warmup_ratio, weight_decay, max_gradient_norm, dropout, linear_decay
        case freeze_embeddings, privacy, freeze_layers, class_balance, round_decay
    }
    /// `local.privacy`: DP-SGD at every school.
    struct PrivacySection: Decodable {
        var noise_multiplier: Double
        var max_gradient_norm: Double?
        var delta: Double?
        enum Keys: String, CodingKey, CaseIterable { case noise_multiplier, max_gradient_norm, delta }
        init(from decoder: Decoder) throws {
            try decoder.rejectUnknownKeys(Keys.self)
            let c = try decoder.container(keyedBy: Keys.self)
            noise_multiplier = try c.decode(Double.self, forKey: .noise_multiplier)
            max_gradient_norm = try c.decodeIfPresent(Double.self, forKey: .max_gradient_norm)
            delta = try c.decodeIfPresent(Double.self, forKey: .delta)
        }
    }
    init(from decoder: Decoder) throws {
        try decoder.rejectUnknownKeys(Keys.self)
        let c = try decoder.container(keyedBy: Keys.self)
        freeze_embeddings = try c.decodeIfPresent(Bool.self, forKey: .freeze_embeddings)
        privacy = try c.decodeIfPresent(PrivacySection.self, forKey: .privacy)
        class_balance = try c.decodeIfPresent(String.self, forKey: .class_balance)
        round_decay = try c.decodeIfPresent(String.self, forKey: .round_decay)
        for key in Keys.allCases where ![.dropout, .linear_decay, .freeze_embeddings, .privacy, .class_balance, .round_decay].contains(key) {
            if let v = try c.decodeIfPresent(Double.self, forKey: key) { values[key] = v }
        }
        dropout = try c.decodeIfPresent(Bool.self, forKey: .dropout)
        linear_decay = try c.decodeIfPresent(Bool.self, forKey: .linear_decay)
    }

    /// `local.round_decay`: nil when absent.
    func roundDecay(file: String) throws -> RoundDecay? {
        guard let name = round_decay else { return nil }
        guard let decay = RoundDecay(rawValue: name) else {
            throw ConfigurationError(file: file, field: "local.round_decay",
                                     "'\(name)' is not one of \(RoundDecay.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        return decay
    }

    func apply(to plan: LocalTrainingPlan, file: String) throws -> LocalTrainingPlan {
        var p = plan
        func whole(_ key: Keys) throws -> Int? {
            guard let v = values[key] else { return nil }
            guard v.rounded() == v, abs(v) < 1e9 else {
                throw ConfigurationError(file: file, field: "local.\(key.rawValue)", "must be a whole number")
            }
            return Int(v)
        }
        p.epochs = try whole(.epochs) ?? p.epochs
        p.batchSize = try whole(.batch_size) ?? p.batchSize
        p.maxLength = try whole(.max_length) ?? p.maxLength
        p.learningRate = values[.learning_rate].map(Float.init) ?? p.learningRate
        p.warmupRatio = values[.warmup_ratio] ?? p.warmupRatio
        p.weightDecay = values[.weight_decay].map(Float.init) ?? p.weightDecay
        if let g = values[.max_gradient_norm] { p.maxGradientNorm = g > 0 ? Float(g) : nil }
        p.dropout = dropout ?? p.dropout
        p.linearDecay = linear_decay ?? p.linearDecay
        if let n = try whole(.freeze_layers) {
            guard n >= 0 else { throw ConfigurationError(file: file, field: "local.freeze_layers", "must not be negative") }
            p.freezeLayers = n
        }
        if let dp = privacy {
            guard dp.noise_multiplier > 0, dp.noise_multiplier <= 1000 else {
                throw ConfigurationError(file: file, field: "local.privacy.noise_multiplier", "must be in (0, 1000]")
            }
            let clip = dp.max_gradient_norm ?? 1, delta = dp.delta ?? 1e-5
            guard clip > 0, clip <= 1e6 else { throw ConfigurationError(file: file, field: "local.privacy.max_gradient_norm", "must be in (0, 1e6]") }
            guard delta > 0, delta < 1 else { throw ConfigurationError(file: file, field: "local.privacy.delta", "must be in (0, 1)") }
            p.privacy = RoundPrivacy(noiseMultiplier: dp.noise_multiplier, maxGradientNorm: Float(clip), delta: delta)
        }
        if let name = class_balance {
            guard let balance = ClassBalance(rawValue: name) else {
                throw ConfigurationError(file: file, field: "local.class_balance",
                                         "'\(name)' is not one of \(ClassBalance.allCases.map(\.rawValue).joined(separator: ", "))")
            }
            p.classBalance = balance
        }
        if let freeze = freeze_embeddings {
            guard freeze || p.privacy != nil else {
                throw ConfigurationError(file: file, field: "local.freeze_embeddings",
                                         "training the embedding tables would reveal which words each school's students used; it is allowed only with differential privacy (local.privacy)")
            }
            p.freezeEmbeddings = freeze
        }
        return p
    }
}

/// `update: {compression: none|float16|int8|topk, topk_density: 0.01}`: how schools
/// compress their deltas (``UpdateCompression``).
struct UpdateSection: Decodable {
    var compression: String?
    var topk_density: Double?
    var lora: LoRASection?
    enum Keys: String, CodingKey, CaseIterable { case compression, topk_density, lora }
    init(from decoder: Decoder) throws {
        try decoder.rejectUnknownKeys(Keys.self)
        let c = try decoder.container(keyedBy: Keys.self)
        compression = try c.decodeIfPresent(String.self, forKey: .compression)
        topk_density = try c.decodeIfPresent(Double.self, forKey: .topk_density)
        lora = try c.decodeIfPresent(LoRASection.self, forKey: .lora)
    }

    /// `update.lora: {rank: 8, alpha: 16, dropout: 0.1, targets: [query, value]}`: federated LoRA (``FederatedLoRA``).
    struct LoRASection: Decodable {
        var rank: Int
        var alpha: Float?
        var dropout: Float?
        var targets: [String]?
        enum Keys: String, CodingKey, CaseIterable { case rank, alpha, dropout, targets }
        init(from decoder: Decoder) throws {
            try decoder.rejectUnknownKeys(Keys.self)
            let c = try decoder.container(keyedBy: Keys.self)
            rank = try c.decode(Int.self, forKey: .rank)
            alpha = try c.decodeIfPresent(Float.self, forKey: .alpha)
            dropout = try c.decodeIfPresent(Float.self, forKey: .dropout)
            targets = try c.decodeIfPresent([String].self, forKey: .targets)
        }

        func config(file: String) throws -> LoRAConfig {
            let targets: [LoRATarget]
            do { targets = try self.targets.map { try LoRATarget.parseList($0.joined(separator: ",")) } ?? [.query, .value] } catch {
                throw ConfigurationError(file: file, field: "update.lora.targets", "\(error)")
            }
            let lora = LoRAConfig(rank: rank, alpha: alpha, dropout: dropout ?? 0, targets: targets)
            do { try lora.validate() } catch { throw ConfigurationError(file: file, field: "update.lora", "\(error)") }
            return lora
        }
    }

    func compression(file: String) throws -> UpdateCompression {
        if let d = topk_density {
            guard compression == "topk" else {
                throw ConfigurationError(file: file, field: "update.topk_density", "applies only with compression: topk")
            }
            guard UpdateCompression.validDensity(d) else {
                throw ConfigurationError(file: file, field: "update.topk_density", "must be in (0, 1] (0.01 sends 1% of the values)")
            }
        }
        switch compression ?? "none" {
        case "none": return .none
        case "float16": return .float16
        case "int8": return .int8
        case "topk": return .topK(density: topk_density ?? 0.01)
        case let other: throw ConfigurationError(file: file, field: "update.compression", "'\(other)' is not none, float16, int8 or topk")
        }
    }
}

struct CoordinatorSection: Decodable {
    var listen: String?
    var port: Int?
    var state: String
    var certificate: String
    var key: String
    var ca: String
    var crl: String?
    enum Keys: String, CodingKey, CaseIterable { case listen, port, state, certificate, key, ca, crl }
    init(from decoder: Decoder) throws {
        try decoder.rejectUnknownKeys(Keys.self)
        let c = try decoder.container(keyedBy: Keys.self)
        listen = try c.decodeIfPresent(String.self, forKey: .listen)
        port = try c.decodeIfPresent(Int.self, forKey: .port)
        state = try c.decode(String.self, forKey: .state)
        certificate = try c.decode(String.self, forKey: .certificate)
        key = try c.decode(String.self, forKey: .key)
        ca = try c.decode(String.self, forKey: .ca)
        crl = try c.decodeIfPresent(String.self, forKey: .crl)
    }
}
