/// Where one named tensor lives inside a flat buffer.
public struct TensorSpec: Sendable, Equatable, Codable {
    /// The Hugging Face name (for BERT: `bert.encoder.layer.0.attention.self.query.weight`).
    public let name: String
    public let shape: [Int]
    /// First element, counted in Floats from the start of the buffer.
    public let offset: Int
    /// Whether AdamW applies weight decay (not to biases or LayerNorm).
    public let decays: Bool
    public var count: Int { shape.reduce(1, *) }
}

/// The order and shapes of every tensor of a model inside one contiguous
/// Float buffer. Parameters, gradients and optimiser moments all share one
/// layout, so a delta, a weighted sum or a norm is a single pass over memory.
public struct ParameterLayout: Sendable, Equatable {
    public private(set) var tensors: [TensorSpec] = []
    public private(set) var count = 0
    private var index: [String: Int] = [:]

    public init() {}

    /// Appends a tensor and returns its spec. Names must be unique.
    @discardableResult
    public mutating func append(_ name: String, shape: [Int], decays: Bool) -> TensorSpec {
        precondition(index[name] == nil, "duplicate tensor \(name)")
        let spec = TensorSpec(name: name, shape: shape, offset: count, decays: decays)
        index[name] = tensors.count
        tensors.append(spec)
        count += spec.count
        return spec
    }

    public subscript(name: String) -> TensorSpec? { index[name].map { tensors[$0] } }

    /// The element ranges of `specs`, sorted, with adjacent or overlapping ones merged (so a
    /// fused block of several frozen tensors, such as Q, K and V, is one range).
    public static func mergedRanges(_ specs: [TensorSpec]) -> [Range<Int>] {
        var result: [Range<Int>] = []
        for r in specs.map({ $0.offset..<($0.offset + $0.count) }).sorted(by: { $0.lowerBound < $1.lowerBound }) where !r.isEmpty {
            if let last = result.last, r.lowerBound <= last.upperBound {
                result[result.count - 1] = last.lowerBound..<max(last.upperBound, r.upperBound)
            } else {
                result.append(r)
            }
        }
        return result
    }
}

/// A flat Float buffer laid out by a `ParameterLayout`: parameters,
/// gradients, optimiser state or a federated delta.
public final class ParameterBuffer: @unchecked Sendable {
    public let layout: ParameterLayout
    private let storage: FloatStorage

    /// All elements, in layout order.
    ///
    /// A non-owning view: keep the `ParameterBuffer` alive while using it.
    /// `makeBuffer().buffer.array` reads freed memory; use `values` there.
    public var buffer: FloatBuffer { storage.buffer }

    /// A copy of all elements; safe on a temporary.
    public var values: [Float] { withExtendedLifetime(self) { storage.buffer.array } }

    /// A copy of tensor `name`'s elements; safe on a temporary.
    public func values(_ name: String) -> [Float] { withExtendedLifetime(self) { view(name).array } }

    /// A zero-filled buffer for `layout`.
    public init(layout: ParameterLayout) {
        self.layout = layout
        storage = FloatStorage(count: layout.count)
    }

    /// The elements of tensor `name` (a non-owning view, like `buffer`);
    /// traps if there is no such tensor.
    public func view(_ name: String) -> FloatBuffer {
        guard let spec = layout[name] else { preconditionFailure("no tensor named \(name)") }
        return buffer.slice(spec.offset, spec.count)
    }

    public func view(_ spec: TensorSpec) -> FloatBuffer { buffer.slice(spec.offset, spec.count) }

    /// A copy with the same layout.
    public func copy() -> ParameterBuffer {
        let other = ParameterBuffer(layout: layout)
        other.buffer.copy(from: buffer)
        return other
    }

    public func zero() { buffer.fill(0) }
}
