import Foundation

// Metrics follow scikit-learn's definitions with zero_division=0: a precision,
// recall or F1 whose denominator is zero counts as 0.

/// Precision, recall, F1 and support for one class or label.
public struct ClassScore: Codable, Sendable, Equatable {
    public var name: String
    public var precision: Double
    public var recall: Double
    public var f1: Double
    /// Number of true examples of this class.
    public var support: Int

    init(name: String, tp: Int, fp: Int, fn: Int) {
        self.name = name
        precision = tp + fp == 0 ? 0 : Double(tp) / Double(tp + fp)
        recall = tp + fn == 0 ? 0 : Double(tp) / Double(tp + fn)
        f1 = 2 * tp + fp + fn == 0 ? 0 : Double(2 * tp) / Double(2 * tp + fp + fn)
        support = tp + fn
    }
}

/// Single-label classification metrics (sklearn `accuracy_score`, `f1_score`,
/// `precision_recall_fscore_support`, `confusion_matrix`).
public struct ClassificationMetrics: Codable, Sendable, Equatable {
    public var accuracy: Double
    /// Unweighted mean F1 over classes that occur in the truth or the predictions
    /// (sklearn's default label set); classes absent from both are not averaged.
    public var macroF1: Double
    public var macroPrecision: Double
    public var macroRecall: Double
    /// Support-weighted mean F1.
    public var weightedF1: Double
    /// One entry per class of the label list, in label order.
    public var perClass: [ClassScore]
    /// Counts with rows = true class, columns = predicted class.
    public var confusion: [[Int]]
    /// For ordered classes (index = level): mean |true − predicted| in levels.
    public var meanAbsoluteLevelError: Double?
    public var count: Int

    /// - Parameters:
    ///   - truth, predicted: class indices into `labels`.
    ///   - ordinal: also report `meanAbsoluteLevelError` (labels ordered by level).
    public init(truth: [Int], predicted: [Int], labels: [String], ordinal: Bool = false) throws {
        try checkLengths(truth.count, predicted.count)
        let k = labels.count
        var confusion = [[Int]](repeating: [Int](repeating: 0, count: k), count: k)
        var absError = 0
        for (t, p) in zip(truth, predicted) {
            guard (0..<k).contains(t), (0..<k).contains(p) else {
                throw DataError(.invalidArgument("class index out of range 0..<\(k): true \(t), predicted \(p)"))
            }
            confusion[t][p] += 1
            absError += abs(t - p)
        }
        let n = truth.count
        var correct = 0
        var scores: [ClassScore] = []
        for c in 0..<k {
            let tp = confusion[c][c]
            correct += tp
            let rowSum = confusion[c].reduce(0, +)
            let colSum = confusion.reduce(0) { $0 + $1[c] }
            scores.append(ClassScore(name: labels[c], tp: tp, fp: colSum - tp, fn: rowSum - tp))
        }
        let present = (0..<k).filter { c in scores[c].support > 0 || confusion.contains { $0[c] > 0 } }
        func mean(_ f: (ClassScore) -> Double) -> Double {
            present.isEmpty ? 0 : present.map { f(scores[$0]) }.reduce(0, +) / Double(present.count)
        }
        accuracy = Double(correct) / Double(n)
        macroF1 = mean(\.f1)
        macroPrecision = mean(\.precision)
        macroRecall = mean(\.recall)
        weightedF1 = scores.reduce(0) { $0 + $1.f1 * Double($1.support) } / Double(n)
        perClass = scores
        self.confusion = confusion
        meanAbsoluteLevelError = ordinal ? Double(absError) / Double(n) : nil
        count = n
    }

    /// Per-class table, averages and confusion matrix, for a person to read.
    public var table: String {
        var s = scoreTable(perClass)
        s += String(format: "accuracy %.4f  macro-F1 %.4f  weighted-F1 %.4f  (n=%d)\n", accuracy, macroF1, weightedF1, count)
        if let mae = meanAbsoluteLevelError { s += String(format: "mean absolute error in levels %.4f\n", mae) }
        s += "confusion (rows true, columns predicted):\n"
        let names = perClass.map(\.name)
        let w = max(6, (names.map(\.count).max() ?? 0) + 1)
        let cw = max(6, (confusion.flatMap { $0 }.map { String($0).count }.max() ?? 1) + 1)
        s += pad("", w + 2) + (0..<names.count).map { pad(String($0), cw, right: true) }.joined() + "\n"
        for (i, row) in confusion.enumerated() {
            s += pad("\(i) \(names[i])", w + 2) + row.map { pad(String($0), cw, right: true) }.joined() + "\n"
        }
        return s
    }
}

/// Multi-label metrics from thresholded predictions (sklearn `f1_score` with
/// average="micro"/"macro" on indicator matrices, `accuracy_score` = subset accuracy).
public struct MultiLabelMetrics: Codable, Sendable, Equatable {
    public var microPrecision: Double
    public var microRecall: Double
    public var microF1: Double
    /// Unweighted mean F1 over all labels (as sklearn does for indicator matrices).
    public var macroF1: Double
    /// Fraction of examples whose predicted set equals the true set exactly.
    public var subsetAccuracy: Double
    /// Fraction of wrong label decisions (sklearn `hamming_loss`).
    public var hammingLoss: Double
    public var perLabel: [ClassScore]
    public var count: Int

    /// - Parameters: truth, predicted: label indices per example (order and
    ///   duplicates ignored).
    public init(truth: [[Int]], predicted: [[Int]], labels: [String]) throws {
        try checkLengths(truth.count, predicted.count)
        let k = labels.count
        var tp = [Int](repeating: 0, count: k), fp = tp, fn = tp
        var exact = 0
        for (tList, pList) in zip(truth, predicted) {
            let t = Set(tList), p = Set(pList)
            guard t.allSatisfy({ (0..<k).contains($0) }), p.allSatisfy({ (0..<k).contains($0) }) else {
                throw DataError(.invalidArgument("label index out of range 0..<\(k)"))
            }
            if t == p { exact += 1 }
            for c in t.intersection(p) { tp[c] += 1 }
            for c in p.subtracting(t) { fp[c] += 1 }
            for c in t.subtracting(p) { fn[c] += 1 }
        }
        perLabel = (0..<k).map { ClassScore(name: labels[$0], tp: tp[$0], fp: fp[$0], fn: fn[$0]) }
        let TP = tp.reduce(0, +), FP = fp.reduce(0, +), FN = fn.reduce(0, +)
        let micro = ClassScore(name: "micro", tp: TP, fp: FP, fn: FN)
        microPrecision = micro.precision
        microRecall = micro.recall
        microF1 = micro.f1
        macroF1 = k == 0 ? 0 : perLabel.reduce(0) { $0 + $1.f1 } / Double(k)
        subsetAccuracy = Double(exact) / Double(truth.count)
        hammingLoss = k == 0 ? 0 : Double(FP + FN) / Double(truth.count * k)
        count = truth.count
    }

    /// Turns probabilities into predicted label sets: label j is predicted when
    /// p[j] ≥ thresholds[j].
    public static func applyThresholds(_ probabilities: [[Float]], thresholds: [Float]) -> [[Int]] {
        probabilities.map { p in
            precondition(p.count == thresholds.count, "one threshold per label")
            return p.indices.filter { p[$0] >= thresholds[$0] }
        }
    }

    /// Same threshold for every label (0.5 by default).
    public static func applyThreshold(_ probabilities: [[Float]], threshold: Float = 0.5) -> [[Int]] {
        probabilities.map { p in p.indices.filter { p[$0] >= threshold } }
    }

    public var table: String {
        scoreTable(perLabel)
            + String(format: "micro-F1 %.4f  macro-F1 %.4f  subset accuracy %.4f  Hamming loss %.4f  (n=%d)\n",
                     microF1, macroF1, subsetAccuracy, hammingLoss, count)
    }
}

/// Regression metrics. Pearson r, Spearman ρ and QWK are nil when undefined
/// (constant inputs, or no score range given for QWK).
public struct RegressionMetrics: Codable, Sendable, Equatable {
    public var rmse: Double
    public var mae: Double
    public var pearson: Double?
    /// Pearson r of average ranks (ties share the mean rank), as `scipy.stats.spearmanr`.
    public var spearman: Double?
    /// Quadratic weighted kappa (sklearn `cohen_kappa_score(weights="quadratic")`)
    /// after rounding both truth and prediction to the nearest integer (halves away
    /// from zero: 2.5 → 3, −2.5 → −3; note numpy rounds halves to even) and clipping
    /// into `scoreRange`.
    public var qwk: Double?
    public var scoreRange: [Int]?
    public var count: Int

    public init(truth: [Float], predicted: [Float], scoreRange: ClosedRange<Int>? = nil) throws {
        try checkLengths(truth.count, predicted.count)
        let t = truth.map(Double.init), p = predicted.map(Double.init)
        let n = Double(t.count)
        var se = 0.0, ae = 0.0
        for (a, b) in zip(t, p) { se += (a - b) * (a - b); ae += abs(a - b) }
        rmse = (se / n).squareRoot()
        mae = ae / n
        pearson = pearsonR(t, p)
        spearman = pearsonR(averageRanks(t), averageRanks(p))
        count = t.count
        if let r = scoreRange {
            self.scoreRange = [r.lowerBound, r.upperBound]
            qwk = quadraticWeightedKappa(truth.map { roundClip($0, r) }, predicted.map { roundClip($0, r) }, range: r)
        }
    }

    /// The integer level used for QWK: nearest integer (halves away from zero), clipped.
    public static func level(_ x: Float, in range: ClosedRange<Int>) -> Int { roundClip(x, range) }

    public var table: String {
        func f(_ x: Double?) -> String { x.map { String(format: "%.4f", $0) } ?? "n/a" }
        var s = "RMSE \(f(rmse))  MAE \(f(mae))  Pearson r \(f(pearson))  Spearman ρ \(f(spearman))"
        if let r = scoreRange { s += "  QWK[\(r[0])…\(r[1])] \(f(qwk))" }
        return s + "  (n=\(count))\n"
    }
}

/// Quadratic weighted kappa between two integer ratings within `range` (sklearn
/// `cohen_kappa_score(a, b, weights="quadratic")`). Nil when undefined (no expected
/// disagreement, e.g. both raters constant and equal).
public func quadraticWeightedKappa(_ a: [Int], _ b: [Int], range: ClosedRange<Int>) -> Double? {
    precondition(a.count == b.count && !a.isEmpty)
    let k = range.count
    var observed = [[Double]](repeating: [Double](repeating: 0, count: k), count: k)
    var rowSum = [Double](repeating: 0, count: k), colSum = rowSum
    for (x, y) in zip(a, b) {
        let i = min(max(x, range.lowerBound), range.upperBound) - range.lowerBound
        let j = min(max(y, range.lowerBound), range.upperBound) - range.lowerBound
        observed[i][j] += 1
        rowSum[i] += 1
        colSum[j] += 1
    }
    let n = Double(a.count)
    var num = 0.0, den = 0.0
    for i in 0..<k {
        for j in 0..<k {
            let w = Double((i - j) * (i - j))
            num += w * observed[i][j]
            den += w * rowSum[i] * colSum[j] / n
        }
    }
    return den == 0 ? nil : 1 - num / den
}

private func roundClip(_ x: Float, _ r: ClosedRange<Int>) -> Int {
    let v = Double(x).rounded(.toNearestOrAwayFromZero)
    if v <= Double(r.lowerBound) { return r.lowerBound }
    if v >= Double(r.upperBound) { return r.upperBound }
    return Int(v)
}

private func pearsonR(_ a: [Double], _ b: [Double]) -> Double? {
    let n = Double(a.count)
    let ma = a.reduce(0, +) / n, mb = b.reduce(0, +) / n
    var sab = 0.0, saa = 0.0, sbb = 0.0
    for (x, y) in zip(a, b) {
        sab += (x - ma) * (y - mb)
        saa += (x - ma) * (x - ma)
        sbb += (y - mb) * (y - mb)
    }
    guard saa > 0, sbb > 0 else { return nil }
    return max(-1, min(1, sab / (saa * sbb).squareRoot()))
}

private func averageRanks(_ x: [Double]) -> [Double] {
    let order = x.indices.sorted { x[$0] < x[$1] }
    var ranks = [Double](repeating: 0, count: x.count)
    var i = 0
    while i < order.count {
        var j = i
        while j + 1 < order.count, x[order[j + 1]] == x[order[i]] { j += 1 }
        let r = Double(i + j) / 2 + 1
        for m in i...j { ranks[order[m]] = r }
        i = j + 1
    }
    return ranks
}

private func checkLengths(_ a: Int, _ b: Int) throws {
    guard a == b else { throw DataError(.invalidArgument("\(a) true values but \(b) predictions")) }
    guard a > 0 else { throw DataError(.invalidArgument("no examples to score")) }
}

private func pad(_ s: String, _ width: Int, right: Bool = false) -> String {
    let gap = max(0, width - s.count)
    return right ? String(repeating: " ", count: gap) + s : s + String(repeating: " ", count: gap)
}

private func scoreTable(_ scores: [ClassScore]) -> String {
    let w = max(8, (scores.map(\.name.count).max() ?? 0) + 2)
    var s = pad("label", w) + pad("precision", 11, right: true) + pad("recall", 9, right: true)
        + pad("F1", 9, right: true) + pad("support", 9, right: true) + "\n"
    for c in scores {
        s += pad(c.name, w)
            + pad(String(format: "%.4f", c.precision), 11, right: true)
            + pad(String(format: "%.4f", c.recall), 9, right: true)
            + pad(String(format: "%.4f", c.f1), 9, right: true)
            + pad(String(c.support), 9, right: true) + "\n"
    }
    return s
}
