import Foundation

/// Why a privacy-accounting call was refused. Each case names the bad argument and its value.
public enum AccountantError: Error, Equatable, CustomStringConvertible {
    /// The sampling rate `q` must lie in [0, 1].
    case samplingRateOutOfRange(Double)
    /// The noise multiplier `sigma` must be non-negative.
    case negativeNoiseMultiplier(Double)
    /// The number of steps must be non-negative.
    case negativeSteps(Int)
    /// A target delta must lie strictly between 0 and 1.
    case deltaOutOfRange(Double)
    /// A target epsilon must be non-negative and finite.
    case epsilonOutOfRange(Double)
    /// RDP orders must be finite and greater than 1.
    case invalidOrder(Double)
    /// An accountant needs at least one RDP order.
    case noOrders
    /// A calibration tolerance must be positive.
    case invalidTolerance(Double)
    /// No noise multiplier up to about 2^30 reaches the target.
    case unreachableTarget(epsilon: Double, delta: Double)

    public var description: String {
        switch self {
        case .samplingRateOutOfRange(let q): "sampling rate q must be in [0, 1], got \(q)"
        case .negativeNoiseMultiplier(let s): "noise multiplier sigma must be non-negative, got \(s)"
        case .negativeSteps(let n): "steps must be non-negative, got \(n)"
        case .deltaOutOfRange(let d): "delta must be in (0, 1), got \(d)"
        case .epsilonOutOfRange(let e): "target epsilon must be finite and non-negative, got \(e)"
        case .invalidOrder(let a): "RDP orders must be finite and > 1, got \(a)"
        case .noOrders: "RDP orders must not be empty"
        case .invalidTolerance(let t): "calibration tolerance must be positive, got \(t)"
        case .unreachableTarget(let e, let d):
            "no noise multiplier up to 2^30 reaches epsilon \(e) at delta \(d)"
        }
    }
}

/// Rényi-DP accountant for the Poisson-subsampled Gaussian mechanism (DP-SGD / DP-FedAvg style
/// rounds): add each mechanism with `compose`, then read off `(epsilon, delta)`.
///
/// It reproduces Google's `dp-accounting` 0.6.0 `RdpAccountant` (add-or-remove-one neighbours):
/// the same default orders, the same log-space series for integer and fractional orders
/// (Mironov, Talwar & Zhang 2019, "Rényi Differential Privacy of the Sampled Gaussian Mechanism"),
/// and the same improved RDP → (ε, δ) conversion (Canonne, Kamath & Steinke 2020, Prop. 12; plus
/// the KL-divergence bound for small RDP), so budgets agree with the Python reference.
public struct RDPAccountant: Sendable, Equatable {
    /// dp-accounting's `DEFAULT_RDP_ORDERS`: 1.1, 1.2, …, 10.9, then 11 … 63, then 128, 256,
    /// 512, 1024 — good coverage for the Gaussian mechanism in the usual privacy regime.
    public static let defaultOrders: [Double] = {
        let tenths: [Double] = (1..<100).map { 1 + Double($0) / 10 }  // same rounding as 1 + x / 10.0
        let integers: [Double] = (11..<64).map { Double($0) }
        return tenths + integers + [128, 256, 512, 1024]
    }()

    /// The Rényi orders α tracked, each > 1.
    public let orders: [Double]
    /// Accumulated RDP ε(α) at each of `orders` (same index); `+infinity` where an order gives
    /// no bound (σ = 0, or a fractional-order series that did not converge).
    public private(set) var rdp: [Double]

    /// An empty accountant over `defaultOrders`.
    public init() {
        orders = Self.defaultOrders
        rdp = Array(repeating: 0, count: orders.count)
    }

    /// An empty accountant over custom orders (each finite and > 1).
    public init(orders: [Double]) throws {
        guard !orders.isEmpty else { throw AccountantError.noOrders }
        if let bad = orders.first(where: { !($0 > 1 && $0.isFinite) }) { throw AccountantError.invalidOrder(bad) }
        self.orders = orders
        rdp = Array(repeating: 0, count: orders.count)
    }

    /// Adds `steps` applications of the Gaussian mechanism with noise multiplier `sigma`
    /// (noise std / L2 sensitivity) on a Poisson sample taking each record with probability `q`.
    /// RDP composes additively, so this adds `steps ×` the one-step RDP at every order.
    public mutating func compose(samplingRate q: Double, noiseMultiplier sigma: Double, steps: Int = 1) throws {
        guard steps >= 0 else { throw AccountantError.negativeSteps(steps) }
        let one = try Self.rdp(samplingRate: q, noiseMultiplier: sigma, orders: orders)
        guard steps > 0 else { return }  // avoids 0 × ∞
        for k in rdp.indices { rdp[k] += Double(steps) * one[k] }
    }

    /// The smallest ε (and the order attaining it) such that everything composed so far is
    /// (ε, `delta`)-DP. `delta` must be ≥ 0 (a precondition); `delta == 0` gives ∞ unless nothing
    /// private has been composed, exactly as dp-accounting does.
    public func epsilon(delta: Double) -> (epsilon: Double, order: Double) {
        precondition(delta >= 0, "delta must be non-negative, got \(delta)")
        if delta == 0 { return (rdp.allSatisfy { $0 == 0 } ? 0 : .infinity, 0) }
        var best = (epsilon: Double.nan, order: 0.0)
        for (alpha, r) in zip(orders, rdp) {
            let eps: Double
            if r < 0 {
                eps = 0  // only from numerical trouble; dp-accounting treats it as no loss
            } else if delta * delta + expm1(-r) > 0 {
                eps = 0  // KL bound: δ ≤ sqrt(1 − e^{−KL}) already covers it
            } else if alpha > 1.01 {
                // Canonne–Kamath–Steinke Prop. 12 (unstable as α → 1, hence the cut-off).
                eps = r + log1p(-1 / alpha) - log(delta * alpha) / (alpha - 1)
            } else {
                eps = .infinity
            }
            if best.epsilon.isNaN || eps < best.epsilon { best = (eps, alpha) }
        }
        return (max(0, best.epsilon), best.order)
    }

    /// The smallest δ such that everything composed so far is (`epsilon`, δ)-DP, capped at 1.
    /// `epsilon` must be ≥ 0 (a precondition).
    public func delta(epsilon: Double) -> Double {
        precondition(epsilon >= 0, "epsilon must be non-negative, got \(epsilon)")
        var best = Double.infinity
        for (alpha, r) in zip(orders, rdp) {
            // KL bound first (best for small α), then the RDP bound of Prop. 12 for α > 1.01.
            var logDelta = r <= 0 ? -Double.infinity : 0.5 * log1p(-exp(-r))
            if alpha > 1.01 {
                logDelta = min(logDelta, (alpha - 1) * (r - epsilon + log1p(-1 / alpha)) - log(alpha))
            }
            best = min(best, logDelta)
        }
        return min(exp(best), 1)
    }

    /// One step's RDP of the Poisson-subsampled Gaussian mechanism at each order.
    /// q = 0 → 0; σ = 0 → ∞; q = 1 → the plain Gaussian α / (2σ²); otherwise log(A_α) / (α − 1).
    public static func rdp(samplingRate q: Double, noiseMultiplier sigma: Double, orders: [Double]) throws -> [Double] {
        guard q >= 0, q <= 1 else { throw AccountantError.samplingRateOutOfRange(q) }
        guard sigma >= 0 else { throw AccountantError.negativeNoiseMultiplier(sigma) }
        return orders.map { alpha in
            if q == 0 { return 0 }
            if alpha.isInfinite || sigma == 0 { return .infinity }
            if q == 1 { return alpha / (2 * sigma * sigma) }
            let logA = alpha.rounded() == alpha
                ? SampledGaussian.logAInteger(q: q, sigma: sigma, alpha: Int(alpha))
                : SampledGaussian.logAFractional(q: q, sigma: sigma, alpha: alpha)
            return logA / (alpha - 1)
        }
    }

    /// The smallest noise multiplier σ for which `steps` Poisson-sampled Gaussian steps at rate
    /// `q` stay within (`targetEpsilon`, `delta`), searched like dp-accounting's
    /// `calibrate_dp_mechanism`: grow a bracket from [0, 1] (then [1, 3], [3, 7], … up to 30
    /// doublings), then bisect to `tolerance`. The result never overshoots the budget: its
    /// ε ≤ `targetEpsilon`, and it is within `tolerance` of the crossing. Returns 0 when no
    /// noise is needed (q = 0 or steps = 0).
    public static func calibrateNoiseMultiplier(
        targetEpsilon: Double, delta: Double, samplingRate q: Double, steps: Int,
        orders: [Double] = RDPAccountant.defaultOrders, tolerance: Double = 1e-6
    ) throws -> Double {
        guard targetEpsilon >= 0, targetEpsilon.isFinite else { throw AccountantError.epsilonOutOfRange(targetEpsilon) }
        guard delta > 0, delta < 1 else { throw AccountantError.deltaOutOfRange(delta) }
        guard q >= 0, q <= 1 else { throw AccountantError.samplingRateOutOfRange(q) }
        guard steps >= 0 else { throw AccountantError.negativeSteps(steps) }
        guard tolerance > 0 else { throw AccountantError.invalidTolerance(tolerance) }
        let empty = try RDPAccountant(orders: orders)

        /// ε(σ) − target: positive means σ is too small.
        func gap(_ sigma: Double) throws -> Double {
            var accountant = empty
            try accountant.compose(samplingRate: q, noiseMultiplier: sigma, steps: steps)
            return accountant.epsilon(delta: delta).epsilon - targetEpsilon
        }

        var lower = 0.0, upper = 1.0
        var lowerGap = try gap(lower), upperGap = try gap(upper)
        if lowerGap <= 0 { return 0 }
        var width = upper - lower, tries = 0
        while upperGap > 0 {
            tries += 1
            guard tries <= 30 else { throw AccountantError.unreachableTarget(epsilon: targetEpsilon, delta: delta) }
            width *= 2
            (lower, lowerGap) = (upper, upperGap)
            upper += width
            upperGap = try gap(upper)
        }
        // Invariant: gap(lower) > 0 ≥ gap(upper).
        while upper - lower > tolerance {
            let middle = (lower + upper) / 2
            if try gap(middle) <= 0 { upper = middle } else { lower = middle }
        }
        return upper
    }
}

/// log(A_α) for the sampled Gaussian, 0 < q < 1, σ > 0, kept in log space throughout so that large
/// orders, tiny q and large σ neither overflow nor cancel.
private enum SampledGaussian {
    /// Integer α: A_α = Σ_{i=0}^{α} C(α, i) q^i (1−q)^{α−i} exp((i² − i) / (2σ²)) (MTZ19 Sec. 3.2).
    static func logAInteger(q: Double, sigma: Double, alpha: Int) -> Double {
        let logQ = log(q), log1mQ = log1p(-q), twoVariance = 2 * sigma * sigma
        var logA = -Double.infinity
        var logBinomial = 0.0  // log C(α, i), updated by C(α, i) = C(α, i−1)·(α − i + 1)/i
        for i in 0...alpha {
            if i > 0 { logBinomial += log(Double(alpha - i + 1)) - log(Double(i)) }
            let x = Double(i)
            let term = logBinomial + x * logQ + Double(alpha - i) * log1mQ + (x * x - x) / twoVariance
            logA = logAdd(logA, term)
        }
        return logA
    }

    /// dp-accounting's cap on fractional-order terms; orders that need more are reported as ∞
    /// (no bound) and so never chosen.
    static let maxFractionalTerms = 1000

    /// Fractional α (MTZ19 Sec. 3.3): the integral split at z0 = σ² log(1/q − 1) + 1/2, each half
    /// expanded as a binomial series with Gaussian-tail (erfc) factors. Like dp-accounting this sums
    /// the terms' magnitudes (|C(α, i)|), which bounds A_α from above; it stops when both halves'
    /// terms are falling and are e^30 below the running total.
    static func logAFractional(q: Double, sigma: Double, alpha: Double) -> Double {
        let logQ = log(q), log1mQ = log1p(-q), twoVariance = 2 * sigma * sigma
        let z0 = sigma * sigma * log(1 / q - 1) + 0.5
        let scale = 2.0.squareRoot() * sigma, logHalf = log(0.5)
        var logA0 = -Double.infinity, logA1 = -Double.infinity
        var lastS0 = -Double.infinity, lastS1 = -Double.infinity
        var logBinomial = 0.0  // log |C(α, i)|, updated by |α − i + 1| / i
        for n in 0..<maxFractionalTerms {
            let i = Double(n)
            if n > 0 { logBinomial += log(abs(alpha - i + 1)) - log(i) }
            let j = alpha - i
            let logT0 = logBinomial + i * logQ + j * log1mQ
            let logT1 = logBinomial + j * logQ + i * log1mQ
            let logE0 = logHalf + logErfc((i - z0) / scale)
            let logE1 = logHalf + logErfc((z0 - j) / scale)
            let logS0 = logT0 + (i * i - i) / twoVariance + logE0
            let logS1 = logT1 + (j * j - j) / twoVariance + logE1
            logA0 = logAdd(logA0, logS0)
            logA1 = logAdd(logA1, logS1)
            let total = logAdd(logA0, logA1)
            if logS0 < lastS0, logS1 < lastS1, max(logS0, logS1) < total - 30 { return total }
            (lastS0, lastS1) = (logS0, logS1)
        }
        return .infinity
    }

    /// log(e^x + e^y) without overflow.
    static func logAdd(_ x: Double, _ y: Double) -> Double {
        let (a, b) = (min(x, y), max(x, y))
        if a == -.infinity { return b }
        return log1p(exp(a - b)) + b
    }

    /// log(erfc(x)), accurate where erfc underflows: beyond x = 25 the asymptotic series
    /// erfc(x) = e^{−x²} / (x√π) · Σ_k (−1)^k (2k−1)!! / (2x²)^k (error < 1e-16 at x = 25).
    static func logErfc(_ x: Double) -> Double {
        if x < 25 { return log(erfc(x)) }
        let u = 1 / (2 * x * x)
        var term = 1.0, sum = 1.0
        for k in 1...8 {
            term *= -Double(2 * k - 1) * u
            sum += term
        }
        return -x * x - log(x) - 0.5 * log(Double.pi) + log(sum)
    }
}
