extension BertModel {
    /// Floating-point operations of one forward pass over `batch`: the
    /// matrix products of the encoder, the attention scores and context,
    /// and the head. Element-wise work is not counted. A training step costs
    /// three times this (forward, then gradients for inputs and weights).
    public func forwardFLOPs(lengths: [Int]) -> Double {
        let H = Double(config.hiddenSize), I = Double(config.intermediateSize), layers = Double(config.layers)
        let tokens = Double(lengths.reduce(0, +))
        let squares = Double(lengths.reduce(0) { $0 + $1 * $1 })
        let linear = 2 * tokens * (4 * H * H + 2 * H * I)
        let attention = 2 * 2 * squares * H
        let head = 2 * Double(lengths.count) * (H * H + H * Double(head.outputs))
        return layers * (linear + attention) + head
    }
}
