import Foundation
import PandoData
import PandoEngine

/// The metrics of PRODUCT.md's task table for one data set, plus the mean loss.
public struct EvaluationMetrics: Codable, Sendable {
    public var task: TaskKind
    /// Mean loss of the head's objective (unweighted).
    public var loss: Double
    public var classification: ClassificationMetrics?
    public var multiLabel: MultiLabelMetrics?
    public var regression: RegressionMetrics?
    /// Multi-label thresholds the predictions were made with.
    public var thresholds: [Float]?
    /// The headline numbers by metric name (`accuracy`, `macro_f1`, …), for tools.
    public var summary: [String: Double]

    init(task: TaskKind, loss: Double, classification: ClassificationMetrics? = nil, multiLabel: MultiLabelMetrics? = nil,
         regression: RegressionMetrics? = nil, thresholds: [Float]? = nil) {
        self.task = task
        self.loss = loss
        self.classification = classification
        self.multiLabel = multiLabel
        self.regression = regression
        self.thresholds = thresholds
        var s: [String: Double] = ["loss": loss]
        if let c = classification {
            s["accuracy"] = c.accuracy; s["macro_f1"] = c.macroF1; s["weighted_f1"] = c.weightedF1
            s["macro_precision"] = c.macroPrecision; s["macro_recall"] = c.macroRecall
            if let m = c.meanAbsoluteLevelError { s["mean_absolute_level_error"] = m }
        }
        if let m = multiLabel {
            s["micro_f1"] = m.microF1; s["macro_f1"] = m.macroF1; s["micro_precision"] = m.microPrecision
            s["micro_recall"] = m.microRecall; s["subset_accuracy"] = m.subsetAccuracy; s["hamming_loss"] = m.hammingLoss
        }
        if let r = regression {
            s["rmse"] = r.rmse; s["mae"] = r.mae
            if let p = r.pearson { s["pearson"] = p }
            if let p = r.spearman { s["spearman"] = p }
            if let q = r.qwk { s["qwk"] = q }
        }
        summary = s
    }

    /// The value of a named metric, nil if this task has no such metric or it is undefined.
    public func value(_ metric: String) -> Double? { summary[metric] }

    /// Metrics where smaller is better.
    public static func lowerIsBetter(_ metric: String) -> Bool {
        ["loss", "rmse", "mae", "hamming_loss", "mean_absolute_level_error"].contains(metric)
    }

    public static func defaultMetric(for task: TaskKind) -> String {
        switch task {
        case .classification: "macro_f1"
        case .multiLabel: "micro_f1"
        case .regression: "rmse"
        case .ordinal: "mean_absolute_level_error"
        }
    }

    /// Metric names a task can be selected on.
    public static func names(for task: TaskKind) -> [String] {
        switch task {
        case .classification: ["accuracy", "macro_f1", "weighted_f1", "macro_precision", "macro_recall", "loss"]
        case .multiLabel: ["micro_f1", "macro_f1", "micro_precision", "micro_recall", "subset_accuracy", "hamming_loss", "loss"]
        case .regression: ["rmse", "mae", "pearson", "spearman", "qwk", "loss"]
        case .ordinal: ["mean_absolute_level_error", "qwk", "accuracy", "macro_f1", "weighted_f1", "loss"]
        }
    }

    /// Whether `a` is strictly better than `b` on `metric` (an undefined value is worst).
    public static func better(_ a: Double?, than b: Double?, metric: String) -> Bool {
        guard let a, a.isFinite else { return false }
        guard let b, b.isFinite else { return true }
        return lowerIsBetter(metric) ? a < b : a > b
    }

    /// A table for a person.
    public var table: String {
        var s = ""
        if let c = classification { s += c.table }
        if let m = multiLabel {
            s += m.table
            if let t = thresholds, Set(t).count > 1 || t.first != 0.5 {
                s += "thresholds: " + zip(m.perLabel, t).map { "\($0.name)=\(String(format: "%.2f", $1))" }.joined(separator: " ") + "\n"
            }
        }
        if let r = regression { s += r.table }
        if task == .ordinal, let q = summary["qwk"] { s += String(format: "QWK %.4f\n", q) }
        s += String(format: "loss %.4f\n", loss)
        return s
    }
}

/// Turns logits into probabilities, predictions and metrics.
public enum Evaluation {
    public static func softmax(_ z: [Float]) -> [Float] {
        let m = z.max() ?? 0
        let e = z.map { expf($0 - m) }
        let s = e.reduce(0, +)
        return e.map { $0 / s }
    }

    public static func sigmoid(_ z: [Float]) -> [Float] { z.map { 1 / (1 + expf(-$0)) } }

    /// The level an ordinal head predicts: how many of its K − 1 thresholds the text passes.
    public static func ordinalLevel(_ z: [Float]) -> Int { z.reduce(0) { $0 + ($1 > 0 ? 1 : 0) } }

    /// Each level's probability from the thresholds' P(level > k): P(k) = P(> k−1) − P(> k),
    /// clipped at 0 and renormalised (CORAL keeps them ordered; the clip guards rounding).
    public static func ordinalProbabilities(_ z: [Float]) -> [Float] {
        let above = sigmoid(z)
        var p: [Float] = []
        for k in 0...above.count {
            let upper: Float = k == 0 ? 1 : above[k - 1], lower: Float = k == above.count ? 0 : above[k]
            p.append(max(0, upper - lower))
        }
        let s = p.reduce(0, +)
        return s > 0 ? p.map { $0 / s } : p
    }

    public static func argmax(_ v: [Float]) -> Int {
        var best = 0
        for i in v.indices where v[i] > v[best] { best = i }
        return best
    }

    /// Metrics of `logits` (one row per example) against `targets`.
    /// Multi-label uses `thresholds` (0.5 each when nil).
    public static func metrics(
        logits: [[Float]], targets: [Target], task: TaskKind, labels: [String],
        thresholds: [Float]? = nil, scoreRange: [Int]? = nil
    ) throws -> EvaluationMetrics {
        precondition(logits.count == targets.count)
        guard !logits.isEmpty else { throw TrainingError("no examples to evaluate") }
        let n = Double(logits.count)
        switch task {
        case .classification:
            var loss = 0.0
            var truth: [Int] = [], predicted: [Int] = []
            for (z, t) in zip(logits, targets) {
                let y = t.classIndex!
                let p = softmax(z)
                loss -= Double(logf(max(p[y], 1e-30)))
                truth.append(y)
                predicted.append(argmax(z))
            }
            let m = try ClassificationMetrics(truth: truth, predicted: predicted, labels: labels)
            return EvaluationMetrics(task: task, loss: loss / n, classification: m)
        case .multiLabel:
            let probabilities = logits.map(sigmoid)
            let k = labels.count
            let th = thresholds ?? [Float](repeating: 0.5, count: k)
            var loss = 0.0
            for (z, t) in zip(logits, targets) {
                let y = t.multiHot(count: k)
                for j in 0..<k { loss += Double(max(z[j], 0) - z[j] * y[j] + log1pf(expf(-abs(z[j])))) }
            }
            let predicted = MultiLabelMetrics.applyThresholds(probabilities, thresholds: th)
            let m = try MultiLabelMetrics(truth: targets.map { $0.labelSet! }, predicted: predicted, labels: labels)
            return EvaluationMetrics(task: task, loss: loss / (n * Double(max(k, 1))), multiLabel: m, thresholds: th)
        case .ordinal:
            var loss = 0.0
            var truth: [Int] = [], predicted: [Int] = []
            for (z, t) in zip(logits, targets) {
                let y = t.classIndex!
                for (k, v) in z.enumerated() {
                    let target: Float = y > k ? 1 : 0
                    loss += Double(max(v, 0) - v * target + log1pf(expf(-abs(v))))
                }
                truth.append(y)
                predicted.append(ordinalLevel(z))
            }
            let m = try ClassificationMetrics(truth: truth, predicted: predicted, labels: labels, ordinal: true)
            var metrics = EvaluationMetrics(task: task, loss: loss / (n * Double(max(labels.count - 1, 1))), classification: m)
            if let q = quadraticWeightedKappa(truth, predicted, range: 0...(labels.count - 1)) { metrics.summary["qwk"] = q }
            return metrics
        case .regression:
            let truth = targets.map { $0.score! }
            let predicted = logits.map { $0[0] }
            var loss = 0.0
            for (a, b) in zip(truth, predicted) { loss += Double((a - b) * (a - b)) }
            let range = scoreRange.map { $0[0]...$0[1] }
            let m = try RegressionMetrics(truth: truth, predicted: predicted, scoreRange: range)
            return EvaluationMetrics(task: task, loss: loss / n, regression: m)
        }
    }

    /// Per-label thresholds maximising each label's F1 on a held-out set
    /// (grid 0.05…0.95; ties keep the threshold closest to 0.5; a label with no
    /// positives keeps 0.5).
    public static func tuneThresholds(logits: [[Float]], targets: [Target], labelCount k: Int) -> [Float] {
        let probabilities = logits.map(sigmoid)
        let truth = targets.map { $0.multiHot(count: k) }
        let grid = stride(from: 0.05, through: 0.951, by: 0.05).map { Float($0) }
        return (0..<k).map { j in
            guard truth.contains(where: { $0[j] > 0 }) else { return 0.5 }
            var best: Float = 0.5, bestF1 = -1.0
            for t in grid {
                var tp = 0, fp = 0, fn = 0
                for (p, y) in zip(probabilities, truth) {
                    let predicted = p[j] >= t, actual = y[j] > 0
                    if predicted && actual { tp += 1 } else if predicted { fp += 1 } else if actual { fn += 1 }
                }
                let f1 = 2 * tp + fp + fn == 0 ? 0 : Double(2 * tp) / Double(2 * tp + fp + fn)
                if f1 > bestF1 + 1e-12 || (abs(f1 - bestF1) <= 1e-12 && abs(t - 0.5) < abs(best - 0.5)) {
                    best = t; bestF1 = f1
                }
            }
            return best
        }
    }

    /// The integer score range of integer-valued scores, else nil.
    public static func inferScoreRange(_ scores: [Float]) -> [Int]? {
        guard let lo = scores.min(), let hi = scores.max(), lo < hi,
              scores.allSatisfy({ $0 == $0.rounded() && abs($0) < 1e6 }) else { return nil }
        return [Int(lo), Int(hi)]
    }
}
