import Foundation
import PandoEngine

/// A version written to a staging folder, hashed and fsynced, not yet visible.
public struct StagedVersion: Sendable {
    /// SHA-256 of `model.safetensors`: the version's id.
    public let id: String
    /// Size of `model.safetensors` in bytes.
    public let weightBytes: Int
    /// SHA-256 of every file in the folder, by file name.
    public let files: [String: String]
    let folder: URL
}

/// Per-tensor difference between two versions.
public struct TensorDifference: Sendable, Equatable {
    public let name: String
    /// Shape in the first and second version (nil when absent there).
    public let shapeA: [Int]?
    public let shapeB: [Int]?
    /// L2 norm of (b − a) and max |b − a|; nil unless both have the same shape.
    public let l2: Double?
    public let maxAbs: Double?
}

/// Global model versions on disk, content-addressed.
///
/// Layout: `<folder>/<sha256 of model.safetensors>/` holding a complete
/// Hugging Face folder (config.json, model.safetensors, tokenizer files).
/// A version is built in `.staging-*`, every file fsynced, then the folder is
/// renamed into place and the parent directory fsynced, so a version folder
/// under its id is always complete; a crash leaves at most a staging folder,
/// which `removeLeftovers()` deletes. Weights are removed only through
/// `removeWeights`, by retention, after the database records the pruning.
public struct CheckpointStore: Sendable {
    public static let weightsFile = "model.safetensors"
    public let folder: URL

    /// Opens the store at `folder`, creating it (mode 0700) unless `readOnly` (a
    /// verifier must not change the folder it checks).
    public init(folder: URL, readOnly: Bool = false) throws {
        self.folder = folder
        if !readOnly { try PrivateFiles.folder(folder) }
    }

    /// The folder of version `id` (whether or not it still exists).
    public func folder(of id: String) -> URL { folder.appendingPathComponent(id, isDirectory: true) }

    /// The weights file of version `id`.
    public func weights(of id: String) -> URL { folder(of: id).appendingPathComponent(Self.weightsFile) }

    /// True when the weights of `id` are on disk.
    public func hasWeights(_ id: String) -> Bool { FileManager.default.fileExists(atPath: weights(of: id).path) }

    /// Re-hashes version `id`: its weights against the id, its other files against `files`
    /// (the hashes recorded with it). Throws naming the first file that is missing or differs.
    public func checkIntact(_ id: String, files: [String: String] = [:]) throws {
        let fm = FileManager.default
        let weights = self.weights(of: id)
        guard fm.fileExists(atPath: weights.path) else { throw LedgerError("\(weights.path): missing") }
        let actual = try Digest.sha256(fileAt: weights)
        guard actual == id else {
            throw LedgerError("\(weights.path): SHA-256 is \(actual.prefix(12))…, not the version id \(id.prefix(12))…: the file is corrupt or was altered")
        }
        for (name, hash) in files.sorted(by: { $0.key < $1.key }) where name != Self.weightsFile {
            let url = folder(of: id).appendingPathComponent(name)
            guard fm.fileExists(atPath: url.path) else { throw LedgerError("\(url.path): missing (recorded with version \(id.prefix(12))…)") }
            guard try Digest.sha256(fileAt: url) == hash else {
                throw LedgerError("\(url.path): differs from the hash recorded with version \(id.prefix(12))…: corrupt or altered")
            }
        }
    }

    /// Ids of the version folders present (names that are SHA-256 hex).
    public func storedIDs() -> [String] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: folder.path)) ?? []
        return names.filter(Digest.isSHA256).sorted()
    }

    /// Builds a version: `write` fills an empty folder (it must create
    /// `model.safetensors`, e.g. `model.save(to:copying:)`). On any error the
    /// staging folder is deleted and nothing becomes visible.
    public func stage(_ write: (URL) throws -> Void) throws -> StagedVersion {
        let staging = folder.appendingPathComponent(".staging-\(UUID().uuidString)", isDirectory: true)
        try PrivateFiles.folder(staging)
        do {
            try write(staging)
            return try seal(staging)
        } catch {
            try? FileManager.default.removeItem(at: staging)
            throw error
        }
    }

    /// Stages a copy of an existing Hugging Face folder (the base model).
    /// Copies config.json, model.safetensors and tokenizer files.
    public func stage(copyingFolder source: URL) throws -> StagedVersion {
        try stage { staging in
            for name in Self.huggingFaceFiles where FileManager.default.fileExists(atPath: source.appendingPathComponent(name).path) {
                try FileManager.default.copyItem(at: source.appendingPathComponent(name), to: staging.appendingPathComponent(name))
            }
            guard FileManager.default.fileExists(atPath: staging.appendingPathComponent(Self.weightsFile).path) else {
                throw LedgerError("\(source.path): no model.safetensors")
            }
        }
    }

    private func seal(_ staging: URL) throws -> StagedVersion {
        let weights = staging.appendingPathComponent(Self.weightsFile)
        guard FileManager.default.fileExists(atPath: weights.path) else {
            throw LedgerError("staged version has no \(Self.weightsFile)")
        }
        var files = [String: String]()
        for name in try FileManager.default.contentsOfDirectory(atPath: staging.path) {
            let url = staging.appendingPathComponent(name)
            try PrivateFiles.restrict(url)
            try Self.fsyncFile(url)
            files[name] = try Digest.sha256(fileAt: url)
        }
        AtomicFile.syncDirectory(staging)
        let size = (try FileManager.default.attributesOfItem(atPath: weights.path)[.size] as? NSNumber)?.intValue ?? 0
        return StagedVersion(id: files[Self.weightsFile]!, weightBytes: size, files: files, folder: staging)
    }

    /// Makes a staged version visible under its id (rename + directory fsync).
    /// If a version with the same bytes already exists the staging copy is dropped.
    public func install(_ staged: StagedVersion) throws {
        let target = folder(of: staged.id)
        if FileManager.default.fileExists(atPath: target.path) {
            if hasWeights(staged.id) {
                try? FileManager.default.removeItem(at: staged.folder)
                return
            }
            // A folder left without weights (pruned): move it aside first.
            try removeFolder(target)
        }
        guard rename(staged.folder.path, target.path) == 0 else {
            throw LedgerError("cannot install version \(staged.id): \(String(cString: strerror(errno)))")
        }
        AtomicFile.syncDirectory(folder)
    }

    /// Deletes a staged version that will not be committed.
    public func discard(_ staged: StagedVersion) {
        try? FileManager.default.removeItem(at: staged.folder)
    }

    /// Deletes the weights folder of `id` (rename aside, then delete, so a
    /// crash never leaves a half-deleted folder under the id).
    public func removeWeights(_ id: String) throws {
        let target = folder(of: id)
        guard FileManager.default.fileExists(atPath: target.path) else { return }
        try removeFolder(target)
    }

    private func removeFolder(_ target: URL) throws {
        let trash = folder.appendingPathComponent(".trash-\(UUID().uuidString)", isDirectory: true)
        guard rename(target.path, trash.path) == 0 else {
            throw LedgerError("cannot remove \(target.path): \(String(cString: strerror(errno)))")
        }
        AtomicFile.syncDirectory(folder)
        try? FileManager.default.removeItem(at: trash)
    }

    /// Deletes staging and trash folders left by a crash. Returns their names.
    @discardableResult
    public func removeLeftovers() -> [String] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: folder.path)) ?? []
        let leftovers = names.filter { $0.hasPrefix(".staging-") || $0.hasPrefix(".trash-") }
        for name in leftovers { try? FileManager.default.removeItem(at: folder.appendingPathComponent(name)) }
        return leftovers
    }

    /// The files of a Hugging Face model folder a version carries, and Pando's record of how
    /// to use it (`pando-training.json`: task, labels, pooling, max length). A version may hold
    /// more, such as a strategy's server state, which stays with the coordinator.
    public static let huggingFaceFiles: Set<String> = [
        "config.json", weightsFile, "vocab.txt", "vocab.json", "merges.txt", "tokenizer.json", "tokenizer_config.json",
        "special_tokens_map.json", "pando-training.json",
    ]

    /// Copies version `id` to `destination` as a Hugging Face folder
    /// (config.json, model.safetensors, tokenizer files). The destination must
    /// not exist or be empty; it appears complete or not at all.
    public func export(_ id: String, to destination: URL) throws {
        guard hasWeights(id) else { throw LedgerError("version \(id) has no weights on disk (pruned?)") }
        let fm = FileManager.default
        if fm.fileExists(atPath: destination.path) {
            guard (try fm.contentsOfDirectory(atPath: destination.path)).isEmpty else {
                throw LedgerError("\(destination.path) exists and is not empty")
            }
            try fm.removeItem(at: destination)
        }
        let parent = destination.deletingLastPathComponent()
        try fm.createDirectory(at: parent, withIntermediateDirectories: true)
        let temp = parent.appendingPathComponent(".\(destination.lastPathComponent).tmp-\(UUID().uuidString)")
        try fm.createDirectory(at: temp, withIntermediateDirectories: false)
        do {
            for name in try fm.contentsOfDirectory(atPath: folder(of: id).path) where Self.huggingFaceFiles.contains(name) {
                try fm.copyItem(at: folder(of: id).appendingPathComponent(name), to: temp.appendingPathComponent(name))
                try Self.fsyncFile(temp.appendingPathComponent(name))
            }
            guard try Digest.sha256(fileAt: temp.appendingPathComponent(Self.weightsFile)) == id else {
                throw LedgerError("version \(id): weights on disk do not match their id (corrupt checkpoint)")
            }
            AtomicFile.syncDirectory(temp)
            guard rename(temp.path, destination.path) == 0 else {
                throw LedgerError("cannot create \(destination.path): \(String(cString: strerror(errno)))")
            }
            AtomicFile.syncDirectory(parent)
        } catch {
            try? fm.removeItem(at: temp)
            throw error
        }
    }

    /// Per-tensor L2 norm and max abs of (b − a) for two safetensors files.
    public static func diff(_ a: URL, _ b: URL) throws -> [TensorDifference] {
        let fa = try SafeTensors.File(url: a)
        let fb = try SafeTensors.File(url: b)
        let names = Set(fa.entries.keys).union(fb.entries.keys).sorted()
        return try names.map { name in
            let ea = fa.entries[name], eb = fb.entries[name]
            guard let ea, let eb, ea.shape == eb.shape else {
                return TensorDifference(name: name, shapeA: ea?.shape, shapeB: eb?.shape, l2: nil, maxAbs: nil)
            }
            let xa = try fa.floats(name), xb = try fb.floats(name)
            var sum = 0.0, maxAbs = 0.0
            for i in 0..<xa.count {
                let d = Double(xb[i]) - Double(xa[i])
                sum += d * d
                maxAbs = max(maxAbs, abs(d))
            }
            return TensorDifference(name: name, shapeA: ea.shape, shapeB: eb.shape, l2: sum.squareRoot(), maxAbs: maxAbs)
        }
    }

    static func fsyncFile(_ url: URL) throws {
        let fd = open(url.path, O_RDONLY)
        guard fd >= 0 else { throw LedgerError("\(url.path): cannot open to sync") }
        defer { close(fd) }
        guard fsync(fd) == 0 else { throw LedgerError("\(url.path): fsync failed: \(String(cString: strerror(errno)))") }
    }
}
