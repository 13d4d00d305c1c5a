import Foundation
import PandoEngine

/// How far honest local training can move the weights, and how much one school may weigh:
/// the coordinator's defences against one school steering the average.
public enum UpdateBounds {
    /// The largest |m̂/(√v̂ + ε)| AdamW can produce in any coordinate at any step, whatever
    /// the gradients: by Cauchy–Schwarz, |m_t| ≤ (1−β₁)·√(Σ (β₁²/β₂)^k)·√(v_t/(1−β₂)), and
    /// the bias corrections only shrink it, so the ratio is at most
    /// (1−β₁) / √((1−β₂)(1−β₁²/β₂)) — 7.27 for β = (0.9, 0.999). Needs β₁² < β₂.
    public static func adamStepBound(beta1: Double = 0.9, beta2: Double = 0.999) -> Double {
        precondition(beta1 * beta1 < beta2, "AdamW's step is bounded only for β₁² < β₂")
        return (1 - beta1) / ((1 - beta2) * (1 - beta1 * beta1 / beta2)).squareRoot()
    }

    /// The largest L2 norm a delta from `examples` examples trained with `plan` (AdamW at
    /// its default β) can have. Over S = epochs·⌈examples/batch⌉ steps at a rate of at most
    /// lr (warm-up and decay only lower it), each Adam step moves each of the P =
    /// `trainedParameters` coordinates by at most lr·A (``adamStepBound()``), so at most
    /// lr·A·√P in norm; decoupled weight decay moves ‖w‖ by lr·wd·‖w_t‖ with ‖w_t‖ ≤ ‖w₀‖ +
    /// t·lr·A·√P (`baseNorm` = ‖w₀‖). Summed:
    /// S·lr·A·√P + S·lr·wd·‖w₀‖ + ½S²·lr²·wd·A·√P. A delta above it cannot come from honest
    /// training with this plan.
    public static func maxDeltaNorm(plan: LocalTrainingPlan, examples: Int, trainedParameters: Int, baseNorm: Double) -> Double {
        let steps = Double(plan.epochs) * (Double(max(1, examples)) / Double(max(1, plan.batchSize))).rounded(.up)
        let lr = Double(plan.learningRate), wd = Double(plan.weightDecay)
        let adam = lr * adamStepBound() * Double(trainedParameters).squareRoot()
        return steps * adam + steps * lr * wd * baseNorm + 0.5 * steps * steps * lr * wd * adam
    }

    /// The weight a school's update gets: its reported example count, capped at `multiple` ×
    /// `referenceMedian` (the median count of the last committed round) when there is one.
    /// Returns the weight and whether it was capped.
    public static func weight(reported: Int, referenceMedian: Int?, multiple: Double) -> (weight: Int, capped: Bool) {
        guard let median = referenceMedian, median > 0, multiple.isFinite, multiple >= 1 else { return (reported, false) }
        let cap = max(1, Int((Double(median) * multiple).rounded(.down)))
        return reported > cap ? (cap, true) : (reported, false)
    }

    /// The median of `counts` (the lower one of the middle two), or nil when empty.
    public static func median(_ counts: [Int]) -> Int? {
        guard !counts.isEmpty else { return nil }
        let sorted = counts.sorted()
        return sorted[(sorted.count - 1) / 2]
    }
}
