import Foundation
import PandoLedger
import PandoWire

/// The global versions a school has accepted, and the rule for the next one (issue 17,
/// item 14): a school trains on or evaluates only a version whose lineage it can follow.
///
/// A coordinator that could name any model could feed a school weights built for
/// reconstruction attacks and use its evaluation as an oracle. So a version is accepted only
/// when the chain the assignment states (the version, its parent, … nearest first) reaches
///
/// - a version this school accepted before, with the same parent and round as then
///   (a rollback to a version it has seen is accepted; the same id with another claimed
///   parent is not),
/// - the version the school is configured to trust (`federation.trust_version`), or
/// - the federation's base model, whose id the school computes itself: its own copy of the
///   base model folder with the task head drawn from the chain's `initSeed` (the seed only
///   picks the random initialisation of the tensors the pretrained folder lacks).
///
/// Every version newly accepted is written to the school's log (`versionAccepted`, fsynced)
/// before it is used, and the lineage is read back from there at start, so it survives
/// restarts and crashes. Only entries of this school's federation count.
struct ModelLineage {
    struct Known: Equatable {
        var parent: String?
        var round: Int?
    }

    /// Why a school declines, as the token the coordinator records.
    enum Code {
        static let missing: WireToken = "lineage-missing"
        static let broken: WireToken = "lineage-broken"
        static let notBase: WireToken = "lineage-not-base"
        static let unknownParent: WireToken = "lineage-unknown-parent"
        static let parentMismatch: WireToken = "lineage-parent-mismatch"
    }

    enum Verdict: Equatable {
        /// Seen before, same lineage: nothing to record.
        case known
        /// These links are new; `basis` is what grounded them: `base`, `trusted` or `seen`.
        case accept([VersionLink], basis: String)
        case decline(WireToken, String)
    }

    private(set) var accepted: [String: Known] = [:]
    let trusted: String?

    /// The lineage in `records` (the school log's entries) for `federation`.
    init(records: [[String: CanonicalJSON]], federation: String?, trusted: String?) {
        self.trusted = trusted
        for r in records where r["event"]?.stringValue == SchoolLogEvent.Kind.versionAccepted.rawValue
            && r["federation"]?.stringValue == federation {
            guard let version = r["version"]?.stringValue else { continue }
            accepted[version] = Known(parent: r["parent"]?.stringValue, round: r["versionRound"]?.intValue)
        }
    }

    /// Whether `lineage` needs the base model's id to be judged: its chain ends at a base-model
    /// link that is neither accepted before nor trusted, and no nearer link is either.
    func needsBase(_ lineage: VersionLineage?) -> Bool {
        for link in lineage?.chain ?? [] {
            if accepted[link.version.hex] != nil || link.version.hex == trusted { return false }
            if link.parent == nil { return true }
        }
        return false
    }

    /// The verdict on `model` (the version an assignment names) with the `lineage` it states;
    /// `baseID` is this school's own id of the base model (when `needsBase`).
    func judge(model: String, lineage: VersionLineage?, baseID: String?) -> Verdict {
        guard let lineage, let first = lineage.chain.first else {
            return .decline(Code.missing, "the assignment states no lineage for version \(model.prefix(12)) (a coordinator older than this school): upgrade the coordinator")
        }
        guard first.version.hex == model else {
            return .decline(Code.broken, "the assignment's lineage starts at version \(first.version.hex.prefix(12)), not at the version it names, \(model.prefix(12))")
        }
        let chain = lineage.chain
        for (child, parent) in zip(chain, chain.dropFirst()) {
            guard child.parent == parent.version else {
                return .decline(Code.broken, "the lineage says version \(child.version.hex.prefix(12))'s parent is "
                    + "\(child.parent?.hex.prefix(12) ?? "none"), then lists \(parent.version.hex.prefix(12)) as it")
            }
            guard let r = child.round, r > (parent.round ?? 0) else {
                return .decline(Code.broken, "the lineage says version \(child.version.hex.prefix(12)) was made in round "
                    + "\(child.round.map(String.init) ?? "none"), not after its parent's round \(parent.round.map(String.init) ?? "0")")
            }
        }
        for (i, link) in chain.enumerated() {
            let id = link.version.hex
            let claimed = Known(parent: link.parent?.hex, round: link.round.map { Int(clamping: $0) })
            if let known = accepted[id] {
                guard known == claimed else {
                    return .decline(Code.parentMismatch, "version \(id.prefix(12)) was accepted with parent \(known.parent?.prefix(12) ?? "none") "
                        + "(round \(known.round.map(String.init) ?? "none")); now it is claimed with parent "
                        + "\(claimed.parent?.prefix(12) ?? "none") (round \(claimed.round.map(String.init) ?? "none"))")
                }
                return i == 0 ? .known : .accept(Array(chain[..<i]), basis: "seen")
            }
            if id == trusted { return .accept(Array(chain[...i]), basis: "trusted") }
            if link.parent == nil {
                guard let baseID, id == baseID else {
                    return .decline(Code.notBase, "version \(id.prefix(12)) is stated as the federation's base model, but this school's "
                        + "copy of the base model gives \(baseID?.prefix(12) ?? "no id") with seed \(lineage.initSeed)")
                }
                return .accept(Array(chain[...i]), basis: "base")
            }
            // The chain ends at a link whose parent this school accepted before.
            if i == chain.count - 1, let parent = link.parent?.hex, let known = accepted[parent] {
                guard let r = claimed.round, r > (known.round ?? 0) else {
                    return .decline(Code.broken, "the lineage says version \(id.prefix(12)) was made in round \(claimed.round.map(String.init) ?? "none"), "
                        + "not after its parent's round \(known.round.map(String.init) ?? "0")")
                }
                return .accept(Array(chain), basis: "seen")
            }
        }
        return .decline(Code.unknownParent, "version \(model.prefix(12))'s lineage (\(chain.count) link(s)) reaches no version this school "
            + "has accepted, nor the base model: set federation.trust_version to a version id the district vouches for")
    }

    mutating func add(_ links: [VersionLink]) {
        for link in links {
            accepted[link.version.hex] = Known(parent: link.parent?.hex, round: link.round.map { Int(clamping: $0) })
        }
    }
}
