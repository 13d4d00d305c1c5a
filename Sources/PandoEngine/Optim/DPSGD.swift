import Foundation

/// Draws standard normal values for DP-SGD's noise. Products use a cryptographic
/// source (PandoTraining's `SecureGaussianNoise`); ``SeededGaussianNoise`` reproduces a
/// run for tests and experiments and must not protect real data.
public protocol GaussianNoiseSource: AnyObject {
    /// Overwrites `x[0..<count]` with independent N(0, 1) values.
    func fillStandardNormal(_ x: UnsafeMutablePointer<Float>, count: Int)
}

extension GaussianNoiseSource {
    /// `x[i] += sd · N(0, 1)` for `i < count`, drawing through `scratch` (no allocation).
    public func addNoise(standardDeviation sd: Float, to x: UnsafeMutablePointer<Float>, count: Int, scratch: FloatBuffer) {
        var done = 0
        while done < count {
            let n = min(scratch.count, count - done)
            fillStandardNormal(scratch.base, count: n)
            let target = x + done
            for i in 0..<n { target[i] += sd * scratch[i] }
            done += n
        }
    }
}

/// N(0, 1) values from a counter-based generator and a seed: reproducible, not secret.
public final class SeededGaussianNoise: GaussianNoiseSource {
    private let key: UInt64
    private var drawn = 0
    public init(seed: UInt64) { key = CounterRandom.key(seed, 0xD9_5EED) }
    public func fillStandardNormal(_ x: UnsafeMutablePointer<Float>, count: Int) {
        let base = drawn, key = key
        Parallel.forRanges(count, minimumChunk: 1 << 15) { r in
            for i in r { x[i] = CounterRandom.normal(key, base + i) }
        }
        drawn += count
    }
}

/// DP-SGD's per-step parameters (Abadi et al. 2016, with Poisson sampling): each
/// example's gradient is clipped to `maxGradientNorm` C, Gaussian noise of standard
/// deviation σ·C is added to the sum, and the sum is divided by the expected batch size.
public struct DPSGDSettings: Sendable, Equatable, Codable {
    public var maxGradientNorm: Float
    public var noiseMultiplier: Float
    /// q · (examples): the divisor of the noisy sum, fixed so it reveals nothing about the batch.
    public var expectedBatchSize: Double
    public init(maxGradientNorm: Float, noiseMultiplier: Float, expectedBatchSize: Double) {
        self.maxGradientNorm = maxGradientNorm
        self.noiseMultiplier = noiseMultiplier
        self.expectedBatchSize = expectedBatchSize
    }
}

extension BertModel {
    /// DP-SGD's gradient for one physical batch: forward, each example's loss gradient,
    /// their norms over the trained tensors (a backward pass in norm mode, no weight
    /// gradients formed), then `gradients += Σᵢ min(1, C/‖gᵢ‖) · gᵢ`: from the norm pass's
    /// book (``GradientBook``) or, with `norms.keepsBook` off, from a second backward of
    /// the loss reweighted by each example's clip factor.
    /// Returns the mean loss and the per-example norms before clipping.
    public func clippedGradients(
        _ batch: PackedBatch, targets: Targets, workspace ws: BertWorkspace, norms: ExampleGradientNorms,
        maxGradientNorm C: Float, gradients: ParameterBuffer, dropout: DropoutKey?, classWeights: [Float]? = nil
    ) -> (loss: Float, norms: [Double]) {
        precondition(ws.training, "backward needs a training workspace")
        precondition(gradients.layout == layout, "gradient layout differs from the model's")
        let B = batch.count, K = head.outputs
        forward(batch, workspace: ws, dropout: dropout)
        let value = loss(targets, batch: batch, workspace: ws, classWeights: classWeights)
        // The loss kernels average; undo it so row b holds the gradient of example b's own loss.
        var perExample = Float(B)
        if case .classes(let y) = targets, let w = classWeights { perExample = y.reduce(0) { $0 + w[$1] } }
        for i in 0..<(B * K) { ws.dLogits[i] *= perExample }

        ws.exampleNorms = norms
        backward(batch, workspace: ws, gradients: gradients, dropout: dropout)
        ws.exampleNorms = nil
        let found = norms.norms
        let factors = found.map { Float(min(1, Double(C) / ($0 + 1e-6))) }
        if norms.keepsBook {
            addBookedGradients(norms.book, factors: factors, batch: batch, workspace: ws, gradients: gradients)
        } else {
            for b in 0..<B { for j in 0..<K { ws.dLogits[b * K + j] *= factors[b] } }
            backward(batch, workspace: ws, gradients: gradients, dropout: dropout)
        }
        return (value, found)
    }
}

extension FineTuner {
    /// What one private update did.
    public struct PrivateStepResult: Sendable {
        public let loss: Float
        public let examples: Int
        /// Fraction of the step's examples whose gradient was clipped.
        public let clippedFraction: Double
        public let meanGradientNorm: Double
        public let learningRate: Float
    }

    /// One DP-SGD update over a logical batch, given as physical chunks that each fit the
    /// workspace (a Poisson-sampled batch has no fixed size; an empty one still adds noise
    /// and steps, as the accountant assumes). The noise goes only into trained tensors;
    /// FedProx's proximal term, which depends on no data, is added after it.
    @discardableResult
    public func privateStep(
        _ chunks: [(batch: PackedBatch, targets: Targets)], privacy: DPSGDSettings, noise: GaussianNoiseSource,
        classWeights: [Float]? = nil
    ) -> PrivateStepResult {
        precondition(privacy.maxGradientNorm > 0 && privacy.noiseMultiplier >= 0 && privacy.expectedBatchSize > 0, "invalid DP-SGD settings")
        if exampleNorms?.frozen != frozen {
            exampleNorms = ExampleGradientNorms(model: model, frozen: frozen, capacity: workspace.capacity)
        }
        exampleNorms!.keepsBook = bookKeeping
        gradients.zero()
        let key = settings.dropout ? DropoutKey(seed: settings.seed, step: UInt64(step)) : nil
        var lossSum = 0.0, examples = 0, clipped = 0, normSum = 0.0
        for (batch, targets) in chunks where batch.count > 0 {
            let (loss, norms) = model.clippedGradients(batch, targets: targets, workspace: workspace, norms: exampleNorms!,
                                                       maxGradientNorm: privacy.maxGradientNorm, gradients: gradients,
                                                       dropout: key, classWeights: classWeights)
            lossSum += Double(loss) * Double(batch.count)
            examples += batch.count
            clipped += norms.filter { $0 > Double(privacy.maxGradientNorm) }.count
            normSum += norms.reduce(0, +)
        }
        let sd = privacy.noiseMultiplier * privacy.maxGradientNorm
        let g = gradients.buffer.base
        for range in trainedRanges {
            noise.addNoise(standardDeviation: sd, to: g + range.lowerBound, count: range.count, scratch: noiseScratch.buffer)
        }
        Elementwise.scale(g, count: gradients.buffer.count, by: Float(1 / privacy.expectedBatchSize))
        addProximalTerm()
        let lr = settings.learningRate * settings.schedule.factor(at: step)
        optimizer.update(model.parameters, gradients: gradients, learningRate: lr)
        step += 1
        return PrivateStepResult(loss: examples > 0 ? Float(lossSum / Double(examples)) : .nan, examples: examples,
                                 clippedFraction: examples > 0 ? Double(clipped) / Double(examples) : 0,
                                 meanGradientNorm: examples > 0 ? normSum / Double(examples) : 0, learningRate: lr)
    }
}
