import Foundation

/// How the schools' learning rate falls from round to round: the federated counterpart of
/// the linear decay centralized fine-tuning ends with.
///
/// FedAvg with a constant local rate keeps moving the global model by a full step every
/// round, so with skewed schools the last round can undo part of the one before it; a
/// rate that decays over the federation lets it settle (and the convergence results for
/// FedAvg on non-IID data, Li et al. 2020, assume one). Round `r` of `R` trains at
/// `learningRate · f((r − ½) / R)`, the rate a centralized linear or cosine decay has in
/// the middle of its `r`-th epoch: `linear` f(t) = 1 − t, `cosine` f(t) = ½(1 + cos πt).
/// Rounds past the horizon keep the last round's rate. The rate each round ran with is
/// in its plan, hence in the audit.
public enum RoundDecay: String, Sendable, CaseIterable, Codable {
    case none, linear, cosine

    /// The factor for round `round` (1-based) of a federation planned for `rounds` rounds.
    public func factor(round: Int, of rounds: Int) -> Double {
        guard self != .none, rounds > 0 else { return 1 }
        let r = min(max(round, 1), rounds)
        let t = (Double(r) - 0.5) / Double(rounds)
        switch self {
        case .none: return 1
        case .linear: return 1 - t
        case .cosine: return 0.5 * (1 + cos(Double.pi * t))
        }
    }

    /// `configured` with its learning rate scaled for `round`.
    public func plan(round: Int, of rounds: Int, configured: LocalTrainingPlan) -> LocalTrainingPlan {
        guard self != .none else { return configured }
        var plan = configured
        // Rounded to 4 significant digits so the plan and the audit read as a decimal.
        let rate = Double(configured.learningRate) * factor(round: round, of: rounds)
        plan.learningRate = Float(String(format: "%.4g", rate)) ?? Float(rate)
        return plan
    }
}
