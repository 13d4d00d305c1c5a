import Crypto
import Foundation

/// The coordinator's side of one round: collects keys, routes sealed shares, sums masked
/// inputs as they arrive (one L + 1 accumulator, never all vectors), and removes the masks.
///
/// Sets, as in Bonawitz et al.: U1 advertised keys, U2 also sent shares, U3 also sent a
/// masked input (the contributors), U4 also answered the unmasking request. For a school
/// v ∈ U3 its self mask PRG(b_v) is removed after reconstructing b_v from its neighbours'
/// shares; for v ∈ U2 \ U3 its masking key is reconstructed (and checked against the key
/// it advertised) to recompute the pairwise masks its surviving neighbours added. Pairwise
/// masks between two survivors cancel in the sum. Each `close…` ends a stage; what arrives
/// late is refused, and the network layer decides the deadlines.
public final class SecAggCoordinator {
    public enum Stage: String, Sendable { case collectingKeys, collectingShares, collectingMaskedInputs, collectingUnmaskResponses, finished }

    public let config: SecAggConfig
    public private(set) var stage: Stage = .collectingKeys

    private var advertised: [String: SecAggPublicKeys] = [:]
    private var seenKeys: Set<Data> = []
    private var u1: Set<String> = []
    private var envelopes: [String: [SecAggShareEnvelope]] = [:]
    private var u2: Set<String> = []
    private var sum: [UInt32]
    private var u3: Set<String> = []
    private var dropped: Set<String> = []
    private var responded: Set<String> = []
    private var seedShares: [String: [Shamir.Share]] = [:]
    private var keyShares: [String: [Shamir.Share]] = [:]

    public init(config: SecAggConfig) {
        self.config = config
        self.sum = [UInt32](repeating: 0, count: config.maskedLength)
    }

    /// Schools that advertised (U1), sent shares (U2), sent input (U3), answered unmasking (U4).
    public var advertisedSchools: [String] { sortedIDs(u1) }
    public var sharingSchools: [String] { sortedIDs(u2) }
    public var contributors: [String] { sortedIDs(u3) }
    public var responders: [String] { sortedIDs(responded) }

    // MARK: Stage 0

    public func receiveKeys(_ keys: SecAggPublicKeys) throws {
        try expect(.collectingKeys)
        guard config.roster.position(of: keys.school) != nil else { throw SecAggError.unknownSchool(keys.school) }
        guard advertised[keys.school] == nil else { throw SecAggError.duplicateMessage("keys of \(keys.school)") }
        _ = try keys.validated()
        guard !seenKeys.contains(keys.encryptionKey), !seenKeys.contains(keys.maskingKey) else {
            throw SecAggError.keyReuse("\(keys.school) advertised a key another school already uses")
        }
        seenKeys.formUnion([keys.encryptionKey, keys.maskingKey])
        advertised[keys.school] = keys
        u1.insert(keys.school)
    }

    /// Ends key advertisement; returns, for each school in U1, its neighbours' keys.
    public func closeKeyAdvertisement() throws -> [SecAggKeyBundle] {
        try expect(.collectingKeys)
        guard u1.count >= config.minimumSurvivors else {
            throw SecAggError.tooFewParticipants(stage: "key advertisement", needed: config.minimumSurvivors, got: u1.count)
        }
        stage = .collectingShares
        return sortedIDs(u1).map { u in
            SecAggKeyBundle(recipient: u, context: config.context, keys: liveNeighbours(of: u, in: u1).map { advertised[$0]! })
        }
    }

    // MARK: Stage 1

    /// One school's envelopes: exactly one for each of its neighbours in U1.
    public func receiveShares(_ batch: [SecAggShareEnvelope], from school: String) throws {
        try expect(.collectingShares)
        guard u1.contains(school) else { throw SecAggError.unknownSchool("\(school) (did not advertise keys)") }
        guard !u2.contains(school) else { throw SecAggError.duplicateMessage("shares of \(school)") }
        let expected = Set(liveNeighbours(of: school, in: u1))
        var receivers: Set<String> = []
        for e in batch {
            guard e.sender == school, e.context == config.context else {
                throw SecAggError.contextMismatch("envelope \(e.sender)→\(e.receiver) in \(school)'s batch")
            }
            guard expected.contains(e.receiver) else { throw SecAggError.notNeighbours(school, e.receiver) }
            guard receivers.insert(e.receiver).inserted else { throw SecAggError.duplicateMessage("two envelopes \(school)→\(e.receiver)") }
        }
        guard receivers == expected else {
            throw SecAggError.malformed("\(school) sent shares to \(receivers.count) of its \(expected.count) neighbours")
        }
        for e in batch { envelopes[e.receiver, default: []].append(e) }
        u2.insert(school)
    }

    /// Ends the share exchange; returns, for each school in U2, the envelopes its
    /// neighbours in U2 addressed to it.
    public func closeSharing() throws -> [String: [SecAggShareEnvelope]] {
        try expect(.collectingShares)
        guard u2.count >= config.minimumSurvivors else {
            throw SecAggError.tooFewParticipants(stage: "share exchange", needed: config.minimumSurvivors, got: u2.count)
        }
        stage = .collectingMaskedInputs
        var out: [String: [SecAggShareEnvelope]] = [:]
        for u in u2 {
            out[u] = (envelopes[u] ?? []).filter { u2.contains($0.sender) }.sorted { SecAggRoster.precedes($0.sender, $1.sender) }
        }
        envelopes = [:]
        return out
    }

    // MARK: Stage 2

    /// Adds one masked input to the running sum. A second input from a school is refused.
    public func receiveMaskedInput(_ input: SecAggMaskedInput) throws {
        guard input.context == config.context else { throw SecAggError.contextMismatch("masked input of \(input.school)") }
        try input.masked.withUnsafeBufferPointer { try receiveMaskedInput(school: input.school, pairedWith: input.pairedWith, masked: $0) }
    }

    /// The streaming form: `masked` (L + 1 words) is added into the one running sum and may
    /// be reused at once, so the coordinator holds no school's vector beyond this call.
    public func receiveMaskedInput(school: String, pairedWith: [String], masked: UnsafeBufferPointer<UInt32>) throws {
        try expect(.collectingMaskedInputs)
        guard u2.contains(school) else { throw SecAggError.unknownSchool("\(school) (did not share keys)") }
        guard !u3.contains(school) else { throw SecAggError.alreadySubmitted("a masked input of \(school)") }
        guard masked.count == config.maskedLength else {
            throw SecAggError.malformed("masked input of \(school) has \(masked.count) words, expected \(config.maskedLength)")
        }
        guard pairedWith == liveNeighbours(of: school, in: u2) else {
            throw SecAggError.malformed("\(school) masked with \(pairedWith.count) peers, not with its \(liveNeighbours(of: school, in: u2).count) neighbours that shared")
        }
        sum.withUnsafeMutableBufferPointer { s in
            for i in 0..<s.count { s[i] &+= masked[i] }
        }
        u3.insert(school)
    }

    /// The stage at which each school of the roster left the protocol, for the audit:
    /// `keys` (never advertised), `shares`, `masked-input`, `unmasking` (sent its input but
    /// did not answer; its masks were still removed with the others' shares).
    public var dropStages: [String: String] {
        let inputsClosed = stage == .collectingUnmaskResponses || stage == .finished
        var out: [String: String] = [:]
        for s in config.roster.schools {
            if !u1.contains(s) {
                if stage != .collectingKeys { out[s] = "keys" }
            } else if !u2.contains(s) {
                if stage != .collectingKeys && stage != .collectingShares { out[s] = "shares" }
            } else if !u3.contains(s) {
                if inputsClosed { out[s] = "masked-input" }
            } else if !responded.contains(s) && inputsClosed {
                out[s] = "unmasking"
            }
        }
        return out
    }

    /// SHA-256 (hex) of each advertising school's two public keys (encryption ‖ masking), for the audit.
    public var advertisedKeyHashes: [String: String] {
        advertised.mapValues { SecAggPublicKeys.fingerprint(encryptionKey: $0.encryptionKey, maskingKey: $0.maskingKey) }
    }

    /// Ends input collection; the request to send to every contributor.
    public func closeMaskedInputs() throws -> SecAggUnmaskRequest {
        try expect(.collectingMaskedInputs)
        guard u3.count >= config.minimumSurvivors else {
            throw SecAggError.tooFewParticipants(stage: "masked input", needed: config.minimumSurvivors, got: u3.count)
        }
        dropped = u2.subtracting(u3)
        stage = .collectingUnmaskResponses
        return unmaskRequest
    }

    public var unmaskRequest: SecAggUnmaskRequest {
        SecAggUnmaskRequest(context: config.context, survivors: sortedIDs(u3), dropped: sortedIDs(dropped))
    }

    // MARK: Stage 3

    /// Stores one contributor's revealed shares after checking each is of the kind asked for,
    /// about one of its neighbours, and at the responder's own index.
    public func receiveUnmaskResponse(_ response: SecAggUnmaskResponse) throws {
        try expect(.collectingUnmaskResponses)
        let r = response.school
        guard response.context == config.context else { throw SecAggError.contextMismatch("unmasking response of \(r)") }
        guard u3.contains(r) else { throw SecAggError.unknownSchool("\(r) (sent no masked input)") }
        guard !responded.contains(r) else { throw SecAggError.duplicateMessage("unmasking response of \(r)") }
        let index = config.roster.shareIndex(of: r)!
        var owners: Set<String> = []
        for s in response.shares {
            guard owners.insert(s.owner).inserted else { throw SecAggError.duplicateMessage("\(r) revealed two shares of \(s.owner)") }
            guard config.areNeighbours(r, s.owner) else { throw SecAggError.notNeighbours(r, s.owner) }
            let expectedKind: SecAggShareKind? = u3.contains(s.owner) ? .selfMaskSeed : dropped.contains(s.owner) ? .maskingKey : nil
            guard s.kind == expectedKind else { throw SecAggError.malformed("\(r) revealed a \(s.kind) share of \(s.owner)") }
            guard s.share.index == index, s.share.byteCount == 32 else {
                throw SecAggError.malformed("\(r) revealed a share at index \(s.share.index), its index is \(index)")
            }
        }
        // All or nothing: an honest school reveals a share of every neighbour that shared with it;
        // one that leaves some out would make reconstruction fail without being named.
        let required = Set(liveNeighbours(of: r, in: u2))
        guard owners == required else {
            throw SecAggError.malformed("\(r) revealed shares of \(owners.count) of the \(required.count) neighbours that shared with it")
        }
        for s in response.shares {
            if s.kind == .selfMaskSeed { seedShares[s.owner, default: []].append(s.share) }
            else { keyShares[s.owner, default: []].append(s.share) }
        }
        responded.insert(r)
    }

    /// Removes every mask and returns the exact sum of the contributors' encodings
    /// (L + 1 words). Throws if some secret has fewer than t shares or its shares disagree;
    /// the network layer may then wait for more responses and call again.
    public func finish() throws -> SecAggResult {
        try expect(.collectingUnmaskResponses)
        var out = sum
        try out.withUnsafeMutableBufferPointer { acc in
            for v in sortedIDs(u3) {
                let seed = try MaskSeed(bytes: try reconstruct(seedShares[v] ?? [], of: v))
                MaskPRG.apply(seed, to: acc, sign: .subtract)
            }
            for v in sortedIDs(dropped) {
                let raw = try reconstruct(keyShares[v] ?? [], of: v)
                let key: Curve25519.KeyAgreement.PrivateKey
                do { key = try .init(rawRepresentation: raw) } catch {
                    throw SecAggError.reconstructionFailed(school: v, reason: "not an X25519 key")
                }
                guard key.publicKey.rawRepresentation == advertised[v]!.maskingKey else {
                    throw SecAggError.reconstructionFailed(school: v, reason: "key does not match the advertised masking key")
                }
                for w in liveNeighbours(of: v, in: u3) {
                    let peerKey = try advertised[w]!.validated().masking
                    let seed = MaskSeed(key: try SecAggKDF.pairwiseKey(myKey: key, me: v, peerKey: peerKey, peer: w,
                                                                        context: config.context, purpose: .pairwiseMask))
                    // w added +PRG if it precedes v, −PRG otherwise; undo that.
                    MaskPRG.apply(seed, to: acc, sign: SecAggRoster.precedes(w, v) ? .subtract : .add)
                }
            }
        }
        stage = .finished
        return SecAggResult(sum: out, contributors: sortedIDs(u3), dropped: sortedIDs(dropped), encoding: config.encoding)
    }

    private func reconstruct(_ shares: [Shamir.Share], of school: String) throws -> [UInt8] {
        guard shares.count >= config.threshold else {
            throw SecAggError.reconstructionFailed(school: school, reason: "\(shares.count) shares, need \(config.threshold)")
        }
        do {
            return try Shamir.reconstruct(shares, threshold: config.threshold, maxIndex: config.roster.count)
        } catch {
            throw SecAggError.reconstructionFailed(school: school, reason: "\(error)")
        }
    }

    /// `u`'s neighbours in `set`, canonical order.
    private func liveNeighbours(of u: String, in set: Set<String>) -> [String] {
        config.neighbours(of: u).filter { set.contains($0) }
    }

    private func sortedIDs(_ s: Set<String>) -> [String] { s.sorted(by: SecAggRoster.precedes) }

    private func expect(_ s: Stage) throws {
        guard stage == s else { throw SecAggError.wrongState(expected: s.rawValue, actual: stage.rawValue) }
    }
}

/// The unmasked sum of one round and who is in it.
public struct SecAggResult: Sendable {
    /// Σ over contributors of their encodings, mod 2^32 (exact: it cannot wrap by construction).
    public let sum: [UInt32]
    public let contributors: [String]
    public let dropped: [String]
    public let encoding: FixedPointEncoding

    /// The weighted mean of the contributors' clipped values and their total weight.
    public func mean() throws -> (mean: [Float], totalWeight: UInt64) {
        try encoding.decodeMean(sum, contributors: contributors.count)
    }

    /// `encoding.meanErrorBound` for this result's contributors and weight.
    public var meanErrorBound: Double {
        encoding.meanErrorBound(totalWeight: UInt64(sum.last ?? 0), contributors: contributors.count)
    }
}
