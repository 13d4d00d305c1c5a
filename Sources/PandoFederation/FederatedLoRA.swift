import PandoEngine

/// LoRA in federations, exact by construction (FFA-LoRA, Sun et al. 2024, merged every round).
///
/// Averaging schools' A and B separately is not the average of their products B·A. So in a
/// LoRA round every school and the coordinator add the *same* adapters to the global model:
/// A drawn from the round's public seed (`LocalTrainingPlan.loraSeed(round:)`), B zero. The
/// schools train B (and the head) with A frozen and send only those. Because A is shared,
///     mean_i (α/r)·B_i·A = (α/r)·(mean_i B_i)·A,
/// so the coordinator's weighted mean of the B's is exactly the mean of the schools' weight
/// changes. It merges that into the weights, W + (α/r)·B̄·A, and commits a plain model: versions
/// stay ordinary Hugging Face folders. A fresh A each round lets the merged updates span more
/// than one rank-r subspace over the rounds.
public enum FederatedLoRA {
    /// The round's model: `global` with the round's adapters, or nil when the plan has no LoRA.
    public static func roundModel(global: BertModel, plan: LocalTrainingPlan, round: Int) throws -> BertModel? {
        guard let lora = plan.lora else { return nil }
        return try BertModel(lora: lora, base: global, seed: plan.loraSeed(round: round))
    }

    /// The layout updates of `plan` have: the model's, with the adapters when the plan has LoRA.
    public static func layout(config: BertConfig, head: ClassifierHead, plan: LocalTrainingPlan) -> ParameterLayout {
        BertModel.layout(config: config, head: head, lora: plan.lora)
    }
}
