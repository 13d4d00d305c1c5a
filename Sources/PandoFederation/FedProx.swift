import PandoEngine

/// FedProx (Li et al.): clients minimise their loss plus `μ/2·‖w − w_global‖²`
/// (`FineTuner.proximal`), which limits drift on non-IID schools; the server
/// side is FedAvg's weighted mean of deltas.
public final class FedProx: Strategy {
    public let mu: Float
    private let server: FedAvg
    public var name: String { "fedprox" }
    public var parameters: [String: Double] { ["mu": decimal(mu), "serverLearningRate": decimal(server.serverLearningRate)] }

    public init(mu: Float = 0.01, serverLearningRate: Float = 1) {
        precondition(mu >= 0 && mu.isFinite, "FedProx μ must be a non-negative number")
        self.mu = mu
        server = FedAvg(serverLearningRate: serverLearningRate)
    }

    public func plan(round: Int, configured: LocalTrainingPlan) -> LocalTrainingPlan {
        var plan = configured
        plan.proximalMu = mu
        return plan
    }

    public func commit(aggregate: ParameterBuffer, to global: ParameterBuffer) {
        server.commit(aggregate: aggregate, to: global)
    }
}
