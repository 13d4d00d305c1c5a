import PandoEngine

/// FedAdam (Reddi et al., "Adaptive Federated Optimization", 2021): the
/// weighted mean delta Δ is a pseudo-gradient for a server-side Adam,
///
///     m ← β₁·m + (1 − β₁)·Δ
///     v ← β₂·v + (1 − β₂)·Δ²
///     w ← w + η·m / (√v + τ)
///
/// without bias correction, as in the paper's Algorithm 2, with m₀ = 0 and
/// v₀ = τ² (the paper asks v₋₁ ≥ τ²).
///
/// τ bounds the adaptivity: coordinates whose |Δ| ≪ τ move by about η·m/τ
/// (damped), those with |Δ| ≫ τ by about η per round in the direction of m
/// (sign-like, as Adam). The defaults suit BERT fine-tuning deltas, whose
/// per-coordinate size after a local epoch at lr 5e-5 is about 1e-5…1e-3:
/// η = 1e-3 (close to how far local training moves a coordinate), β₁ = 0.9,
/// β₂ = 0.99 and τ = 1e-6 (the paper tunes τ in 1e-1…1e-5 for models
/// trained at larger learning rates; scale it with the delta size).
/// State: two model-sized buffers, m and v.
public final class FedAdam: Strategy {
    public struct Settings: Sendable, Equatable, Codable {
        public var learningRate: Float = 1e-3
        public var beta1: Float = 0.9
        public var beta2: Float = 0.99
        public var tau: Float = 1e-6
        public init(learningRate: Float = 1e-3, beta1: Float = 0.9, beta2: Float = 0.99, tau: Float = 1e-6) {
            self.learningRate = learningRate
            self.beta1 = beta1
            self.beta2 = beta2
            self.tau = tau
        }
    }

    public let settings: Settings
    public let firstMoment: ParameterBuffer
    public let secondMoment: ParameterBuffer
    /// Rounds this instance has committed (the moments themselves survive a restart: they are
    /// stored with each version).
    public private(set) var rounds = 0
    public var name: String { "fedadam" }
    public var parameters: [String: Double] {
        ["learningRate": decimal(settings.learningRate), "beta1": decimal(settings.beta1), "beta2": decimal(settings.beta2),
         "tau": decimal(settings.tau)]
    }

    public init(layout: ParameterLayout, settings: Settings = .init()) {
        precondition(settings.tau > 0 && settings.learningRate > 0, "FedAdam needs τ > 0 and η > 0")
        self.settings = settings
        firstMoment = ParameterBuffer(layout: layout)
        secondMoment = ParameterBuffer(layout: layout)
        secondMoment.buffer.fill(settings.tau * settings.tau)
    }

    public var state: [String: ParameterBuffer] { ["fedadam.m": firstMoment, "fedadam.v": secondMoment] }

    public func commit(aggregate: ParameterBuffer, to global: ParameterBuffer) {
        precondition(aggregate.buffer.count == firstMoment.buffer.count && global.buffer.count == firstMoment.buffer.count,
                     "layout differs from FedAdam's state")
        let b1 = settings.beta1, b2 = settings.beta2, eta = settings.learningRate, tau = settings.tau
        let d = aggregate.buffer.base, w = global.buffer.base
        let m = firstMoment.buffer.base, v = secondMoment.buffer.base
        Parallel.forRanges(global.buffer.count, minimumChunk: DeltaMath.chunk) { r in
            for i in r {
                let di = d[i]
                let mi = b1 * m[i] + (1 - b1) * di
                let vi = b2 * v[i] + (1 - b2) * di * di
                m[i] = mi
                v[i] = vi
                w[i] += eta * mi / (vi.squareRoot() + tau)
            }
        }
        rounds += 1
    }
}
