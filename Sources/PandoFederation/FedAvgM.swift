import PandoEngine

/// FedAvg with server momentum (Hsu, Qi and Brown, "Measuring the Effects of Non-Identical
/// Data Distribution for Federated Visual Classification", 2019): the weighted mean delta Δ
/// is a pseudo-gradient for heavy-ball momentum at the coordinator,
///
///     v ← β·v + Δ
///     w ← w + η·v
///
/// with v₀ = 0. Under label skew each round's mean delta leans towards the schools asked;
/// the velocity averages those directions over rounds. β = 0 is FedAvg with server rate η;
/// the paper pairs β = 0.9 with η = 1 − β, so that the steady-state step equals FedAvg's.
/// Needs only the weighted mean, so it runs under secure aggregation. State: one
/// model-sized buffer, stored with each version.
public final class FedAvgM: Strategy {
    public let serverLearningRate: Float
    public let momentum: Float
    public let velocity: ParameterBuffer
    public var name: String { "fedavgm" }
    public var parameters: [String: Double] {
        ["serverLearningRate": decimal(serverLearningRate), "momentum": decimal(momentum)]
    }

    public init(layout: ParameterLayout, serverLearningRate: Float = 1, momentum: Float = 0.9) {
        precondition(serverLearningRate > 0 && momentum >= 0 && momentum < 1, "FedAvgM needs η > 0 and 0 ≤ β < 1")
        self.serverLearningRate = serverLearningRate
        self.momentum = momentum
        velocity = ParameterBuffer(layout: layout)
    }

    public var state: [String: ParameterBuffer] { ["fedavgm.velocity": velocity] }

    public func commit(aggregate: ParameterBuffer, to global: ParameterBuffer) {
        precondition(aggregate.buffer.count == velocity.buffer.count && global.buffer.count == velocity.buffer.count,
                     "layout differs from FedAvgM's state")
        let beta = momentum, eta = serverLearningRate
        let d = aggregate.buffer.base, w = global.buffer.base, v = velocity.buffer.base
        Parallel.forRanges(global.buffer.count, minimumChunk: DeltaMath.chunk) { r in
            for i in r {
                let vi = beta * v[i] + d[i]
                v[i] = vi
                w[i] += eta * vi
            }
        }
    }
}
