/// A batch of token sequences packed end to end, without padding.
///
/// Every kernel works on the `tokenCount` real tokens only; the per-sequence
/// `lengths` tell attention and pooling where each sequence starts.
public struct PackedBatch: Sendable {
    public var tokenIDs: [Int32]
    public var typeIDs: [Int32]
    public var lengths: [Int]

    public init(tokenIDs: [Int32], typeIDs: [Int32], lengths: [Int]) {
        precondition(tokenIDs.count == typeIDs.count && tokenIDs.count == lengths.reduce(0, +), "inconsistent packed batch")
        self.tokenIDs = tokenIDs
        self.typeIDs = typeIDs
        self.lengths = lengths
    }

    /// Packs sequences of ids; token types default to 0.
    public init(sequences: [[Int32]], types: [[Int32]]? = nil) {
        tokenIDs = sequences.flatMap { $0 }
        typeIDs = types?.flatMap { $0 } ?? [Int32](repeating: 0, count: tokenIDs.count)
        lengths = sequences.map(\.count)
        precondition(typeIDs.count == tokenIDs.count, "token types do not match the sequences")
    }

    public var count: Int { lengths.count }
    public var tokenCount: Int { tokenIDs.count }
    public var maxLength: Int { lengths.max() ?? 0 }
}

/// Training targets for one batch, in the head's terms.
public enum Targets: Sendable {
    /// One class index per sequence (softmax cross-entropy).
    case classes([Int])
    /// `count × outputs` multi-hot values, row-major (sigmoid BCE).
    case multiHot([Float])
    /// One score per sequence (MSE).
    case scores([Float])
}

/// The dropout stream of one training step: masks are a function of
/// `(seed, step, site, element)`, so a seed reproduces a step exactly.
public struct DropoutKey: Sendable, Equatable {
    public var seed: UInt64
    public var step: UInt64
    public init(seed: UInt64, step: UInt64) {
        self.seed = seed
        self.step = step
    }

    func mask(_ probability: Float, site: UInt64) -> DropoutMask {
        DropoutMask(probability: probability, key: CounterRandom.key(seed, step, site))
    }
}

/// Dropout sites: each gets its own stream of the step's dropout key.
enum DropoutSite {
    static let embeddings: UInt64 = 1
    static let classifier: UInt64 = 2
    /// RoBERTa's head: the first token's state before the head's dense layer.
    static let poolerInput: UInt64 = 3
    static func attention(_ layer: Int) -> UInt64 { 16 + 4 * UInt64(layer) }
    static func attentionOutput(_ layer: Int) -> UInt64 { 17 + 4 * UInt64(layer) }
    static func ffnOutput(_ layer: Int) -> UInt64 { 18 + 4 * UInt64(layer) }
}
