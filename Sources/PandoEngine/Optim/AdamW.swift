import Foundation

/// AdamW with decoupled weight decay (Loshchilov & Hutter), matching
/// `torch.optim.AdamW`: `p ← p·(1 − lr·λ)`, then the bias-corrected Adam
/// step with `ε` added after `√v̂`. Tensors whose spec says `decays == false`
/// (biases, LayerNorm) get no decay. Moments share the parameters' layout.
public final class AdamW: @unchecked Sendable {
    public struct Settings: Sendable, Equatable, Codable {
        public var beta1: Float = 0.9
        public var beta2: Float = 0.999
        public var epsilon: Float = 1e-8
        public var weightDecay: Float = 0.01
        public init(beta1: Float = 0.9, beta2: Float = 0.999, epsilon: Float = 1e-8, weightDecay: Float = 0.01) {
            self.beta1 = beta1
            self.beta2 = beta2
            self.epsilon = epsilon
            self.weightDecay = weightDecay
        }
    }

    public let settings: Settings
    public let firstMoment: ParameterBuffer
    public let secondMoment: ParameterBuffer
    /// Updates taken so far (for bias correction).
    public private(set) var step = 0
    /// Tensors left unchanged (frozen layers).
    public var frozen: Set<String> = []
    /// Per-tensor multipliers of the learning rate (1 for a tensor not named): a tensor in
    /// its own `torch.optim.AdamW` parameter group at `scale · lr`, on the same schedule.
    /// Its decay follows its own rate, `p·(1 − scale·lr·λ)`, as a group's does.
    public var learningRateScale: [String: Float] = [:]

    public init(layout: ParameterLayout, settings: Settings = .init()) {
        self.settings = settings
        firstMoment = ParameterBuffer(layout: layout)
        secondMoment = ParameterBuffer(layout: layout)
    }

    /// Applies one update with learning rate `lr` to `parameters` from `gradients`.
    public func update(_ parameters: ParameterBuffer, gradients: ParameterBuffer, learningRate lr: Float) {
        precondition(parameters.layout == firstMoment.layout && gradients.layout == firstMoment.layout, "layout mismatch")
        step += 1
        let b1 = settings.beta1, b2 = settings.beta2, eps = settings.epsilon
        let correction1 = 1 - Float(pow(Double(b1), Double(step)))
        let correction2Root = Float((1 - pow(Double(b2), Double(step))).squareRoot())
        let p = parameters.buffer.base, g = gradients.buffer.base
        let m = firstMoment.buffer.base, v = secondMoment.buffer.base
        for spec in parameters.layout.tensors where !frozen.contains(spec.name) {
            let rate = lr * (learningRateScale[spec.name] ?? 1)
            let stepSize = rate / correction1
            let decay: Float = spec.decays ? 1 - rate * settings.weightDecay : 1
            let start = spec.offset
            Parallel.forRanges(spec.count, minimumChunk: 1 << 15) { range in
                for k in range {
                    let i = start + k
                    let gi = g[i]
                    let mi = b1 * m[i] + (1 - b1) * gi
                    let vi = b2 * v[i] + (1 - b2) * gi * gi
                    m[i] = mi
                    v[i] = vi
                    p[i] = p[i] * decay - stepSize * mi / (vi.squareRoot() / correction2Root + eps)
                }
            }
        }
    }
}

/// Learning-rate schedules, as functions of the update index (0-based).
public enum LearningRateSchedule: Sendable, Equatable, Codable {
    case constant
    /// Linear warm-up from 0 over `warmupSteps`, then linear decay to 0 at
    /// `totalSteps`: `get_linear_schedule_with_warmup`. As in Hugging Face's
    /// Trainer, the first update uses factor 0.
    case linear(warmupSteps: Int, totalSteps: Int)

    public func factor(at step: Int) -> Float {
        switch self {
        case .constant: return 1
        case .linear(let warmup, let total):
            if step < warmup { return Float(step) / Float(max(1, warmup)) }
            return max(0, Float(total - step) / Float(max(1, total - warmup)))
        }
    }
}

/// Global gradient-norm clipping, as `torch.nn.utils.clip_grad_norm_`.
public enum GradientClipping {
    /// Scales `gradients` so their L2 norm is at most `maxNorm`; returns the
    /// norm before clipping.
    @discardableResult
    public static func clip(_ gradients: ParameterBuffer, maxNorm: Float) -> Float {
        let norm = Float(Elementwise.sumOfSquares(gradients.buffer.base, count: gradients.buffer.count).squareRoot())
        let coefficient = maxNorm / (norm + 1e-6)
        if coefficient < 1 { Elementwise.scale(gradients.buffer.base, count: gradients.buffer.count, by: coefficient) }
        return norm
    }
}
