import Foundation
import PandoEngine
import PandoFederation
import PandoLedger
import PandoTransport
import PandoWire

/// The coordinator's one reusable vector for reading masked updates.
final class WordScratch {
    var words: [UInt32] = []
}

/// What a secure round hands back to the shared commit path.
struct SecureRoundTally {
    var weightedLoss = 0.0
    var aggregateSeconds = 0.0
    var schoolFigures: [String: SchoolRound] = [:]
}

extension RoundDriver {
    /// The stages of one secure-aggregation round over the selected schools (the roster):
    /// keys → shares → masked inputs (with the local training in between) → unmasking. The
    /// coordinator relays keys and sealed shares, adds each masked input into one running sum
    /// as it arrives (the file is read into one scratch vector reused for every school), and
    /// after unmasking folds the weighted mean into `aggregation`. A school that vanishes at any
    /// stage is left out with that stage named; the round goes on while at least t (and
    /// `min_survivors`) remain, and each stage ends by its deadline, never later.
    func runSecureRound(_ round: Int, base: String, selected: [String], plan: LocalTrainingPlan, selection: TensorSelection,
                        settings: SecureAggregationSettings, model: ObjectRef, nonces: [String: WireToken],
                        aggregation: AggregationRound, meanBuffer: ParameterBuffer, deadline: Int, events: inout AsyncStream<HubEvent>.Iterator,
                        leaveOut: (String, String) throws -> Void) async throws -> SecureRoundTally {
        let cfg = config
        // weighted-global: each school's label fractions follow its trained values.
        let census = plan.censusLength(classCount: global.head.labels.count)
        var seed = [UInt8](repeating: 0, count: 32)
        var g = SystemRandomNumberGenerator()
        for i in seed.indices { seed[i] = UInt8.random(in: 0...255, using: &g) }
        let reference = referenceMedian ?? cfg.strategy.initialMedianExamples
        let weightCap = min(cfg.strategy.maxExamplesPerSchool, max(1, Int((Double(reference) * cfg.strategy.weightCapMultiple).rounded(.down))))
        let unbound: SecAggConfig
        do {
            unbound = try settings.roundConfig(federation: cfg.federationID, round: round, roster: selected, roundSeed: seed,
                                          vectorLength: selection.trainedCount + census, weightCap: weightCap)
        } catch {
            throw RoundError("secure aggregation cannot run over \(selected.count) school(s): \(error)")
        }
        let setup = SecureAggregationSetup(
            roster: unbound.roster.schools.map { WireToken($0)! }, threshold: UInt32(unbound.threshold), minimumSurvivors: UInt32(unbound.minimumSurvivors),
            neighbours: settings.neighbours.map { UInt32($0) }, roundSeed: ObjectDigest(bytes: seed)!,
            clip: unbound.encoding.clip, scale: unbound.encoding.scale, maxWeight: unbound.encoding.maxWeight, vectorLength: UInt64(unbound.vectorLength))
        // The same configuration, bound to the setup every school is sent (as each school binds its own).
        let sa = try settings.roundConfig(federation: cfg.federationID, round: round, roster: selected, roundSeed: seed,
                                          vectorLength: selection.trainedCount + census, weightCap: weightCap, setupDigest: setup.bindingDigest)
        let protocolState = SecAggCoordinator(config: sa)
        progress("round \(round): secure aggregation over \(selected.count) schools, t = \(sa.threshold), "
                 + (settings.neighbours.map { "\($0) neighbours each" } ?? "complete graph") + ", values clipped to ±\(sa.encoding.clip)")

        var tally = SecureRoundTally()
        var out: Set<String> = []
        /// Contributors that can no longer answer the unmasking request (their input stays in the sum).
        var silent: Set<String> = []
        func drop(_ school: String, _ why: String) throws {
            // A contributor's masked input is in the sum: it cannot be taken out, only not heard from.
            if protocolState.contributors.contains(school) {
                if silent.insert(school).inserted { logger.notice("round \(round): \(school), whose input is in the sum, is no longer heard: \(why)") }
                return
            }
            guard out.insert(school).inserted else { return }
            try leaveOut(school, why)
        }
        var live: [String] { selected.filter { !out.contains($0) } }

        let unreachable = await assign(selected, round: round, task: .train, model: model, plan: plan, nonces: nonces, secure: setup)
        for (school, why) in unreachable.sorted(by: { $0.key < $1.key }) { try drop(school, why) }

        enum Phase: String { case keys, shares, inputs = "masked-input", unmask = "unmasking" }
        var phase = Phase.keys
        var (stageTimer, stageTask) = timer(after: settings.stageDeadline)
        defer { stageTask.cancel() }
        let scratch = Unchecked(WordScratch())
        let state = Unchecked(protocolState)
        var examplesBySchool: [String: Int] = [:]
        var outcome = "aborted"
        var failure: String?

        /// `body`'s value, or nil with `failure` set: the protocol cannot go on (too few schools left).
        func attempt<T>(_ body: () throws -> T) -> T? {
            do { return try body() } catch {
                failure = "\(error)"
                return nil
            }
        }

        /// Ends the current stage and starts the next; false when the protocol cannot go on.
        func advance() async throws -> Bool {
            switch phase {
            case .keys:
                guard let bundles = attempt({ try protocolState.closeKeyAdvertisement() }) else { return false }
                for s in live where !protocolState.advertisedSchools.contains(s) { try drop(s, "secure aggregation: no keys by the stage deadline") }
                var messages: [String: WireMessage] = [:]
                for b in bundles where !out.contains(b.recipient) {
                    messages[b.recipient] = .secAggKeyBundle(SecAggKeyBundleMessage(round: UInt64(round), keys: b.keys.map {
                        SecAggPeerKeys(school: WireToken($0.school)!, encryptionKey: WireKey($0.encryptionKey)!, maskingKey: WireKey($0.maskingKey)!)
                    }))
                }
                for (s, why) in await send(messages) { try drop(s, why) }
                phase = .shares
            case .shares:
                guard let deliveries = attempt({ try protocolState.closeSharing() }) else { return false }
                for s in live where !protocolState.sharingSchools.contains(s) { try drop(s, "secure aggregation: no shares by the stage deadline") }
                var messages: [String: WireMessage] = [:]
                for (school, envelopes) in deliveries where !out.contains(school) {
                    messages[school] = .secAggShareDelivery(SecAggShareDelivery(round: UInt64(round), envelopes: envelopes.map {
                        SecAggSealedShares(peer: WireToken($0.sender)!, sealed: WireSealedShares($0.sealed)!)
                    }))
                }
                for (s, why) in await send(messages) { try drop(s, why) }
                phase = .inputs
            case .inputs:
                guard let request = attempt({ try protocolState.closeMaskedInputs() }) else { return false }
                for s in live where !protocolState.contributors.contains(s) { try drop(s, "secure aggregation: no masked update by the round deadline") }
                let message = WireMessage.secAggUnmask(SecAggUnmask(round: UInt64(round), survivors: request.survivors.map { WireToken($0)! },
                                                                     dropped: request.dropped.map { WireToken($0)! }))
                // A contributor that cannot be reached now still counts: its input is in the sum,
                // and its masks come off with the others' shares.
                let reachable = request.survivors.filter { !silent.contains($0) }
                for (s, _) in await send(Dictionary(uniqueKeysWithValues: reachable.map { ($0, message) })) { silent.insert(s) }
                phase = .unmask
            case .unmask:
                return false
            }
            stageTask.cancel()
            (stageTimer, stageTask) = timer(after: settings.stageDeadline)
            return true
        }

        /// Whether everyone still expected in this stage has answered.
        func stageComplete() -> Bool {
            switch phase {
            case .keys: return Set(live).isSubset(of: Set(protocolState.advertisedSchools))
            case .shares: return Set(live).isSubset(of: Set(protocolState.sharingSchools))
            case .inputs: return Set(live).isSubset(of: Set(protocolState.contributors))
            case .unmask: return Set(protocolState.contributors).subtracting(silent).isSubset(of: Set(protocolState.responders))
            }
        }

        protocolLoop: while true {
            if phase == .unmask, stageComplete() { break }
            if phase != .unmask, stageComplete() {
                guard try await advance() else { break }
                continue
            }
            guard let event = await events.next() else { throw CancellationError() }
            switch event {
            case .timer(let t) where t == stageTimer && phase != .inputs:
                if phase == .unmask { break protocolLoop }
                guard try await advance() else { break protocolLoop }
            case .timer(let t) where t == deadline:
                if phase == .unmask { break protocolLoop }
                guard phase == .inputs else {
                    failure = "the round deadline passed during the \(phase.rawValue) stage"
                    break protocolLoop
                }
                guard try await advance() else { break protocolLoop }
            case .stopRequested(let reason):
                throw StopRequested(reason: reason)
            case .disconnected(let school) where selected.contains(school):
                // Its keys live only in that session: it cannot come back into this round.
                try drop(school, "disconnected during secure aggregation (\(phase.rawValue) stage)")
            case .credentialsRevoked(let school, let reason) where selected.contains(school):
                try drop(school, "its certificate is no longer valid: \(reason)")
            case .secureAggregation(let school, let message):
                guard selected.contains(school), !out.contains(school), !silent.contains(school) else { continue }
                do {
                    try receive(message, from: school, phase: phase.rawValue, round: round, nonce: nonces[school]!, protocolState)
                } catch where phase == .unmask {
                    // Its masked input is already in the sum: it cannot be left out now, only not heard.
                    silent.insert(school)
                    logger.notice("round \(round): the unmasking response of \(school) was refused: \(error)")
                } catch {
                    try drop(school, "secure aggregation: \(error)")
                }
            case .result(let school, let result):
                guard selected.contains(school), !out.contains(school), result.round == UInt64(round), result.task == .train,
                      result.nonce == nonces[school] else { continue }
                guard result.status != .completed || phase == .inputs else {
                    try drop(school, "secure aggregation: a masked update before the share exchange ended")
                    continue
                }
                let up: (file: URL, digest: ObjectDigest, size: UInt64)
                switch storedUpload(of: result, from: school, round: round, minimumExamples: 1) {
                case .failure(let why):
                    try drop(school, why.reason)
                    continue
                case .success(let stored): up = stored
                }
                let t0 = ContinuousClock.now
                let words = sa.maskedLength, file = up.file, paired = (result.maskedWith ?? []).map(\.value)
                do {
                    // Off the driver's task: timers and other schools' messages keep being handled.
                    try await ComputeLane.run {
                        try MaskedUpdateFile.read(file, round: round, words: words, into: &scratch.value.words)
                        try scratch.value.words.withUnsafeBufferPointer {
                            try state.value.receiveMaskedInput(school: school, pairedWith: paired, masked: $0)
                        }
                    }
                } catch {
                    try? FileManager.default.removeItem(at: up.file)
                    try drop(school, "its masked update was refused: \(error)")
                    continue
                }
                try? FileManager.default.removeItem(at: up.file)
                tally.aggregateSeconds += Self.seconds(since: t0)
                let examples = Int(result.exampleCount)
                examplesBySchool[school] = examples
                let metrics = Dictionary(uniqueKeysWithValues: result.metrics.map { ($0.key.value, $0.value) })
                tally.schoolFigures[school] = SchoolRound(school: school, selected: true, accepted: false, trainingExamples: examples,
                                                         trainingMetrics: metrics)
                var entry = AuditEntry(event: .updateReceived, round: round, school: school, baseVersion: base, examples: examples,
                                       updateSHA256: up.digest.hex, wireBytes: Int(up.size))
                entry.privacy = PrivacyAccounting.auditFields(from: metrics)
                try ledger.ledger.record(entry)
                tally.weightedLoss += (metrics["train_loss"] ?? 0) * Double(examples)
                progress(String(format: "round %d: %@ masked update added to the sum (%d examples reported, loss %.4f)",
                                round, school, examples, metrics["train_loss"] ?? .nan))
            default:
                continue
            }
        }

        // Unmask: every contributor's self mask and every dropped school's pairwise masks.
        var unmasked: (mean: [Float], totalWeight: UInt64)?
        if failure == nil, phase == .unmask {
            let t0 = ContinuousClock.now
            do {
                unmasked = try await ComputeLane.run { try state.value.finish().mean() }
                outcome = "unmasked"
            } catch {
                failure = "\(error)"
            }
            tally.aggregateSeconds += Self.seconds(since: t0)
        }
        var record: [String: CanonicalJSON] = [
            "roster": .array(sa.roster.schools.map { .string($0) }),
            "threshold": .int(sa.threshold), "minimumSurvivors": .int(sa.minimumSurvivors),
            "graph": .string(settings.neighbours.map { "harary-\($0)" } ?? "complete"),
            "clip": .double(sa.encoding.clip), "scale": .double(sa.encoding.scale), "maxWeight": .int(Int(sa.encoding.maxWeight)),
            "vectorLength": .int(sa.vectorLength), "roundSeed": .string(setup.roundSeed.hex),
            "advertised": .array(protocolState.advertisedSchools.map { .string($0) }),
            "shared": .array(protocolState.sharingSchools.map { .string($0) }),
            "contributors": .array(protocolState.contributors.map { .string($0) }),
            "responders": .array(protocolState.responders.map { .string($0) }),
            "dropped": .object(protocolState.dropStages.mapValues { .string($0) }),
            "keys": .object(protocolState.advertisedKeyHashes.mapValues { .string($0) }),
            "outcome": .string(outcome),
        ]
        if let failure { record["failure"] = .string(String(failure.prefix(300))) }
        // weighted-global: the district's class prior, the only figure about labels the sum gives.
        if census > 0 { record["census"] = .int(census) }
        if census > 0, let unmasked {
            if let prior = ClassBalance.prior(fromMeanFractions: unmasked.mean[selection.trainedCount...]) {
                record["classPrior"] = .array(prior.map { .double($0) })
                progress("round \(round): the district's class prior from the sum: "
                         + zip(global.head.labels, prior).map { "\(TerminalText.safe($0)) \(String(format: "%.3f", $1))" }.joined(separator: ", "))
            } else {
                progress("round \(round): the unmasked label fractions are not a distribution (a dishonest school, or a broken sum): no class prior")
            }
        }
        // A stage the round never finished: who had not answered it by then.
        for s in selected where protocolState.dropStages[s] == nil && !protocolState.contributors.contains(s) {
            record["dropped"] = .object((record["dropped"]?.objectValue ?? [:]).merging([s: .string(phase.rawValue)]) { a, _ in a })
        }
        var audit = AuditEntry(event: .secureAggregation, round: round, baseVersion: base)
        audit.secureAggregation = record
        try ledger.ledger.record(audit)

        guard let unmasked else {
            for s in live { try drop(s, "secure aggregation did not complete: \(failure ?? "stopped in the \(phase.rawValue) stage")") }
            progress("round \(round): secure aggregation failed: \(failure ?? phase.rawValue)")
            return tally
        }
        let contributors = protocolState.contributors
        // The mean of the trained tensors, back in the round's layout (frozen tensors zero).
        let delta = meanBuffer
        let t0 = ContinuousClock.now
        delta.buffer.fill(0)
        var offset = 0
        unmasked.mean.withUnsafeBufferPointer { m in
            for spec in selection.trained {
                (delta.buffer.base + spec.offset).update(from: m.baseAddress! + offset, count: spec.count)
                offset += spec.count
            }
        }
        // The mean of updates that each honest training could make is within the largest of their
        // bounds: the one of the heaviest weight allowed (a sum spoilt by a wrong revealed share decodes
        // to noise, far outside it, if its weight slot did not already give it away).
        let bound = UpdateBounds.maxDeltaNorm(plan: plan, examples: weightCap, trainedParameters: selection.trainedCount,
                                              baseNorm: DeltaMath.norm(global.parameters.buffer))
        let rejection = aggregation.submitSecureMean(delta, totalWeight: Int(unmasked.totalWeight),
                                                     contributors: contributors.map { ($0, examplesBySchool[$0] ?? 0) }, maxNorm: bound)
        tally.aggregateSeconds += Self.seconds(since: t0)
        if let rejection {
            for s in contributors { tally.schoolFigures[s]?.leftOut = "rejected" }
            progress("round \(round): the unmasked mean was rejected: \(rejection)")
            try ledger.ledger.record(AuditEntry(event: .updateRejected, round: round, reason: "the unmasked mean of \(contributors.count) schools was rejected: \(rejection)"))
        } else {
            for s in contributors { tally.schoolFigures[s]?.accepted = true }
            progress(String(format: "round %d: unmasked the sum of %d schools (weight %llu, mean norm %.4f, error bound %.2g per value)",
                            round, contributors.count, unmasked.totalWeight, aggregation.secureMeanNorm ?? .nan,
                            sa.encoding.meanErrorBound(totalWeight: unmasked.totalWeight, contributors: contributors.count)))
        }
        return tally
    }

    /// One client message of the protocol, checked against the round and its stage.
    private func receive(_ message: WireMessage, from school: String, phase: String, round: Int, nonce: WireToken,
                         _ state: SecAggCoordinator) throws {
        let context = state.config.context
        switch message {
        case .secAggKeys(let k):
            guard k.round == UInt64(round), k.nonce == nonce else { throw RoundError("keys for another round or assignment") }
            try state.receiveKeys(SecAggPublicKeys(school: school, encryptionKey: k.encryptionKey.data, maskingKey: k.maskingKey.data))
        case .secAggShares(let s):
            guard s.round == UInt64(round), s.nonce == nonce else { throw RoundError("shares for another round or assignment") }
            try state.receiveShares(s.envelopes.map { SecAggShareEnvelope(sender: school, receiver: $0.peer.value, context: context, sealed: $0.sealed.data) },
                                    from: school)
        case .secAggReveal(let r):
            guard r.round == UInt64(round), r.nonce == nonce else { throw RoundError("revealed shares for another round or assignment") }
            let shares = try r.shares.map { s -> SecAggRevealedShare in
                SecAggRevealedShare(owner: s.owner.value, kind: s.kind == .selfMaskSeed ? .selfMaskSeed : .maskingKey,
                                    share: try Shamir.Share(validating: Int(s.index), byteCount: MaskSeed.byteCount, values: s.values))
            }
            try state.receiveUnmaskResponse(SecAggUnmaskResponse(school: school, context: context, shares: shares))
        default:
            throw RoundError("unexpected \(message.type.name) in the \(phase) stage")
        }
    }

    /// Sends one message to each school (concurrently, each bounded like an assignment);
    /// returns the schools it could not reach.
    func send(_ messages: [String: WireMessage]) async -> [String: String] {
        await withTaskGroup(of: (String, String?).self) { group in
            for (school, message) in messages {
                let hub = self.hub
                group.addTask {
                    guard let session = hub.session(school) else { return (school, "disconnected during secure aggregation") }
                    do {
                        try await RoundDriver.sendNow(message, on: session)
                        return (school, nil)
                    } catch {
                        return (school, "a secure-aggregation message could not be sent (connection lost)")
                    }
                }
            }
            var failed: [String: String] = [:]
            for await (school, why) in group { if let why { failed[school] = why } }
            return failed
        }
    }
}
