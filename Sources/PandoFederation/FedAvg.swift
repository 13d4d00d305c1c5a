import PandoEngine

/// FedAvg over deltas (McMahan et al.): `w ← w + η·Σᵢ nᵢδᵢ / Σᵢ nᵢ`, with
/// schools weighted by their example counts. η = 1 is plain FedAvg; η ≠ 1
/// is a server learning rate (η > 1 extrapolates along the mean delta).
public final class FedAvg: Strategy {
    public let serverLearningRate: Float
    public var name: String { "fedavg" }
    public var parameters: [String: Double] { ["serverLearningRate": decimal(serverLearningRate)] }

    public init(serverLearningRate: Float = 1) {
        self.serverLearningRate = serverLearningRate
    }

    public func commit(aggregate: ParameterBuffer, to global: ParameterBuffer) {
        DeltaMath.addScaled(aggregate.buffer, by: serverLearningRate, into: global.buffer)
    }
}
