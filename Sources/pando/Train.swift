import ArgumentParser
import Foundation
import PandoData
import PandoEngine
import PandoTraining

extension TaskKind: ExpressibleByArgument {}
extension Pooling: ExpressibleByArgument {}
extension BadRowPolicy: ExpressibleByArgument {}
extension TrainingOptions.ClassWeighting: ExpressibleByArgument {}

/// Options for reading a labeled data file.
struct DataColumns: ParsableArguments {
    @Option(help: "Column (CSV header or JSON key) holding the text.") var textColumn = "text"
    @Option(help: "Column holding the label: a name, a delimited list or JSON list (multi-label), or a number (regression).") var labelColumn = "label"
    @Option(help: "Separator of labels in a multi-label text cell.") var labelDelimiter = "|"
    @Option(name: .customLong("on-bad-rows"), help: "Rows with an empty text or an unknown/empty label: skip (counted and reported) or fail.") var onBadRows: BadRowPolicy = .fail

    func format(task: TaskKind) -> DataFormat {
        var f = DataFormat(task: task)
        f.textColumn = textColumn
        f.labelColumn = labelColumn
        f.policy = onBadRows
        f.multiLabelDelimiter = labelDelimiter
        return f
    }
}

func reportSkips(_ data: LabeledDataset) {
    if data.report.totalSkipped > 0 { FileHandle.standardError.write(Data("warning: \(data.report)\n".utf8)) }
}

struct TrainCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "train",
        abstract: "Fine-tune a BERT model on a labeled CSV / JSON Lines file and keep the best checkpoint.",
        discussion: """
        Writes to --output: model.safetensors + config.json (Hugging Face BertForSequenceClassification \
        format), vocab.txt and tokenizer_config.json, pando-training.json (label map, task, settings, \
        per-epoch metrics, multi-label thresholds) and metrics.json. The checkpoint is the epoch with \
        the best validation --early-stopping-metric; with --test its test metrics are reported.
        """)

    @OptionGroup var model: ModelOption
    @Option(help: "Training data (.csv, .tsv, .jsonl).") var train: String
    @Option(help: "Validation data; without it --validation-fraction of --train is held out (stratified, seeded).") var validation: String?
    @Option(help: "Fraction of --train held out for validation when no --validation file is given.") var validationFraction = 0.1
    @Option(help: "Test data, scored with the best validation epoch's weights.") var test: String?
    @OptionGroup var columns: DataColumns
    @Option(help: "classification, multi-label, regression or ordinal (levels in --labels order, or numeric level names by value).") var task: TaskKind = .classification
    @Option(help: "Label names in output order, comma-separated (default: the training labels, sorted).") var labels: String?
    @Option(help: "Folder for the best checkpoint and metrics.") var output: String
    @Option(help: "Passes over the training data.") var epochs = 3
    @Option(help: "Peak AdamW learning rate.") var learningRate: Float = 5e-5
    @Option(help: "Peak learning rate of the classifier (the newly initialised last layer), same warm-up and decay (default: --learning-rate).") var headLearningRate: Float?
    @Option(help: "Sequences per update.") var batchSize = 32
    @Option(help: "Tokens per text, [CLS] and [SEP] included; longer texts are truncated.") var maxLength = 128
    @Option(help: "Fraction of updates for linear warm-up (then linear decay to 0).") var warmupRatio = 0.1
    @Option(help: "AdamW weight decay (never on biases or LayerNorm).") var weightDecay: Float = 0.01
    @Option(help: "Clip the global gradient norm to this.") var maxGradientNorm: Float = 1.0
    @Option(help: "AdamW ε.") var adamEpsilon: Float = 1e-8
    @Option(help: "Sort by length within shuffled chunks of this many batches (0, the default: plain shuffled batches).") var lengthGroupingBatches = 0
    @Option(help: "Seed for head initialisation, split, shuffling, oversampling and dropout.") var seed: UInt64 = 42
    @Option(help: "Loss weights: auto or none. auto is balanced per-class weights n / (k · count) for classification, and per-label positive weights negatives / positives (BCEWithLogitsLoss pos_weight, from the training counts) for multi-label.") var classWeights: TrainingOptions.ClassWeighting = .none
    @Flag(help: "Oversample smaller classes up to the largest each epoch.") var oversample = false
    @Option(help: "Validation metric that picks the best epoch (default: macro_f1, micro_f1 or rmse by task).") var earlyStoppingMetric: String?
    @Option(help: "Stop after this many epochs without improvement (0: never stop early).") var patience = 2
    @Flag(help: "Do not update the embedding tables.") var freezeEmbeddings = false
    @Option(help: "Do not update encoder layers 0..<N.") var freezeLayers = 0
    @Option(help: "Sequence vector for the head: pooler (the model family's own …ForSequenceClassification head), cls or mean.") var pooling: Pooling = .pooler
    @Flag(help: "Train without dropout.") var noDropout = false
    @Flag(help: "Multi-label: tune each label's threshold on validation (else 0.5).") var tuneThresholds = false
    @Option(help: "Regression: integer score range for QWK, as MIN-MAX (default: inferred from integer scores).") var scoreRange: String?
    @Option(help: "Threads for GEMMs and kernels (default: all cores).") var threads: Int?
    @Option(help: "Train with example-level differential privacy (DP-SGD) at this ε; the noise is calibrated to it by an RDP accountant over all the run's steps. Batches become Poisson samples of expected size --batch-size.") var dpEpsilon: Double?
    @Option(help: "DP-SGD with this noise multiplier σ instead of a target ε (ε is reported).") var dpNoiseMultiplier: Double?
    @Option(help: "DP-SGD's δ.") var dpDelta = 1e-5
    @Option(help: "DP-SGD's per-example clipping norm C.") var dpMaxGradNorm: Float = 1.0
    @Flag(help: "Replace e-mail addresses, phone numbers, URLs, street addresses, student IDs and listed names with placeholders before tokenising (pando-client always does unless told not to); prints the counts by kind.") var scrubPii = false
    @Option(help: "With --scrub-pii: more names to replace, one per line.") var piiNames: String?
    @Option(help: "Train LoRA adapters of this rank instead of every weight: the base weights stay frozen, the adapters and the head train. The output folder holds the merged model (config.json, model.safetensors: pando predict/evaluate and transformers load it) and, in its adapter/ subfolder, the adapter in PEFT's format (adapter_config.json, adapter_model.safetensors: peft.PeftModel.from_pretrained(base, DIR/adapter) loads it).") var loraRank: Int?
    @Option(help: "With --lora-rank: LoRA's α; the adapter's output is scaled by α / r (default 2·r).") var loraAlpha: Float?
    @Option(help: "With --lora-rank: dropout on the adapters' input.") var loraDropout: Float = 0.1
    @Option(help: "With --lora-rank: layers that get adapters, comma-separated, from query, key, value, attention-output, intermediate, output.") var loraTargets = "query,value"

    func run() throws {
        if let threads { Parallel.workers = max(1, threads) }
        let format = columns.format(task: task)
        var labelMap: LabelMap?
        if let labels {
            labelMap = try LabelMap(names: labels.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) })
        }
        var trainData = try format.load(URL(fileURLWithPath: train), labels: labelMap)
        reportSkips(trainData)
        let map = labelMap ?? trainData.labels
        var validationData: LabeledDataset
        if let validation {
            validationData = try format.load(URL(fileURLWithPath: validation), labels: map)
            reportSkips(validationData)
        } else {
            guard validationFraction > 0, validationFraction < 1 else { throw ValidationError("--validation-fraction must be in (0, 1)") }
            var rng = SplitMix64(seed: seed)
            (trainData, validationData) = trainData.stratifiedSplit(validationFraction: validationFraction, using: &rng)
            guard validationData.count > 0 else { throw ValidationError("--validation-fraction \(validationFraction) leaves no validation examples") }
        }
        let testData = try test.map { try format.load(URL(fileURLWithPath: $0), labels: map) }
        testData.map(reportSkips)

        var testSplit = testData
        if scrubPii {
            var c = PIIScrubber.Configuration()
            if let piiNames { try c.addNames(fromFile: piiNames) }
            let scrubber = try PIIScrubber(configuration: c)
            var parts: [String] = []
            for (name, data) in [("training", trainData), ("validation", validationData)] {
                let (clean, counts) = data.scrubbed(with: scrubber)
                if name == "training" { trainData = clean } else { validationData = clean }
                parts.append("\(name) \(PIIScrubber.describe(counts))")
            }
            if let t = testSplit {
                let (clean, counts) = t.scrubbed(with: scrubber)
                testSplit = clean
                parts.append("test \(PIIScrubber.describe(counts))")
            }
            FileHandle.standardError.write(Data("PII replaced before tokenisation: \(parts.joined(separator: "; "))\n".utf8))
        } else if piiNames != nil {
            throw ValidationError("--pii-names needs --scrub-pii")
        }

        var options = TrainingOptions()
        options.epochs = epochs
        options.learningRate = learningRate
        options.headLearningRate = headLearningRate
        options.batchSize = batchSize
        options.maxLength = maxLength
        options.warmupRatio = warmupRatio
        options.weightDecay = weightDecay
        options.maxGradientNorm = maxGradientNorm
        options.adamEpsilon = adamEpsilon
        options.lengthGroupingBatches = lengthGroupingBatches
        options.seed = seed
        options.classWeights = classWeights
        options.oversample = oversample
        options.earlyStoppingMetric = earlyStoppingMetric
        options.patience = patience > 0 ? patience : nil
        options.freezeEmbeddings = freezeEmbeddings
        options.freezeLayers = freezeLayers
        options.pooling = pooling
        options.dropout = !noDropout
        options.tuneThresholds = tuneThresholds
        if let loraRank {
            options.lora = LoRAConfig(rank: loraRank, alpha: loraAlpha, dropout: loraDropout, targets: try LoRATarget.parseList(loraTargets))
        } else if loraAlpha != nil || loraTargets != "query,value" || loraDropout != 0.1 {
            throw ValidationError("--lora-alpha, --lora-dropout and --lora-targets need --lora-rank")
        }
        if dpEpsilon != nil || dpNoiseMultiplier != nil {
            options.privacy = PrivacyOptions(targetEpsilon: dpEpsilon, noiseMultiplier: dpNoiseMultiplier, delta: dpDelta, maxGradientNorm: dpMaxGradNorm)
        }
        if let scoreRange {
            let parts = scoreRange.split(separator: "-").compactMap { Int($0) }
            guard parts.count == 2 else { throw ValidationError("--score-range must look like 1-6") }
            options.scoreRange = parts
        }
        let trainer = try Trainer(baseModel: try model.resolve(), task: task, labels: map, options: options, progress: .standardError())
        let record = try trainer.run(train: trainData, validation: validationData, test: testSplit, output: URL(fileURLWithPath: output))
        if let best = record.bestEpoch, let metrics = record.epochs.first(where: { $0.epoch == best })?.validation {
            print("best epoch \(best) of \(record.epochs.count); validation:")
            print(metrics.table)
        }
        if let t = record.test {
            print("test:")
            print(t.table)
        }
        if let p = record.privacy {
            print(String(format: "differential privacy: ε = %.3g at δ = %.3g (DP-SGD, %d steps at sampling rate %.4g, noise multiplier %.4g, clip %.3g; RDP accountant)",
                         p.epsilon, p.delta, p.steps, p.samplingRate, p.noiseMultiplier, p.maxGradientNorm))
        }
        print("checkpoint: \(output)")
    }
}
