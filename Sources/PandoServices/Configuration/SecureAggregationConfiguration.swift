import Crypto
import Foundation
import PandoFederation
import PandoWire

/// `secure_aggregation:` in coordinator.yaml: every training round runs the protocol of
/// Bonawitz et al. (with SecAgg+'s sparse neighbour graph when `neighbours` is set), so the
/// coordinator learns only the example-weighted sum of the schools' updates.
///
/// ```yaml
/// secure_aggregation:
///   threshold: 3              # t: shares that rebuild one school's secrets (default: a majority of its neighbours)
///   neighbours: 8             # SecAgg+: each school masks with k others (default: all, the complete graph)
///   clip: 1.0                 # every update value is clipped to [-clip, clip] before the fixed-point encoding
///   min_survivors: 3          # fewest masked inputs the coordinator unmasks (default: t)
///   stage_deadline_seconds: 120   # key and share exchange and unmasking, each (the masked input has the round deadline)
/// ```
public struct SecureAggregationSettings: Sendable, Equatable {
    public var threshold: Int?
    public var neighbours: Int?
    public var clip = 1.0
    public var minimumSurvivors: Int?
    public var stageDeadline: Duration = .seconds(120)
    public init() {}

    /// The parameters of one round over `roster` (canonical order applied by the state
    /// machine): the neighbour graph, t, the fixed-point encoding sized so that the sum of
    /// every school's input cannot wrap for this roster and weight cap. Throws (naming the
    /// setting) when the roster is too small for the threshold.
    public func roundConfig(federation: String, round: Int, roster: [String], roundSeed: [UInt8],
                            vectorLength: Int, weightCap: Int, setupDigest: [UInt8] = []) throws -> SecAggConfig {
        let n = roster.count
        let cap = UInt32(clamping: min(weightCap, Int(FixedPointEncoding.maximumWeight(maxSchools: n))))
        let encoding = try FixedPointEncoding(clip: clip, maxWeight: max(1, cap), maxSchools: n)
        return try SecAggConfig(context: SecAggContext(federationID: federation, round: UInt64(round), setup: setupDigest), schools: roster,
                                topology: neighbours.map { .harary(degree: $0) } ?? .complete, roundSeed: roundSeed,
                                threshold: threshold, minimumSurvivors: minimumSurvivors, vectorLength: vectorLength,
                                encoding: encoding)
    }

    /// Checks the settings and what they must compose with; errors name the field (`file` says where from).
    public func validate(file: String, strategy: StrategyChoice, rounds: RoundSettings) throws {
        func bad(_ field: String, _ why: String) -> ConfigurationError { ConfigurationError(file: file, field: field, why) }
        if let t = threshold, t < 2 { throw bad("secure_aggregation.threshold", "must be at least 2") }
        if let k = neighbours, k < 2 { throw bad("secure_aggregation.neighbours", "must be at least 2") }
        if let t = threshold, let k = neighbours, t > k {
            throw bad("secure_aggregation.threshold", "\(t) is more than the \(k) neighbours that hold a school's shares")
        }
        if let m = minimumSurvivors, m < 2 { throw bad("secure_aggregation.min_survivors", "must be at least 2") }
        if !(clip > 0 && clip.isFinite) { throw bad("secure_aggregation.clip", "must be a positive finite number") }
        if stageDeadline <= .zero { throw bad("secure_aggregation.stage_deadline_seconds", "must be positive") }
        if strategy.name == .trimmedMean || strategy.name == .dpFedAvg {
            throw bad("strategy.name", "\(strategy.name.rawValue) needs each school's update, and secure aggregation reveals only their weighted mean: use fedavg, fedprox or fedadam, or turn secure_aggregation off")
        }
        if rounds.minSchools < 3 {
            throw bad("selection.min_schools", "secure aggregation needs rounds of at least 3 schools (t ≥ 2 shares of each school's secrets among the others)")
        }
    }
}

/// `secure_aggregation:` in school.yaml: a school that requires it declines training rounds
/// without it, and rounds that would unmask fewer than `min_survivors` schools' inputs.
///
/// ```yaml
/// secure_aggregation: {required: true, min_survivors: 3}
/// ```
public struct SchoolSecureAggregationPolicy: Sendable, Equatable {
    public var required = false
    /// Fewest schools whose sum this school agrees to have unmasked (its own included).
    public var minimumSurvivors = 2
    public init(required: Bool = false, minimumSurvivors: Int = 2) {
        self.required = required
        self.minimumSurvivors = minimumSurvivors
    }
}

struct SecureAggregationSection: Decodable {
    var threshold: Int?
    var neighbours: Int?
    var clip: Double?
    var min_survivors: Int?
    var stage_deadline_seconds: Int?
    enum Keys: String, CodingKey, CaseIterable { case threshold, neighbours, clip, min_survivors, stage_deadline_seconds }
    init(from decoder: Decoder) throws {
        try decoder.rejectUnknownKeys(Keys.self)
        let c = try decoder.container(keyedBy: Keys.self)
        threshold = try c.decodeIfPresent(Int.self, forKey: .threshold)
        neighbours = try c.decodeIfPresent(Int.self, forKey: .neighbours)
        clip = try c.decodeIfPresent(Double.self, forKey: .clip)
        min_survivors = try c.decodeIfPresent(Int.self, forKey: .min_survivors)
        stage_deadline_seconds = try c.decodeIfPresent(Int.self, forKey: .stage_deadline_seconds)
    }

    var settings: SecureAggregationSettings {
        var s = SecureAggregationSettings()
        s.threshold = threshold
        s.neighbours = neighbours
        s.clip = clip ?? s.clip
        s.minimumSurvivors = min_survivors
        if let d = stage_deadline_seconds { s.stageDeadline = .seconds(d) }
        return s
    }
}

struct SchoolSecureAggregationSection: Decodable {
    var required: Bool?
    var min_survivors: Int?
    enum Keys: String, CodingKey, CaseIterable { case required, min_survivors }
    init(from decoder: Decoder) throws {
        try decoder.rejectUnknownKeys(Keys.self)
        let c = try decoder.container(keyedBy: Keys.self)
        required = try c.decodeIfPresent(Bool.self, forKey: .required)
        min_survivors = try c.decodeIfPresent(Int.self, forKey: .min_survivors)
    }
}

extension SecureAggregationSetup {
    /// SHA-256 of every field, in a fixed binary layout: what each school binds its keys to
    /// (``SecAggContext/setup``), so a coordinator cannot give schools different setups.
    var bindingDigest: [UInt8] {
        var bytes = Array("pando-secagg-v1/setup".utf8)
        func append<T: FixedWidthInteger>(_ v: T) { withUnsafeBytes(of: v.littleEndian) { bytes += $0 } }
        append(UInt32(roster.count))
        for school in roster { append(UInt32(school.value.utf8.count)); bytes += Array(school.value.utf8) }
        append(threshold)
        append(minimumSurvivors)
        append(neighbours.map { UInt64($0) } ?? UInt64.max)
        bytes += roundSeed.bytes
        append(clip.bitPattern)
        append(scale.bitPattern)
        append(maxWeight)
        append(vectorLength)
        return Array(SHA256.hash(data: bytes))
    }
}
