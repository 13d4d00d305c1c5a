import PandoEngine

/// How a school compresses its delta before it goes on the wire (`update.compression` in
/// coordinator.yaml, carried in the round's plan). The coordinator decodes with the same value.
///
/// - `none`: the plain Float32 file (``UpdateFile``), 4 bytes a value.
/// - `float16`: IEEE half precision, 2 bytes a value (relative error ≤ 2⁻¹¹ in the normal range).
/// - `int8`: symmetric 8-bit with one Float32 scale per output row of each 2-D tensor
///   (`scale = max|row| / 127`, error ≤ scale / 2 per value); 1-D tensors (biases, LayerNorm) are
///   kept in float16, because one scale for a whole bias vector loses its small entries and
///   they are 0.1% of MiniLM's values. About 1 byte a value.
/// - `topK(density:)`: only the `⌈density · n⌉` largest |values| of the trained values, as
///   (index, Float32 value) pairs, 8 bytes each; the school keeps what it did not send as a
///   residual and adds it to its next delta (error feedback, ``TopKResidual``).
public enum UpdateCompression: Sendable, Equatable, Codable, CustomStringConvertible {
    case none, float16, int8
    case topK(density: Double)

    /// The configuration and command-line name.
    public var name: String {
        switch self {
        case .none: "none"
        case .float16: "float16"
        case .int8: "int8"
        case .topK: "topk"
        }
    }

    public var description: String {
        if case .topK(let d) = self { return "topk (density \(d))" }
        return name
    }

    /// The number a round plan carries for it (`RoundParameters`), and back.
    public var code: Int {
        switch self {
        case .none: 0
        case .float16: 1
        case .int8: 2
        case .topK: 3
        }
    }

    /// A top-k density must keep at least one value and at most all of them.
    public static func validDensity(_ d: Double) -> Bool { d > 0 && d <= 1 && d.isFinite }

    /// Values a top-k update of `count` trained values carries.
    public static func topKCount(density: Double, of count: Int) -> Int {
        max(1, min(count, Int((density * Double(count)).rounded(.up))))
    }
}

/// One named step of an update's journey from the school's trained weights to the
/// coordinator's accumulator, with its parameters. The school runs the steps in order; the
/// coordinator undoes them in reverse. Each is recorded in the update file's header
/// (``CompressedUpdateFile``) and, as text, in the round's audit record, so a privacy officer
/// can see what ran. Later steps slot in as more values: differential-privacy clipping and
/// noise before `compress`, a secure-aggregation mask after it, LoRA adapters as another
/// selection.
public struct UpdateTransform: Sendable, Equatable, CustomStringConvertible {
    /// Lowercase ASCII letters, digits and `-`, at most 32 bytes (the header's limit).
    public var name: String
    /// Numbers only (the header stores Float64s), keys at most 32 bytes.
    public var parameters: [String: Double]

    public init(_ name: String, _ parameters: [String: Double] = [:]) {
        self.name = name
        self.parameters = parameters
    }

    /// `name(key=value,…)`, keys sorted: the audit record's form.
    public var description: String {
        guard !parameters.isEmpty else { return name }
        return name + "(" + parameters.keys.sorted().map { "\($0)=\(Self.number(parameters[$0]!))" }.joined(separator: ",") + ")"
    }

    static func number(_ v: Double) -> String { v.rounded() == v && abs(v) < 1e15 ? String(Int64(v)) : String(v) }
}

/// The transforms a round's plan asks for, in the order the school applies them: which
/// tensors are sent (``TensorSelection``), then the compression. Both ends build it from the
/// plan; the coordinator refuses an update whose header names anything else.
public struct UpdatePipeline: Sendable, Equatable {
    public let selection: TensorSelection
    public let compression: UpdateCompression

    public init(selection: TensorSelection, compression: UpdateCompression) {
        self.selection = selection
        self.compression = compression
    }

    public init(layout: ParameterLayout, plan: LocalTrainingPlan) {
        self.init(selection: TensorSelection(layout: layout, plan: plan), compression: plan.compression)
    }

    /// The steps as recorded, school side first.
    public var transforms: [UpdateTransform] {
        var steps = [Self.selectTransform(freezeEmbeddings: !selection.frozen.isEmpty)]
        if let c = Self.compressTransform(compression) { steps.append(c) }
        return steps
    }

    /// What the plan asks for as the audit records it (no layout needed: parameters come from the plan).
    public static func describe(_ plan: LocalTrainingPlan, secureAggregation: Bool = false) -> String {
        ([plan.lora.map(loraTransform) ?? selectTransform(freezeEmbeddings: plan.freezeEmbeddings)] + [compressTransform(plan.compression)].compactMap { $0 }
         + (secureAggregation && plan.censusLength(classCount: 1) > 0 ? [UpdateTransform("append-label-fractions", [:])] : [])
         + (secureAggregation ? [UpdateTransform("secagg-mask", ["fixedPointBits": 32])] : []))
            .map(\.description).joined(separator: " → ")
    }

    /// Federated LoRA: the update is the adapters' B matrices and the head (``FederatedLoRA``).
    static func loraTransform(_ lora: LoRAConfig) -> UpdateTransform {
        UpdateTransform("lora-b", ["rank": Double(lora.rank), "alpha": Double(lora.alpha), "targets": Double(lora.targets.reduce(0) { $0 | 1 << $1.index })])
    }

    static func selectTransform(freezeEmbeddings: Bool) -> UpdateTransform {
        UpdateTransform("select", ["frozenEmbeddings": freezeEmbeddings ? 1 : 0])
    }

    static func compressTransform(_ c: UpdateCompression) -> UpdateTransform? {
        switch c {
        case .none: nil
        case .float16: UpdateTransform("float16")
        case .int8: UpdateTransform("int8-rows", ["vectorsFloat16": 1])
        case .topK(let d): UpdateTransform("topk", ["density": d, "errorFeedback": 1])
        }
    }

    /// Values a top-k update of this selection carries.
    public var topKCount: Int? {
        guard case .topK(let d) = compression else { return nil }
        return UpdateCompression.topKCount(density: d, of: selection.trainedCount)
    }

    /// The exact size of an update file made by this pipeline (the coordinator accepts no other).
    public var encodedBytes: Int {
        guard compression != .none else { return 4 * selection.trainedCount }
        return CompressedUpdateFile.headerBytes(transforms) + bodyBytes
    }

    var bodyBytes: Int {
        switch compression {
        case .none: return 4 * selection.trainedCount
        case .float16: return 2 * selection.trainedCount
        case .int8:
            return selection.trained.reduce(0) { sum, spec in
                sum + (spec.shape.count >= 2 ? 4 * spec.shape[0] + spec.count : 2 * spec.count)
            }
        case .topK: return 8 + 8 * topKCount!
        }
    }
}
