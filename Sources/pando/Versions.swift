import ArgumentParser
import Foundation
import PandoData
import PandoEngine
import PandoLedger
import PandoServices

/// `pando versions …`: the coordinator's content-addressed global versions.
struct VersionsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "versions",
        abstract: "List, inspect, compare, export, roll back, tag and prune global model versions in a coordinator's state folder.",
        subcommands: [List.self, Show.self, Diff.self, Export.self, Rollback.self, Tag.self, Prune.self, Create.self])

    struct StoreOption: ParsableArguments {
        @Option(help: "The coordinator's state folder (state.sqlite, versions/, audit.jsonl).") var store: String
        var url: URL { URL(fileURLWithPath: store) }

        func readOnly() throws -> CoordinatorLedger { try CoordinatorLedger(folder: url, readOnly: true) }
    }

    struct WriteOptions: ParsableArguments {
        @OptionGroup var store: StoreOption
        @Option(help: "Coordinator signing key for the audit record (default: <store>/keys/coordinator.key).") var key: String?

        /// Opens for writing (fails while a running coordinator holds the folder).
        func open() throws -> CoordinatorLedger {
            guard FileManager.default.fileExists(atPath: store.url.appendingPathComponent("state.sqlite").path) else {
                throw ValidationError("\(store.store): no coordinator state (state.sqlite missing)")
            }
            let keyURL = key.map { URL(fileURLWithPath: $0) } ?? CoordinatorLedger.defaultKeyURL(in: store.url)
            return try CoordinatorLedger(folder: store.url, key: try CoordinatorSigningKey.load(from: keyURL))
        }
    }

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "All versions, oldest first, with lineage, round, strategy and status.")
        @OptionGroup var store: StoreOption
        @Flag(help: "Print JSON.") var json = false

        func run() throws {
            let ledger = try store.readOnly()
            let head = try ledger.federation()?.headVersion
            let versions = try ledger.versions()
            if json {
                print(CanonicalJSON.array(versions.map { versionJSON($0, head: head) }).terminalSafeDescription)
                return
            }
            var rows = [["#", "version", "parent", "round", "strategy", "created", "tags", "status"]]
            for v in versions {
                rows.append(["\(v.sequence)", short(v.id), v.parent.map(short) ?? "-", v.round.map(String.init) ?? "-",
                             v.strategy ?? "base", v.createdAt, v.tags.joined(separator: ","),
                             [v.id == head ? "HEAD" : nil, v.prunedAt != nil ? "pruned" : nil].compactMap { $0 }.joined(separator: " ")])
            }
            print(renderTable(rows), terminator: "")
        }
    }

    struct Show: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "One version: id, lineage to the base model, round, strategy, metrics, files.")
        @OptionGroup var store: StoreOption
        @Argument(help: "Version id, unique prefix, tag, or 'head'.") var version = "head"
        @Flag(help: "Print JSON.") var json = false

        func run() throws {
            let ledger = try store.readOnly()
            let v = try ledger.version(version)
            let head = try ledger.federation()?.headVersion
            let history = try ledger.history(ofVersion: v.id)
            if json {
                var o = versionJSON(v, head: head).objectValue ?? [:]
                if let history { o["history"] = historyJSON(history) }
                print(CanonicalJSON.object(o).terminalSafeDescription)
                return
            }
            var lineage = [String]()
            var cursor = v.parent
            while let p = cursor, lineage.count < 10_000 {
                lineage.append(short(p))
                cursor = try? ledger.version(p).parent
            }
            // Strategy, tags and metric names come from the state folder: printed terminal-safe.
            func say(_ line: String) { print(TerminalText.safe(line)) }
            say("version   \(v.id)\(v.id == head ? "  (HEAD)" : "")")
            say("parent    \(v.parent ?? "none (base model)")")
            say("lineage   \(([short(v.id)] + lineage).joined(separator: " ← "))")
            say("round     \(v.round.map(String.init) ?? "-")")
            say("strategy  \(v.strategy ?? "base")\(v.strategyParameters.isEmpty ? "" : " " + CanonicalJSON.object(v.strategyParameters).description)")
            say("created   \(v.createdAt)")
            if !v.tags.isEmpty { say("tags      \(v.tags.joined(separator: ", "))") }
            say("status    \(v.prunedAt.map { "weights pruned at \($0)" } ?? (ledger.store.hasWeights(v.id) ? "weights on disk" : "WEIGHTS MISSING"))")
            say("size      \(v.weightBytes) bytes")
            for (name, value) in v.metrics.sorted(by: { $0.key < $1.key }) { say("metric    \(name) = \(value)") }
            for (name, hash) in v.files.sorted(by: { $0.key < $1.key }) { say("file      \(name)  sha256 \(hash)") }
            if let h = history { for line in describe(h) { say(line) } }
        }
    }

    struct Diff: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Per-tensor L2 norm and max |Δ| of the difference between two versions.")
        @OptionGroup var store: StoreOption
        @Argument(help: "First version (id, prefix, tag, head).") var a: String
        @Argument(help: "Second version.") var b: String
        @Flag(help: "Print JSON.") var json = false
        @Flag(help: "Only tensors that changed.") var changed = false

        func run() throws {
            let ledger = try store.readOnly()
            let va = try ledger.version(a), vb = try ledger.version(b)
            for v in [va, vb] where !ledger.store.hasWeights(v.id) { throw ValidationError("version \(short(v.id)) has no weights on disk (pruned)") }
            var diffs = try CheckpointStore.diff(ledger.store.weights(of: va.id), ledger.store.weights(of: vb.id))
            if changed { diffs = diffs.filter { $0.l2 != 0 } }
            let total = diffs.compactMap(\.l2).reduce(0) { $0 + $1 * $1 }.squareRoot()
            if json {
                let items: [CanonicalJSON] = diffs.map { d in
                    var o: [String: CanonicalJSON] = ["name": .string(d.name)]
                    if let s = d.shapeA { o["shapeA"] = .array(s.map { .int($0) }) }
                    if let s = d.shapeB { o["shapeB"] = .array(s.map { .int($0) }) }
                    if let l2 = d.l2 { o["l2"] = .double(l2) }
                    if let m = d.maxAbs { o["maxAbs"] = .double(m) }
                    return .object(o)
                }
                print(CanonicalJSON.object(["a": .string(va.id), "b": .string(vb.id), "l2": .double(total), "tensors": .array(items)]).terminalSafeDescription)
                return
            }
            var rows = [["tensor", "shape", "L2(Δ)", "max|Δ|"]]
            for d in diffs {
                let shape = d.shapeA == d.shapeB ? (d.shapeA ?? []).map(String.init).joined(separator: "×")
                    : "\(d.shapeA.map { $0.map(String.init).joined(separator: "×") } ?? "absent") → \(d.shapeB.map { $0.map(String.init).joined(separator: "×") } ?? "absent")"
                rows.append([d.name, shape, d.l2.map { String(format: "%.6g", $0) } ?? "-", d.maxAbs.map { String(format: "%.6g", $0) } ?? "-"])
            }
            print("\(short(va.id)) → \(short(vb.id))")
            print(renderTable(rows), terminator: "")
            print("total L2(Δ) \(String(format: "%.6g", total)) over \(diffs.count) tensors")
        }
    }

    struct Export: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Write a version as a Hugging Face folder (config.json, model.safetensors, tokenizer files).")
        @OptionGroup var store: StoreOption
        @Argument(help: "Version (id, prefix, tag, head).") var version = "head"
        @Option(help: "Destination folder (must not exist, or be empty).") var to: String

        func run() throws {
            let ledger = try store.readOnly()
            let v = try ledger.version(version)
            try ledger.store.export(v.id, to: URL(fileURLWithPath: to))
            print("exported \(v.id) to \(to)")
        }
    }

    struct Rollback: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Make an earlier version the head. History is kept; the move is recorded and audited. Stop the coordinator first.")
        @OptionGroup var options: WriteOptions
        @Argument(help: "Version to return to (id, prefix, tag).") var version: String
        @Option(help: "Why (goes into the audit record).") var reason: String?

        func run() throws {
            let ledger = try options.open()
            let old = try ledger.head()
            let v = try ledger.rollback(to: version, reason: reason)
            print("head: \(old.map { short($0.id) } ?? "-") → \(short(v.id))")
        }
    }

    struct Tag: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Name a version; tagged versions are never pruned.")
        @OptionGroup var options: WriteOptions
        @Argument(help: "Version (id, prefix, head).") var version: String
        @Argument(help: "Tag name.") var name: String

        func run() throws {
            let ledger = try options.open()
            try ledger.tag(version, as: name)
            print("tagged \(short(try ledger.version(name).id)) as \(name)")
        }
    }

    struct Prune: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Retention: delete the weights of all but the last K versions, tagged ones and the head. Records and lineage stay.")
        @OptionGroup var options: WriteOptions
        @Option(help: "Versions to keep (newest first).") var keep: Int

        func run() throws {
            let ledger = try options.open()
            let pruned = try ledger.prune(keepLast: keep)
            print(pruned.isEmpty ? "nothing to prune" : "pruned \(pruned.count): \(pruned.map(short).joined(separator: " "))")
        }
    }

    struct Create: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Start a federation in a new state folder from a pretrained encoder folder, as pando-coordinator would.",
            discussion: """
            The task head is drawn with --seed, which must equal federation.seed in the coordinator.yaml that \
            runs this state folder (default 42 in both): schools rebuild the same base version from their own \
            copy of the model to check where each version comes from.
            """)
        @OptionGroup var store: StoreOption
        @Option(help: "Pretrained Hugging Face encoder folder (config.json, model.safetensors, the tokenizer files).") var model: String
        @Option(help: "Federation id (coordinator.yaml's federation.id).") var federation: String
        @Option(help: "classification, multi-label, regression or ordinal.") var task: TaskKind
        @Option(parsing: .upToNextOption, help: "Class or level names in output order (none for regression).") var labels: [String] = []
        @Option(help: "Seed of the newly drawn head tensors (coordinator.yaml's federation.seed).") var seed: UInt64 = 42
        @Option(help: "Tokens per text the versions are used with (coordinator.yaml's local.max_length).") var maxLength = 128
        @Option(help: "How the head reads the encoder (coordinator.yaml's federation.pooling): pooler, cls or mean.") var pooling: Pooling = .pooler

        func run() throws {
            let id = try FederationStart.create(state: store.url, federationID: federation, baseModel: URL(fileURLWithPath: model),
                                                task: task, labels: labels, seed: seed, maxLength: maxLength, pooling: pooling)
            print("federation \(federation) (\(task.rawValue)\(labels.isEmpty ? "" : ": " + labels.joined(separator: ", "))): base version \(id)")
            print("audit public key: \(CoordinatorLedger.defaultKeyURL(in: store.url).path).pub")
            print("run it with a coordinator.yaml naming federation.id \(federation), this task and labels, base_model \(model), seed \(seed), state \(store.store)")
        }
    }
}

func short(_ id: String) -> String { String(id.prefix(12)) }

func versionJSON(_ v: VersionRecord, head: String?) -> CanonicalJSON {
    var o: [String: CanonicalJSON] = [
        "id": .string(v.id), "sequence": .int(v.sequence), "createdAt": .string(v.createdAt),
        "strategyParameters": .object(v.strategyParameters), "metrics": .object(v.metrics.mapValues { .double($0) }),
        "files": .object(v.files.mapValues { .string($0) }), "weightBytes": .int(v.weightBytes),
        "tags": .array(v.tags.map { .string($0) }), "head": .bool(v.id == head),
    ]
    if let p = v.parent { o["parent"] = .string(p) }
    if let r = v.round { o["round"] = .int(r) }
    if let s = v.strategy { o["strategy"] = .string(s) }
    if let p = v.prunedAt { o["prunedAt"] = .string(p) }
    return .object(o)
}

/// Left-aligned columns separated by two spaces; the first row is the header.
/// Cells are made terminal-safe: audit logs are read before they are verified.
func renderTable(_ rows: [[String]]) -> String {
    let rows = rows.map { $0.map(TerminalText.safe) }
    guard let header = rows.first else { return "" }
    var widths = header.map(\.count)
    for row in rows { for (i, cell) in row.enumerated() where i < widths.count { widths[i] = max(widths[i], cell.count) } }
    var out = ""
    for row in rows {
        let cells = row.enumerated().map { i, cell in i == row.count - 1 ? cell : cell.padding(toLength: widths[i], withPad: " ", startingAt: 0) }
        out += cells.joined(separator: "  ").trimmingCharacters(in: .whitespaces) + "\n"
    }
    return out
}

/// The stored figures of the round that made a version, as `pando versions show` prints them.
func describe(_ h: RoundHistory) -> [String] {
    func f(_ v: Double?) -> String { v.map { String(format: "%.4f", $0) } ?? "-" }
    func metrics(_ m: [String: Double]) -> String { m.sorted { $0.key < $1.key }.map { "\($0.key) \(f($0.value))" }.joined(separator: ", ") }
    var lines = [
        "round \(h.round) \(h.outcome.rawValue): \(h.accepted) of \(h.selected) updates accepted, \(h.examples) examples, train loss \(f(h.trainLoss))",
        "  bytes     \(h.bytesUp) up, \(h.bytesDown) down",
        "  seconds   \(String(format: "%.1f", h.seconds)) (" + CoordinatorMonitor.Stage.allCases.compactMap { stage in
            h.stageSeconds[stage.rawValue].map { "\(stage.rawValue) \(String(format: "%.1f", $0))" }
        }.joined(separator: ", ") + ")",
    ]
    if !h.evaluation.isEmpty { lines.append("  federated evaluation (\(h.evaluationExamples) examples): \(metrics(h.evaluation))") }
    var rows = [["school", "selected", "in aggregate", "examples", "norm", "train metrics", "eval examples", "eval metrics", "left out"]]
    for s in h.schools {
        rows.append([s.school, s.selected ? "yes" : "no", s.accepted ? "yes" : "no", s.trainingExamples.map(String.init) ?? "-",
                     f(s.updateNorm), metrics(s.trainingMetrics), s.evaluationExamples.map(String.init) ?? "-",
                     metrics(s.evaluationMetrics), s.leftOut ?? "-"])
    }
    lines += renderTable(rows).split(separator: "\n").map { "  " + $0 }
    return lines
}

/// A round's stored figures as JSON (numbers and identifiers).
func historyJSON(_ h: RoundHistory) -> CanonicalJSON {
    func numbers(_ m: [String: Double]) -> CanonicalJSON { .object(m.mapValues { .double($0) }) }
    var o: [String: CanonicalJSON] = [
        "round": .int(h.round), "outcome": .string(h.outcome.rawValue), "baseVersion": .string(h.baseVersion),
        "selected": .int(h.selected), "accepted": .int(h.accepted), "examples": .int(h.examples), "bytesUp": .int(h.bytesUp),
        "bytesDown": .int(h.bytesDown), "seconds": .double(h.seconds), "stageSeconds": numbers(h.stageSeconds),
        "evaluation": numbers(h.evaluation), "evaluationExamples": .int(h.evaluationExamples),
        "schools": .array(h.schools.map { s in
            var o: [String: CanonicalJSON] = ["school": .string(s.school), "selected": .bool(s.selected), "accepted": .bool(s.accepted),
                                              "trainingMetrics": numbers(s.trainingMetrics), "evaluationMetrics": numbers(s.evaluationMetrics)]
            if let n = s.trainingExamples { o["trainingExamples"] = .int(n) }
            if let n = s.updateNorm { o["updateNorm"] = .double(n) }
            if let n = s.evaluationExamples { o["evaluationExamples"] = .int(n) }
            if let l = s.leftOut { o["leftOut"] = .string(l) }
            return .object(o)
        }),
    ]
    if let v = h.version { o["version"] = .string(v) }
    if let l = h.trainLoss { o["trainLoss"] = .double(l) }
    return .object(o)
}
