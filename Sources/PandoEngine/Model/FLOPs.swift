extension BertModel {
    /// Floating-point operations of one forward pass over `batch`: the
    /// matrix products of the encoder, the attention scores and context,
    /// and the head. Element-wise work is not counted. A training step costs
    /// three times this (forward, then gradients for inputs and weights).
    /// `firstTokensOnly` counts the last-layer shortcut of heads that pool
    /// the first token (see `encode(_:workspace:dropout:firstTokensOnly:)`).
    public func forwardFLOPs(lengths: [Int], firstTokensOnly: Bool = false) -> Double {
        let H = Double(config.hiddenSize), I = Double(config.intermediateSize), layers = Double(config.layers)
        let tokens = Double(lengths.reduce(0, +))
        let squares = Double(lengths.reduce(0) { $0 + $1 * $1 })
        let linear = 2 * tokens * (4 * H * H + 2 * H * I)
        let attention = 2 * 2 * squares * H
        let head = 2 * Double(lengths.count) * (H * H + H * Double(head.outputs))
        guard firstTokensOnly else { return layers * (linear + attention) + head }
        // Last layer: keys and values of every token (and queries too in the int8 encoder,
        // whose fused QKV weight is applied whole); the rest for one row per sequence.
        let rows = Double(lengths.count), quantized = int8 != nil
        let everyToken = 2 * tokens * (quantized ? 3 : 2) * H * H
        let firstRows = 2 * rows * ((quantized ? 1 : 2) * H * H + 2 * H * I)
        let firstAttention = 2 * 2 * tokens * H
        return (layers - 1) * (linear + attention) + everyToken + firstRows + firstAttention + head
    }
}
