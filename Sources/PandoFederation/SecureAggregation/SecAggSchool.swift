import Crypto
import Foundation

/// One school's side of one secure-aggregation round, as a state machine:
///
///     created ─advertiseKeys→ advertised ─shareKeys→ sharedKeys ─receiveShares→ receivedShares
///             ─maskedInput→ submittedInput ─unmask…→ (answers unmasking requests)
///
/// Any step out of order is refused without changing state. Bad content from peers or
/// the coordinator (invalid keys, failed authentication, too few peers) aborts the
/// session: a school never continues a round it cannot complete safely.
///
/// Honest-school rule (what keeps the coordinator from unmasking anyone): for each peer,
/// the school reveals at most one of its two shares, ever, across all requests of the
/// round; asking for the other kind is refused. It also submits one masked input only.
public final class SecAggSchool {
    public enum State: String, Sendable { case created, advertised, sharedKeys, receivedShares, submittedInput, aborted }

    public let school: String
    public let config: SecAggConfig
    public private(set) var state: State = .created
    public private(set) var abortReason: String?

    private let keys = SecAggKeyPairs()
    private let shareIndex: Int
    private let selfSeed = MaskSeed.random()
    /// Neighbours that advertised (U1 ∩ N(u)), with their parsed keys.
    private var peerKeys: [String: (encryption: Curve25519.KeyAgreement.PublicKey, masking: Curve25519.KeyAgreement.PublicKey)] = [:]
    /// Shares received from neighbours that shared (U2 ∩ N(u)).
    private var held: [String: (selfSeed: Shamir.Share, maskKey: Shamir.Share)] = [:]
    /// Which share of each peer has been revealed.
    private var revealed: [String: SecAggShareKind] = [:]

    public init(school: String, config: SecAggConfig) throws {
        guard let index = config.roster.shareIndex(of: school) else { throw SecAggError.unknownSchool(school) }
        self.school = school
        self.config = config
        self.shareIndex = index
    }

    /// The public keys this school advertises this round (what its log records the hash of).
    public var advertisedKeys: SecAggPublicKeys { keys.publicKeys(school: school) }

    /// Peers whose pairwise masks this school adds (available after `receiveShares`).
    public var pairedWith: [String] { held.keys.sorted(by: SecAggRoster.precedes) }

    /// Step 0: the two public keys to advertise.
    public func advertiseKeys() throws -> SecAggPublicKeys {
        try expect(.created)
        state = .advertised
        return keys.publicKeys(school: school)
    }

    /// Step 1: checks the neighbours' keys, then Shamir-shares the self-mask seed and the
    /// masking private key among them (threshold t) and seals each neighbour's pair of shares.
    public func shareKeys(_ bundle: SecAggKeyBundle) throws -> [SecAggShareEnvelope] {
        try expect(.advertised)
        return try abortOnError {
            guard bundle.recipient == school, bundle.context == config.context else {
                throw SecAggError.contextMismatch("key bundle for \(bundle.recipient) round \(bundle.context.round)")
            }
            let mine = keys.publicKeys(school: school)
            var seenKeys: Set<Data> = [mine.encryptionKey, mine.maskingKey]
            var parsed: [String: (encryption: Curve25519.KeyAgreement.PublicKey, masking: Curve25519.KeyAgreement.PublicKey)] = [:]
            for k in bundle.keys {
                guard config.roster.position(of: k.school) != nil else { throw SecAggError.unknownSchool(k.school) }
                if k.school == school {
                    guard k == mine else { throw SecAggError.keyReuse("bundle carries other keys under my name") }
                    continue
                }
                guard config.areNeighbours(school, k.school) else { throw SecAggError.notNeighbours(school, k.school) }
                guard parsed[k.school] == nil else { throw SecAggError.duplicateMessage("keys of \(k.school) twice") }
                guard seenKeys.insert(k.encryptionKey).inserted, seenKeys.insert(k.maskingKey).inserted else {
                    throw SecAggError.keyReuse("a key of \(k.school) repeats another school's key")
                }
                parsed[k.school] = try k.validated()
            }
            guard parsed.count >= config.threshold else {
                throw SecAggError.tooFewParticipants(stage: "key advertisement", needed: config.threshold, got: parsed.count)
            }
            peerKeys = parsed
            let holders = parsed.keys.sorted(by: SecAggRoster.precedes)
            let indices = holders.map { config.roster.shareIndex(of: $0)! }
            let seedShares = try Shamir.split(secret: selfSeed.bytes, threshold: config.threshold, indices: indices)
            let keyShares = try Shamir.split(secret: Array(keys.masking.rawRepresentation), threshold: config.threshold, indices: indices)
            var envelopes: [SecAggShareEnvelope] = []
            for (i, peer) in holders.enumerated() {
                let key = try SecAggKDF.pairwiseKey(myKey: keys.encryption, me: school, peerKey: parsed[peer]!.encryption, peer: peer,
                                                    context: config.context, purpose: .shareEncryption)
                envelopes.append(try SecAggShareEnvelope.seal(selfSeedShare: seedShares[i], maskKeyShare: keyShares[i],
                                                              sender: school, receiver: peer, context: config.context, key: key))
            }
            state = .sharedKeys
            return envelopes
        }
    }

    /// Step 2a: opens the envelopes the coordinator forwards from the neighbours that shared (U2).
    public func receiveShares(_ envelopes: [SecAggShareEnvelope]) throws {
        try expect(.sharedKeys)
        try abortOnError {
            var got: [String: (selfSeed: Shamir.Share, maskKey: Shamir.Share)] = [:]
            for e in envelopes {
                guard let keys = peerKeys[e.sender] else {
                    throw SecAggError.malformed("envelope from \(e.sender), which is not a neighbour that advertised keys")
                }
                guard got[e.sender] == nil else { throw SecAggError.duplicateMessage("two envelopes from \(e.sender)") }
                let key = try SecAggKDF.pairwiseKey(myKey: self.keys.encryption, me: school, peerKey: keys.encryption, peer: e.sender,
                                                    context: config.context, purpose: .shareEncryption)
                let shares = try e.open(expectedSender: e.sender, receiver: school, receiverIndex: shareIndex,
                                        context: config.context, key: key)
                got[e.sender] = (shares.selfSeed, shares.maskKey)
            }
            guard got.count >= config.threshold else {
                throw SecAggError.tooFewParticipants(stage: "share exchange", needed: config.threshold, got: got.count)
            }
            held = got
            state = .receivedShares
        }
    }

    /// Step 2b: y = encode(w·x, w) + PRG(b_u) + Σ_{v ∈ U2 ∩ N(u)} ±PRG(s_{u,v}) (mod 2^32),
    /// + when this school precedes v, − otherwise. Refused after the first submission.
    public func maskedInput(_ values: UnsafeBufferPointer<Float>, weight: UInt32) throws -> SecAggMaskedInput {
        if state == .submittedInput { throw SecAggError.alreadySubmitted("a masked input of \(school)") }
        try expect(.receivedShares)
        guard values.count == config.vectorLength else {
            throw SecAggError.malformed("update has \(values.count) values, the round expects \(config.vectorLength)")
        }
        var y = [UInt32](repeating: 0, count: config.maskedLength)
        try y.withUnsafeMutableBufferPointer { out in
            try config.encoding.encode(values, weight: weight, into: out)
            MaskPRG.apply(selfSeed, to: out, sign: .add)
            for peer in pairedWith {
                let seed = try pairwiseSeed(with: peer)
                MaskPRG.apply(seed, to: out, sign: SecAggRoster.precedes(school, peer) ? .add : .subtract)
            }
        }
        state = .submittedInput
        return SecAggMaskedInput(school: school, context: config.context, pairedWith: pairedWith, masked: y)
    }

    public func maskedInput(_ values: [Float], weight: UInt32) throws -> SecAggMaskedInput {
        try values.withUnsafeBufferPointer { try maskedInput($0, weight: weight) }
    }

    /// Step 3: reveals the self-mask seed share of every survivor and the masking-key share
    /// of every dropped school that this school holds. Refuses (revealing nothing) if the
    /// request would give both kinds for any peer — in one request or across requests —,
    /// lists this school as dropped, names too few survivors, or contradicts which
    /// neighbours shared. Repeating a compatible request is answered again.
    public func unmask(_ request: SecAggUnmaskRequest) throws -> SecAggUnmaskResponse {
        try expect(.submittedInput)
        guard request.context == config.context else { throw SecAggError.contextMismatch("unmasking request for round \(request.context.round)") }
        var asked: [String: SecAggShareKind] = [:]
        for (list, kind) in [(request.survivors, SecAggShareKind.selfMaskSeed), (request.dropped, .maskingKey)] {
            for peer in list {
                guard config.roster.position(of: peer) != nil else { throw SecAggError.unknownSchool(peer) }
                if let previous = asked.updateValue(kind, forKey: peer) {
                    if previous != kind { throw SecAggError.conflictingShareRequest(peer: peer) }
                    throw SecAggError.duplicateMessage("\(peer) listed twice in the unmasking request")
                }
            }
        }
        guard asked[school] == .selfMaskSeed else {
            throw SecAggError.malformed("unmasking request does not list \(school) among the survivors, but it sent its input")
        }
        guard request.survivors.count >= config.minimumSurvivors else {
            throw SecAggError.tooFewParticipants(stage: "unmasking", needed: config.minimumSurvivors, got: request.survivors.count)
        }
        var reveal: [SecAggRevealedShare] = []
        for (peer, kind) in asked where peer != school && config.areNeighbours(school, peer) {
            guard let shares = held[peer] else {
                throw SecAggError.malformed("request names neighbour \(peer) as having shared, but its shares never arrived")
            }
            if let before = revealed[peer], before != kind { throw SecAggError.conflictingShareRequest(peer: peer) }
            reveal.append(SecAggRevealedShare(owner: peer, kind: kind, share: kind == .selfMaskSeed ? shares.selfSeed : shares.maskKey))
        }
        for r in reveal { revealed[r.owner] = r.kind }
        reveal.sort { SecAggRoster.precedes($0.owner, $1.owner) }
        return SecAggUnmaskResponse(school: school, context: config.context, shares: reveal)
    }

    private func pairwiseSeed(with peer: String) throws -> MaskSeed {
        guard let k = peerKeys[peer] else { throw SecAggError.notNeighbours(school, peer) }
        let key = try SecAggKDF.pairwiseKey(myKey: keys.masking, me: school, peerKey: k.masking, peer: peer,
                                            context: config.context, purpose: .pairwiseMask)
        return MaskSeed(key: key)
    }

    private func expect(_ s: State) throws {
        guard state == s else {
            if state == .aborted { throw SecAggError.aborted(abortReason ?? "earlier error") }
            throw SecAggError.wrongState(expected: s.rawValue, actual: state.rawValue)
        }
    }

    private func abortOnError<T>(_ body: () throws -> T) throws -> T {
        do { return try body() } catch {
            state = .aborted
            abortReason = "\(error)"
            throw error
        }
    }
}
