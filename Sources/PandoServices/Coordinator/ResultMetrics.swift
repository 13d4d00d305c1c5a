import PandoWire

/// The ranges of the metrics schools report. The coordinator takes a school's metrics as
/// claims: a result with a value its metric cannot have (an accuracy above 1, a negative
/// loss) is refused, with the reason recorded, so one school cannot skew the combined
/// evaluation or a round's training loss with an impossible number.
enum ResultMetrics {
    /// Fractions of examples or labels: [0, 1].
    static let fractions: Set<String> = [
        "accuracy", "macro_f1", "weighted_f1", "macro_precision", "macro_recall",
        "micro_f1", "micro_precision", "micro_recall", "subset_accuracy", "hamming_loss", "dp_sampling_rate", "dp_delta",
    ]
    /// Correlations and agreement: [-1, 1] (quadratic weighted kappa is 2·cov / (var + var + Δmean²)).
    static let correlations: Set<String> = ["pearson", "spearman", "qwk"]
    /// Losses, errors, counts and durations: ≥ 0.
    static let nonNegative: Set<String> = [
        "loss", "rmse", "mae", "mean_absolute_level_error", "train_loss", "last_epoch_loss", "steps", "tokens", "seconds",
        "dp_noise_multiplier", "dp_steps", "dp_max_gradient_norm", "dp_epsilon", "dp_epsilon_total", "dp_spends",
    ]
    /// Counts: whole numbers below 2⁵³ (the coordinator turns them into integers).
    static let counts: Set<String> = ["dp_steps", "dp_spends"]
    /// Rounding slack for sums and means computed in floating point.
    static let slack = 1e-9

    /// The first value in `metrics` that cannot be true (name, value and range), or nil.
    /// Metrics of other names need only be finite.
    static func problem(in metrics: [WireToken: Double]) -> String? {
        for (token, value) in metrics.sorted(by: { $0.key.value < $1.key.value }) {
            let name = token.value
            guard value.isFinite else { return "\(name) is \(value)" }
            if fractions.contains(name), !(-slack...1 + slack).contains(value) { return "\(name) \(value) is outside [0, 1]" }
            if correlations.contains(name), !(-1 - slack...1 + slack).contains(value) { return "\(name) \(value) is outside [-1, 1]" }
            if nonNegative.contains(name), value < 0 { return "\(name) \(value) is negative" }
            if counts.contains(name), !(value < 0x1p53 && value.rounded() == value) { return "\(name) \(value) is not a whole number below 2^53" }
        }
        return nil
    }
}
