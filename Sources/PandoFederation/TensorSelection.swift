import PandoEngine

/// Which tensors of the global model a round trains: the first transform of an update.
///
/// The token, position and token-type embedding tables are frozen in federated rounds by
/// default: a school's delta for the word-embedding table is non-zero exactly in the rows of
/// the tokens its students wrote, so sending it would tell the coordinator (and, through the
/// new global model, every other school) which words each school used. Frozen tensors are not
/// trained (no gradient step, no weight decay) and not sent: the update carries the trained
/// tensors only, in layout order, and the coordinator reads it back with zeros elsewhere.
public struct TensorSelection: Sendable, Equatable {
    /// BERT's embedding tables (rows indexed by token id, position, type), frozen by default.
    public static let embeddingTables: Set<String> = Set(ModelFamily.bert.embeddingTables)
    /// The embedding tables of every model family (DistilBERT's and RoBERTa's have their
    /// own names); a plan freezes whichever of them the layout has.
    public static let allFamiliesEmbeddingTables: Set<String> = Set(ModelFamily.allCases.flatMap { $0.embeddingTables })

    public let frozen: Set<String>
    /// The trained tensors, in layout order.
    public let trained: [TensorSpec]
    /// Values an update carries.
    public let trainedCount: Int

    public init(layout: ParameterLayout, frozen: Set<String>) {
        self.frozen = frozen.intersection(Set(layout.tensors.map(\.name)))
        trained = layout.tensors.filter { !frozen.contains($0.name) }
        trainedCount = trained.reduce(0) { $0 + $1.count }
    }

    /// What `plan` trains of `layout`: with LoRA, B and the head only; otherwise all but the embedding tables (unless the plan trains
    /// them), encoder layers 0..<`freezeLayers`, and the pooler when the head does not read it.
    public init(layout: ParameterLayout, plan: LocalTrainingPlan) {
        if plan.lora != nil {
            // Federated LoRA: only the adapters' B matrices and the head (with the pooler when the head reads it).
            // (RoBERTa's pooler, `classifier.dense.`, also starts with BERT's classifier prefix:
            // an unread pooler is frozen whatever the names.)
            let classifier = ModelFamily.allCases.map(\.classifierPrefix), pooler = ModelFamily.allCases.map(\.poolerPrefix)
            func trained(_ name: String) -> Bool {
                if name.hasSuffix(".lora_B.weight") { return true }
                if pooler.contains(where: { name.hasPrefix($0) }) { return plan.pooling == .pooler }
                return classifier.contains { name.hasPrefix($0) }
            }
            let frozen = layout.tensors.map(\.name).filter { !trained($0) }
            self.init(layout: layout, frozen: Set(frozen))
            return
        }
        var frozen = plan.freezeEmbeddings ? Self.allFamiliesEmbeddingTables : []
        var prefixes = (0..<plan.freezeLayers).flatMap { l in ModelFamily.allCases.map { $0.layerPrefix(l) } }
        if plan.pooling != .pooler { prefixes += ModelFamily.allCases.map(\.poolerPrefix) }
        if !prefixes.isEmpty {
            frozen.formUnion(layout.tensors.map(\.name).filter { name in prefixes.contains { name.hasPrefix($0) } })
        }
        self.init(layout: layout, frozen: frozen)
    }

    /// Every tensor (nothing frozen).
    public static func all(_ layout: ParameterLayout) -> TensorSelection { TensorSelection(layout: layout, frozen: []) }
}
