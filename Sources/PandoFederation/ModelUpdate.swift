import PandoEngine

/// What one school sends back for one round: its weight delta
/// (trained − base) and what the coordinator needs to check and weigh it.
/// Never text: only numbers the school computed from its own data.
public struct ModelUpdate: @unchecked Sendable {
    /// The school's identity (later: the subject of its client certificate).
    public var school: String
    /// The round this update answers.
    public var round: Int
    /// The global version the school trained from (later: the checkpoint's SHA-256).
    public var baseVersion: String
    /// Trained weights minus base weights, in the global layout.
    public var delta: ParameterBuffer
    /// Training examples behind the update, as the school reported them.
    public var exampleCount: Int
    /// The weight the coordinator gives it when lower than `exampleCount` (capped, see
    /// ``UpdateBounds/weight(reported:referenceMedian:multiple:)``); `nil`: the example count.
    public var cappedWeight: Int?
    /// FedAvg's weight: the example count, or the cap.
    public var weight: Int { cappedWeight ?? exampleCount }
    /// Local training metrics (loss, steps, seconds, …), aggregate numbers only.
    public var metrics: [String: Double]

    public init(school: String, round: Int, baseVersion: String, delta: ParameterBuffer,
                exampleCount: Int, metrics: [String: Double] = [:]) {
        self.school = school
        self.round = round
        self.baseVersion = baseVersion
        self.delta = delta
        self.exampleCount = exampleCount
        self.metrics = metrics
    }

    /// Values the update carried (the trained tensors); `nil`: the whole layout.
    public var sentParameters: Int?

    /// Size of the file the school sent (``UpdatePipeline/encodedBytes``: compressed or not),
    /// when the receiver knows it.
    public var encodedBytes: Int?

    /// Bytes the update took on the wire: the file received, else the Float32 values carried.
    public var wireBytes: Int { encodedBytes ?? 4 * (sentParameters ?? delta.layout.count) }
}

/// Threaded element-wise passes over model-sized buffers, shared by the
/// accumulator, the strategies and local training.
public enum DeltaMath {
    static let chunk = 1 << 15

    /// `y += a · x`.
    public static func addScaled(_ x: FloatBuffer, by a: Float, into y: FloatBuffer) {
        precondition(x.count == y.count, "buffers of different sizes")
        let xp = x.base, yp = y.base
        Parallel.forRanges(x.count, minimumChunk: chunk) { r in
            for i in r { yp[i] += a * xp[i] }
        }
    }

    /// `x -= base`: turns trained weights into a delta in place.
    public static func subtract(_ base: FloatBuffer, from x: FloatBuffer) {
        precondition(x.count == base.count, "buffers of different sizes")
        let xp = x.base, bp = base.base
        Parallel.forRanges(x.count, minimumChunk: chunk) { r in
            for i in r { xp[i] -= bp[i] }
        }
    }

    /// `x *= s`.
    public static func scale(_ x: FloatBuffer, by s: Float) {
        let xp = x.base
        Parallel.forRanges(x.count, minimumChunk: chunk) { r in
            for i in r { xp[i] *= s }
        }
    }

    /// The L2 norm, accumulated in Double (infinite if a value or a square overflows).
    public static func norm(_ x: FloatBuffer) -> Double {
        Elementwise.sumOfSquares(x.base, count: x.count).squareRoot()
    }

    /// The first element that is NaN or ±∞, if any.
    public static func firstNonFinite(_ x: FloatBuffer) -> Int? {
        let xp = x.base
        let workers = max(1, min(Parallel.workers, 64))
        let found = UnsafeMutablePointer<Int>.allocate(capacity: workers)
        defer { found.deallocate() }
        found.initialize(repeating: Int.max, count: workers)
        let chunks = min(workers, max(1, x.count / chunk))
        Parallel.forEach(chunks) { c in
            let lo = x.count * c / chunks, hi = x.count * (c + 1) / chunks
            for i in lo..<hi where !xp[i].isFinite { found[c] = i; return }
        }
        let first = (0..<chunks).map { found[$0] }.min() ?? Int.max
        return first == Int.max ? nil : first
    }
}
