/// Top-k selection by magnitude over model-sized buffers without sorting them: a threshold
/// estimated from a fixed sample, one exact pass collecting the values at or above it (about
/// 1.5·k of them), then a quickselect over those candidates only. O(n) time, O(k) memory.
public enum TopK {
    /// Values sampled to estimate the threshold.
    static let sampleSize = 1 << 16

    /// Indices, increasing, of the `k` elements of `x` with the largest |x|; of equal
    /// magnitudes at the threshold the lowest indices are taken, so the result is deterministic.
    /// `x` must be finite.
    public static func indices(_ x: UnsafePointer<Float>, count n: Int, k: Int) -> [UInt32] {
        precondition(k >= 1 && k <= n && n <= Int(UInt32.max), "k must be in 1…n and n below 2³²")
        if k == n { return (0..<n).map { UInt32($0) } }
        // A sample rank whose value should have about 1.5·k elements at or above it (plus a
        // few standard deviations), so one pass usually collects enough candidates.
        let s = min(n, sampleSize)
        var sample = [Float](unsafeUninitializedCapacity: s) { buffer, count in
            for j in 0..<s { buffer[j] = abs(x[Int((UInt64(j) * UInt64(n)) / UInt64(s))]) }
            count = s
        }
        let expected = Double(k) / Double(n) * Double(s)
        var rank = min(s, Int((1.5 * expected + 3 * expected.squareRoot()).rounded(.up)) + 1)
        while true {
            // Everything is a candidate once the sample gives no usable threshold.
            let threshold: Float = rank >= s ? -1 : kthLargest(&sample, rank)
            var candidates: [UInt32] = [], magnitudes: [Float] = []
            candidates.reserveCapacity(min(n, 2 * k + 1024))
            magnitudes.reserveCapacity(min(n, 2 * k + 1024))
            for i in 0..<n {
                let m = abs(x[i])
                if m >= threshold {
                    candidates.append(UInt32(i))
                    magnitudes.append(m)
                }
            }
            guard candidates.count >= k else {
                rank = min(s, 2 * rank)
                continue
            }
            var work = magnitudes
            let kth = kthLargest(&work, k)
            let above = magnitudes.reduce(0) { $0 + ($1 > kth ? 1 : 0) }
            var ties = k - above
            var chosen: [UInt32] = []
            chosen.reserveCapacity(k)
            for (i, m) in zip(candidates, magnitudes) {
                if m > kth {
                    chosen.append(i)
                } else if m == kth, ties > 0 {
                    chosen.append(i)
                    ties -= 1
                }
            }
            return chosen
        }
    }

    /// The `k`-th largest element (1-based) of `a`, reordering `a`: quickselect with a
    /// three-way partition (many equal values, such as zeros, cost one pass) and pivots from
    /// a fixed pseudo-random sequence. Expected O(n).
    public static func kthLargest(_ a: inout [Float], _ k: Int) -> Float {
        precondition(k >= 1 && k <= a.count, "k out of range")
        var state: UInt64 = 0x9E37_79B9_7F4A_7C15
        return a.withUnsafeMutableBufferPointer { p -> Float in
            var lo = 0, hi = p.count - 1
            let target = k - 1  // position in descending order
            while lo < hi {
                state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
                let pivot = p[lo + Int((state >> 33) % UInt64(hi - lo + 1))]
                // [lo, lt) > pivot, [lt, gt] == pivot, (gt, hi] < pivot.
                var lt = lo, i = lo, gt = hi
                while i <= gt {
                    if p[i] > pivot {
                        p.swapAt(lt, i)
                        lt += 1
                        i += 1
                    } else if p[i] < pivot {
                        p.swapAt(i, gt)
                        gt -= 1
                    } else {
                        i += 1
                    }
                }
                if target < lt { hi = lt - 1 } else if target > gt { lo = gt + 1 } else { return pivot }
            }
            return p[lo]
        }
    }
}
