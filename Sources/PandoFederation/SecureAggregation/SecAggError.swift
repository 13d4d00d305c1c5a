import Foundation

/// Why a secure-aggregation step was refused. Every refusal names what was wrong.
public enum SecAggError: Error, Equatable, CustomStringConvertible {
    case invalidConfiguration(String)
    case malformed(String)
    case unknownSchool(String)
    case notNeighbours(String, String)
    case duplicateMessage(String)
    case wrongState(expected: String, actual: String)
    case contextMismatch(String)
    case keyReuse(String)
    case tooFewParticipants(stage: String, needed: Int, got: Int)
    case decryptionFailed(sender: String, receiver: String)
    case conflictingShareRequest(peer: String)
    case alreadySubmitted(String)
    case reconstructionFailed(school: String, reason: String)
    case weightAboveCap(UInt32, cap: UInt32)
    case nonFiniteValue(index: Int)
    case aborted(String)

    public var description: String {
        switch self {
        case .invalidConfiguration(let m): return "secure aggregation: invalid configuration: \(m)"
        case .malformed(let m): return "secure aggregation: malformed input: \(m)"
        case .unknownSchool(let s): return "secure aggregation: \(s) is not on the round's roster"
        case .notNeighbours(let a, let b): return "secure aggregation: \(a) and \(b) are not neighbours in this round's graph"
        case .duplicateMessage(let m): return "secure aggregation: duplicate message: \(m)"
        case .wrongState(let e, let a): return "secure aggregation: expected state \(e), but state is \(a)"
        case .contextMismatch(let m): return "secure aggregation: message for another federation, round or school: \(m)"
        case .keyReuse(let m): return "secure aggregation: public keys are not distinct: \(m)"
        case .tooFewParticipants(let stage, let needed, let got):
            return "secure aggregation: \(stage): need at least \(needed) participants, have \(got)"
        case .decryptionFailed(let s, let r): return "secure aggregation: shares from \(s) to \(r) failed authentication"
        case .conflictingShareRequest(let p):
            return "secure aggregation: refused: asked for both the self-mask share and the mask-key share of \(p)"
        case .alreadySubmitted(let m): return "secure aggregation: refused: \(m) was already submitted this round"
        case .reconstructionFailed(let s, let r): return "secure aggregation: cannot reconstruct the secret of \(s): \(r)"
        case .weightAboveCap(let w, let cap): return "secure aggregation: weight \(w) exceeds the cap \(cap)"
        case .nonFiniteValue(let i): return "secure aggregation: value \(i) is not finite"
        case .aborted(let m): return "secure aggregation: session aborted: \(m)"
        }
    }
}
