import Foundation
import XCTest
@testable import PandoLedger

/// Builders shared by the ledger tests: tiny safetensors files, a fresh state
/// folder with a federation, and a helper that runs one full round.
enum Fixture {
    /// Folders made by `folder()`, deleted by `LedgerTestCase.tearDown`.
    nonisolated(unsafe) static var made = [URL]()

    /// A fresh temporary folder.
    static func folder(_ name: String = #function) -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("pando-ledger-\(name.filter(\.isLetter))-\(UUID().uuidString.prefix(8))")
        try? FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        made.append(url)
        return url
    }

    /// The bytes of a safetensors file holding F32 tensors (in name order).
    static func safetensors(_ tensors: [(String, [Float])]) -> Data {
        var header = "{"
        var offset = 0
        for (i, (name, values)) in tensors.enumerated() {
            if i > 0 { header += "," }
            header += "\"\(name)\":{\"dtype\":\"F32\",\"shape\":[\(values.count)],\"data_offsets\":[\(offset),\(offset + 4 * values.count)]}"
            offset += 4 * values.count
        }
        header += "}"
        while header.utf8.count % 8 != 0 { header += " " }
        var data = Data()
        var length = UInt64(header.utf8.count).littleEndian
        withUnsafeBytes(of: &length) { data.append(contentsOf: $0) }
        data.append(Data(header.utf8))
        for (_, values) in tensors { values.withUnsafeBytes { data.append(contentsOf: $0) } }
        return data
    }

    /// A model folder (config.json, model.safetensors, vocab.txt) for `values`.
    static func writeModel(_ values: [Float], to folder: URL) throws {
        try safetensors([("bert.weight", values), ("classifier.bias", [values.first ?? 0, 1])]).write(to: folder.appendingPathComponent("model.safetensors"))
        try Data(#"{"model_type":"bert","hidden_size":4}"#.utf8).write(to: folder.appendingPathComponent("config.json"))
        try Data("[PAD]\n[UNK]\n[CLS]\n[SEP]\nhello\n".utf8).write(to: folder.appendingPathComponent("vocab.txt"))
    }

    /// A ledger with a federation created from a small base model.
    static func ledger(at folder: URL, key: CoordinatorSigningKey? = nil) throws -> CoordinatorLedger {
        let ledger = try CoordinatorLedger(folder: folder, key: key)
        if try ledger.federation() == nil {
            let base = try ledger.store.stage { try writeModel([0, 0, 0, 0], to: $0) }
            try ledger.createFederation(id: "district-7", name: "District 7", task: "sentiment", base: base)
        }
        return ledger
    }

    /// Runs one round with `schools`, each sending an update; returns the new version. With
    /// `anchors`, each school's log records the audit head as a coordinator sends it: with the
    /// train assignment (after the selections) and with the evaluation (after the commit).
    @discardableResult
    static func round(_ ledger: CoordinatorLedger, schools: [String] = ["north-high", "south-middle"], value: Float,
                      schoolLogs: [String: SchoolLog] = [:], federation: String? = nil, anchors: Bool = false) throws -> VersionRecord {
        let round = try ledger.startRound(strategy: "fedavg", parameters: ["serverLearningRate": 1.0])
        func anchor(_ task: String) throws {
            guard anchors else { return }
            let head = try ledger.auditHead()
            for school in schools {
                var event = SchoolLogEvent(.anchorSeen, school: school, round: round.number, task: task, federation: federation)
                event.auditSeq = head.count
                event.auditHash = head.lastHash
                try schoolLogs[school]?.append(event)
            }
        }
        var examples = [String: Int]()
        for school in schools { try ledger.record(AuditEntry(event: .schoolSelected, round: round.number, school: school)) }
        try anchor("train")
        for (i, school) in schools.enumerated() {
            let update = safetensors([("delta", [value, Float(i)])])
            let hash = Digest.sha256(update)
            examples[school] = 100 + i
            try ledger.record(AuditEntry(event: .updateReceived, round: round.number, school: school, baseVersion: round.baseVersion,
                                         examples: 100 + i, updateSHA256: hash, updateL2Norm: Double(value), wireBytes: update.count))
            try schoolLogs[school]?.append(SchoolLogEntry(school: school, round: round.number, baseVersion: round.baseVersion,
                                                          updateSHA256: hash, wireBytes: update.count, examples: 100 + i,
                                                          federation: federation))
        }
        let staged = try ledger.store.stage { try writeModel([value, value * 2, 0, 1], to: $0) }
        let version = try ledger.commitRound(round.number, version: staged, metrics: ["accuracy": 0.5], examplesBySchool: examples,
                                             privacy: ["epsilon": 2.5, "delta": 1e-5])
        try anchor("evaluate")
        return version
    }

    /// Every file under `folder`, recursively.
    static func allFiles(_ folder: URL) -> [URL] {
        guard let e = FileManager.default.enumerator(at: folder, includingPropertiesForKeys: nil) else { return [] }
        return e.compactMap { $0 as? URL }.filter { (try? $0.resourceValues(forKeys: [.isRegularFileKey]).isRegularFile) == true }
    }

    /// Lines of a file (without newlines).
    static func lines(_ url: URL) throws -> [Data] {
        AuditFormat.lines(of: try Data(contentsOf: url)).lines.map(\.bytes)
    }

    static func writeLines(_ lines: [Data], to url: URL) throws {
        var data = Data()
        for l in lines { data.append(l); data.append(0x0A) }
        try data.write(to: url)
    }
}

/// Deletes the test's temporary folders after it (kept when it failed, or with PANDO_LEDGER_KEEP set).
class LedgerTestCase: XCTestCase {
    override func tearDown() {
        if (testRun?.totalFailureCount ?? 0) == 0, ProcessInfo.processInfo.environment["PANDO_LEDGER_KEEP"] == nil {
            for url in Fixture.made { try? FileManager.default.removeItem(at: url) }
        }
        Fixture.made.removeAll()
        super.tearDown()
    }
}
