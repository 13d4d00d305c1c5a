import PandoEngine

/// Why the coordinator left an update out of a round. Recorded (audit log,
/// round record) rather than dropped silently; `description` is for people.
public enum UpdateRejection: Error, Sendable, Equatable, CustomStringConvertible {
    public enum NonFinite: String, Sendable, Equatable { case nan = "NaN", infinity = "infinite" }

    /// The update answers another round (late or replayed).
    case wrongRound(expected: Int, received: Int)
    /// The update was trained from another global version.
    case wrongBase(expected: String, received: String)
    /// A weight of zero would contribute nothing; a negative one is hostile.
    case noExamples(count: Int)
    /// A tensor of the global model is absent from the update.
    case missingTensor(name: String)
    /// The update has a tensor the global model does not.
    case unexpectedTensor(name: String)
    /// The same tensors in another order: offsets would not line up.
    case tensorOrder(position: Int, expected: String, received: String)
    case wrongShape(name: String, expected: [Int], received: [Int])
    case nonFinite(tensor: String, index: Int, kind: NonFinite)
    /// L2 norm of the whole delta above the configured bound.
    case normTooLarge(norm: Double, bound: Double)
    /// A second update from the same school in one round.
    case duplicate(school: String)

    public var description: String {
        switch self {
        case .wrongRound(let e, let r): "update is for round \(r), the current round is \(e) (late or replayed)"
        case .wrongBase(let e, let r): "update was trained from version \(r), the round's base is \(e)"
        case .noExamples(let n): "update claims \(n) training examples; at least 1 is required"
        case .missingTensor(let n): "update lacks tensor \(n)"
        case .unexpectedTensor(let n): "update has tensor \(n), which the global model does not"
        case .tensorOrder(let p, let e, let r): "tensor \(p) is \(r), expected \(e) (different tensor order)"
        case .wrongShape(let n, let e, let r): "tensor \(n) has shape \(r), expected \(e)"
        case .nonFinite(let t, let i, let k): "tensor \(t) has a \(k.rawValue) value at element \(i)"
        case .normTooLarge(let n, let b): "update L2 norm \(n.isFinite ? String(n) : "overflows") exceeds the bound \(b)"
        case .duplicate(let s): "school \(s) already sent an update this round"
        }
    }
}

/// What an accepted update looked like, for the round record and audit (never content).
public struct UpdateSummary: Sendable, Equatable {
    public var school: String
    public var exampleCount: Int
    /// L2 norm of the delta.
    public var norm: Double
    public var parameterCount: Int
}

/// Checks one update against the round before it may touch the aggregate:
/// round and base version, example count, tensor names, order and shapes
/// equal to the global layout, every value finite, L2 norm within a bound.
/// Cheap checks first; the two model-sized passes (norm, and the finiteness
/// scan only when the norm is not finite) come last.
public struct UpdateValidator: Sendable {
    public var layout: ParameterLayout
    public var round: Int
    public var baseVersion: String
    /// Largest accepted L2 norm of a delta (`.infinity` disables the bound, not the finiteness check).
    public var maxNorm: Double

    public init(layout: ParameterLayout, round: Int, baseVersion: String, maxNorm: Double) {
        self.layout = layout
        self.round = round
        self.baseVersion = baseVersion
        self.maxNorm = maxNorm
    }

    public func validate(_ update: ModelUpdate) -> Result<UpdateSummary, UpdateRejection> {
        if let r = check(update) { return .failure(r) }
        let norm = DeltaMath.norm(update.delta.buffer)
        if !norm.isFinite, let i = DeltaMath.firstNonFinite(update.delta.buffer) {
            let spec = update.delta.layout.tensors.last { $0.offset <= i }!
            let kind: UpdateRejection.NonFinite = update.delta.buffer[i].isNaN ? .nan : .infinity
            return .failure(.nonFinite(tensor: spec.name, index: i - spec.offset, kind: kind))
        }
        // A finite buffer whose squares overflow Float is over any sensible bound.
        guard norm <= maxNorm else { return .failure(.normTooLarge(norm: norm, bound: maxNorm)) }
        return .success(UpdateSummary(school: update.school, exampleCount: update.exampleCount, norm: norm,
                                      parameterCount: update.delta.layout.count))
    }

    /// The metadata and layout checks (no pass over the values).
    func check(_ update: ModelUpdate) -> UpdateRejection? {
        guard update.round == round else { return .wrongRound(expected: round, received: update.round) }
        guard update.baseVersion == baseVersion else { return .wrongBase(expected: baseVersion, received: update.baseVersion) }
        guard update.exampleCount > 0 else { return .noExamples(count: update.exampleCount) }
        let received = update.delta.layout
        if received == layout { return nil }
        for spec in received.tensors where layout[spec.name] == nil { return .unexpectedTensor(name: spec.name) }
        for spec in layout.tensors where received[spec.name] == nil { return .missingTensor(name: spec.name) }
        for (position, (e, r)) in zip(layout.tensors, received.tensors).enumerated() {
            if e.name != r.name { return .tensorOrder(position: position, expected: e.name, received: r.name) }
            if e.shape != r.shape { return .wrongShape(name: e.name, expected: e.shape, received: r.shape) }
        }
        // Same names, order and shapes, hence the same offsets; only `decays` may differ,
        // which does not matter to a delta.
        return nil
    }
}
