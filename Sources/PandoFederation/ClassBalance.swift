import Foundation
import PandoData
import PandoTraining

/// How a school's local loss treats its own label skew (classification only).
///
/// Under label skew a class most schools have none of is pushed down on every example those
/// schools train on, and the average forgets it (the rare-class problem of federated
/// classification). Each setting works from the school's own counts alone, so the coordinator
/// learns nothing new about any school's labels.
public enum ClassBalance: String, Sendable, Codable, CaseIterable {
    case none
    /// Loss weights n / (k · n_c) from the school's own counts ("balanced"; absent classes 0).
    case weighted
    /// Random oversampling of the school's smaller classes up to its largest, redrawn each
    /// epoch (an epoch then has more updates).
    case oversampled
    /// Softmax over the classes the school has (restricted softmax, FedRS with α = 0): a class
    /// absent from the school gets no gradient there instead of being pushed down on every
    /// example; the rest is plain cross-entropy.
    case presentClasses = "present-classes"
    /// Logit adjustment by the school's own prior in the training loss (balanced softmax,
    /// Ren et al. 2020; FedLC): logits + log(n_c / n), −∞ for absent classes, so local training
    /// does not learn the school's label skew into the head.
    case priorAdjusted = "prior-adjusted"
    /// `weighted` and `present-classes` together: balanced weights, and a softmax over the classes
    /// the school has (for skews where some schools lack classes altogether). Last, since the wire
    /// carries the index in `allCases`.
    case weightedPresentClasses = "weighted-present-classes"

    /// Whether a school's update shows which classes it has none of: with these, a class left out
    /// of the softmax leaves the head's bias for it exactly unchanged. Allowed only under secure
    /// aggregation, where the coordinator sees the sum alone.
    public var revealsAbsentClasses: Bool { self == .presentClasses || self == .weightedPresentClasses || self == .priorAdjusted }

    /// The loss weights, logit offsets and per-epoch oversampling this setting gives a school
    /// whose training examples have the class indices `classes` (each in 0..<`classCount`).
    public func shaping(classes: [Int], classCount: Int) -> (weights: [Float]?, offsets: [Float]?, oversample: Bool) {
        var counts = [Int](repeating: 0, count: classCount)
        for c in classes { counts[c] += 1 }
        let n = Float(classes.count)
        let present = counts.map { $0 > 0 ? Float(0) : -.infinity }
        switch self {
        case .none: return (nil, nil, false)
        case .weighted: return (Sampling.balancedClassWeights(counts: counts), nil, false)
        case .oversampled: return (nil, nil, true)
        case .presentClasses: return (nil, present, false)
        case .weightedPresentClasses: return (Sampling.balancedClassWeights(counts: counts), present, false)
        case .priorAdjusted: return (nil, counts.map { $0 > 0 ? logf(Float($0) / n) : -.infinity }, false)
        }
    }
}
