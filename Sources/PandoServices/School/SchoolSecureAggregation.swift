import Foundation
import PandoEngine
import PandoFederation
import PandoLedger
import PandoTraining
import PandoTransport
import PandoWire

/// A newer assignment arrived while the school waited for a secure-aggregation message: the
/// coordinator has moved on (this school was left out), so the school answers that one.
struct SupersededAssignment: Error {
    let assignment: RoundAssignment
}

extension SchoolAgent {
    /// The school's side of a secure round, or why it declines: the setup must name this
    /// school, agree with the plan's trained tensors, and give an encoding that cannot
    /// overflow for its roster (`FixedPointEncoding` checks the scale itself); the school's own
    /// `min_survivors` must hold.
    func secureSession(_ setup: SecureAggregationSetup, assignment a: RoundAssignment, plan: LocalTrainingPlan,
                       school: String) -> Result<SecAggSchool, SecureRefusal> {
        let minimum = configuration.secureAggregation.minimumSurvivors
        guard Int(setup.minimumSurvivors) >= minimum else {
            return .failure(SecureRefusal(code: "secure-aggregation-too-few", reason: "the round would unmask the sum of as few as \(setup.minimumSurvivors) schools; this school requires at least \(minimum) (secure_aggregation.min_survivors)"))
        }
        let trained = TensorSelection(layout: FederatedLoRA.layout(config: config, head: head, plan: plan), plan: plan).trainedCount
        let census = plan.censusLength(classCount: head.labels.count)
        guard setup.vectorLength == UInt64(trained + census) else {
            return .failure(SecureRefusal(code: "secure-aggregation-invalid", reason: "the round masks \(setup.vectorLength) values, but the plan trains \(trained)"
                                          + (census > 0 ? " and adds \(census) label fractions" : "")))
        }
        if census > 0 {
            // Fail closed: a log that cannot be read is no proof that the fractions were never sent.
            let spent: Int?
            do { spent = try censusRound() } catch {
                return .failure(SecureRefusal(code: "class-census-spent", reason: "the round asks for this school's label fractions, and its log \(configuration.log.path) cannot be read to check that it never sent them: \(error)"))
            }
            if let spent {
                return .failure(SecureRefusal(code: "class-census-spent", reason: "the round asks for this school's label fractions, which it already added to the secure sum of round \(spent) (\(configuration.log.path)); a second sum over other schools would let the coordinator subtract one from the other"))
            }
        }
        do {
            let encoding = try FixedPointEncoding(clip: setup.clip, maxWeight: setup.maxWeight, maxSchools: setup.roster.count, scale: setup.scale)
            let seed = setup.roundSeed.bytes
            let config = try SecAggConfig(context: SecAggContext(federationID: configuration.federationID ?? "", round: a.round, setup: setup.bindingDigest),
                                          schools: setup.roster.map(\.value),
                                          topology: setup.neighbours.map { .harary(degree: Int($0)) } ?? .complete, roundSeed: seed,
                                          threshold: Int(setup.threshold), minimumSurvivors: Int(setup.minimumSurvivors),
                                          vectorLength: Int(setup.vectorLength), encoding: encoding)
            return .success(try SecAggSchool(school: school, config: config))
        } catch {
            return .failure(SecureRefusal(code: "secure-aggregation-invalid", reason: "the round's secure-aggregation setup is not acceptable: \(error)"))
        }
    }

    /// The round whose secure sum this school's label fractions went into (`weighted-global`), from
    /// its own log; nil if none has. Any round and any federation: the same round number sent again
    /// with a new nonce, or a new federation id, would otherwise be a second sum to subtract.
    func censusRound() throws -> Int? {
        try schoolLog.records().last { $0["secureAggregation"]?.objectValue?["classCensus"] == .bool(true) }?["round"]?.intValue
    }

    struct SecureRefusal: Error {
        let code: WireToken
        let reason: String
    }

    /// Advertises this round's keys, takes the neighbours' keys, sends the sealed shares.
    func exchangeKeys(_ session: SecAggSchool, assignment a: RoundAssignment, on conn: PandoConnection) async throws {
        try vanishIf("keys", conn)
        let keys = try session.advertiseKeys()
        try await conn.send(.secAggKeys(SecAggKeys(round: a.round, nonce: a.nonce, encryptionKey: WireKey(keys.encryptionKey)!,
                                                   maskingKey: WireKey(keys.maskingKey)!)))
        guard case .secAggKeyBundle(let bundle) = try await nextSecure(round: a.round, on: conn) else {
            throw SecAggError.malformed("expected the neighbours' keys")
        }
        try vanishIf("shares", conn)
        let envelopes = try session.shareKeys(SecAggKeyBundle(
            recipient: session.school, context: session.config.context,
            keys: bundle.keys.map { SecAggPublicKeys(school: $0.school.value, encryptionKey: $0.encryptionKey.data, maskingKey: $0.maskingKey.data) }))
        try await conn.send(.secAggShares(SecAggShares(round: a.round, nonce: a.nonce, envelopes: envelopes.map {
            SecAggSealedShares(peer: WireToken($0.receiver)!, sealed: try WireSealedShares($0.sealed).orThrow("a sealed share pair of \($0.sealed.count) bytes"))
        })))
        logger.info("round \(a.round): secure aggregation: keys advertised and shares sent to \(envelopes.count) neighbours")
    }

    /// Trains, masks the update (fixed point, self mask, pairwise masks), logs and uploads it,
    /// then answers the unmasking request. The plain delta never leaves this function.
    func trainSecurely(_ a: RoundAssignment, model: BertModel, plan: LocalTrainingPlan, session: SecAggSchool,
                       on conn: PandoConnection) async throws {
        let round = Int(clamping: a.round)
        let school = conn.schoolID.value
        client.setActivity(.training, progress: 0)
        let data = encoded(maxLength: plan.maxLength).train
        let model = try FederatedLoRA.roundModel(global: model, plan: plan, round: round) ?? model
        if updater == nil || updater!.model.layout != model.layout { updater = try LocalUpdater(like: model) }
        let updater = Unchecked(self.updater!)
        let clip = configuration.privacy?.maxGradientNorm, randomness = privacyRandomness
        var trained: (values: [Float], metrics: [String: Double], residual: TopKResidual?)
        do {
            let client = self.client
            trained = try await ComputeLane.run {
                let update = try updater.value.train(school: school, data: data, from: model, round: round, baseVersion: a.model.sha256.hex,
                                                     plan: plan, clip: clip, randomness: randomness) { client.setActivity(.training, progress: $0) }
                let pipeline = UpdatePipeline(layout: update.delta.layout, plan: plan)
                let selection = pipeline.selection
                // Compress, then mask what the compression kept (select → compress → mask): the sum is
                // then the sum of the decompressed updates, as in a round without secure aggregation,
                // and top-k's residual carries on. The masked words stay 32-bit: no bytes are saved.
                var left: TopKResidual?
                if pipeline.compression != .none {
                    let encoded: CompressedUpdateFile.Encoded
                    (encoded, left) = try self.compress(update, pipeline: pipeline, assignment: a)
                    try encoded.bytes.withUnsafeBytes { try CompressedUpdateFile.decode($0, pipeline: pipeline, into: update.delta) }
                }
                // weighted-global: the school's label fractions after the trained values; the weighted
                // mean of them is the district's class prior, and no school's own mix is seen.
                let census = plan.censusLength(classCount: data.labelCount) > 0
                    ? ClassBalance.census(classes: data.targets.map { $0.classIndex ?? 0 }, classCount: data.labelCount) : []
                var values = [Float](repeating: 0, count: selection.trainedCount + census.count)
                var offset = 0
                values.withUnsafeMutableBufferPointer { v in
                    for spec in selection.trained {
                        v.baseAddress!.advanced(by: offset).update(from: update.delta.buffer.base + spec.offset, count: spec.count)
                        offset += spec.count
                    }
                    for (i, f) in census.enumerated() { v[offset + i] = f }
                }
                return (values, update.metrics, left)
            }
        } catch {
            client.setActivity(.idle)
            return try await decline(a, reason: "local training failed: \(error)", code: "training-failed", on: conn, status: .failed)
        }
        let privacy = try accountPrivacy(round: round, plan: plan, metrics: &trained.metrics)
        onEvent?(.trained(round: round, examples: data.count, metrics: trained.metrics))
        // The shares the neighbours sent (delivered while this school trained).
        guard case .secAggShareDelivery(let delivery) = try await nextSecure(round: a.round, on: conn) else {
            throw SecAggError.malformed("expected the neighbours' shares")
        }
        try vanishIf("masked-input", conn)
        let weight = UInt32(clamping: min(data.count, Int(session.config.encoding.maxWeight)))
        let file = configuration.cache.appendingPathComponent("outgoing/update-r\(round).masked")
        let masked: SecAggMaskedInput
        do {
            try session.receiveShares(delivery.envelopes.map {
                SecAggShareEnvelope(sender: $0.peer.value, receiver: school, context: session.config.context, sealed: $0.sealed.data)
            })
            observeSecureInput?(trained.values, weight)
            let values = trained.values, state = Unchecked(session)
            masked = try await ComputeLane.run { try state.value.maskedInput(values, weight: weight) }
            try MaskedUpdateFile.write(masked.masked, round: round, to: file)
        } catch let e as SecAggError {
            return try await decline(a, reason: "\(e)", code: "secure-aggregation-failed", on: conn, status: .failed)
        }
        try tamper?(file)
        let digest = try ObjectDigest(hex: try Self.sha256(of: file)).orThrow("bad digest")
        let size = UInt64((try FileManager.default.attributesOfItem(atPath: file.path)[.size] as? Int) ?? 0)
        var logged = SchoolLogEntry(school: school, round: round, baseVersion: a.model.sha256.hex, updateSHA256: digest.hex,
                                    wireBytes: Int(size), examples: data.count, federation: configuration.federationID)
        logged.privacy = privacy
        logged.secureAggregation = [
            "keysSHA256": .string(session.advertisedKeys.fingerprint),
            "maskedWith": .array(masked.pairedWith.map { .string($0) }),
            "weight": .int(Int(weight)),
        ]
        // Spent once logged, before a byte is offered: the school never adds its fractions to a second sum.
        if plan.censusLength(classCount: data.labelCount) > 0 { logged.secureAggregation?["classCensus"] = .bool(true) }
        try schoolLog.append(logged)
        // Top-k's new residual replaces the old one once the update is logged, before a byte is offered.
        if let residual = trained.residual {
            try await ComputeLane.run { try residual.save(to: self.residualFile) }
        }
        var upload = PendingUpload(assignment: a, file: file, digest: digest, size: size, examples: data.count, metrics: trained.metrics)
        upload.maskedWith = masked.pairedWith.map { WireToken($0)! }
        try await deliver(upload, on: conn)
        // Unmasking: reveal what the coordinator may have (refused if it asks for both of a peer's secrets).
        guard case .secAggUnmask(let request) = try await nextSecure(round: a.round, on: conn) else {
            throw SecAggError.malformed("expected the unmasking request")
        }
        try vanishIf("unmasking", conn)
        do {
            let response = try session.unmask(SecAggUnmaskRequest(context: session.config.context, survivors: request.survivors.map(\.value),
                                                                  dropped: request.dropped.map(\.value)))
            try await conn.send(.secAggReveal(SecAggReveal(round: a.round, nonce: a.nonce, shares: response.shares.map {
                SecAggRevealed(owner: WireToken($0.owner)!, kind: $0.kind == .selfMaskSeed ? .selfMaskSeed : .maskingKey,
                               index: UInt32($0.share.index), values: $0.share.values)
            })))
            logger.info("round \(round): secure aggregation: revealed \(response.shares.count) shares for \(request.survivors.count) survivors and \(request.dropped.count) dropped schools")
        } catch let e as SecAggError {
            logger.error("round \(round): refused the unmasking request: \(e)")
        }
    }

    /// The next secure-aggregation message of `round`; a new assignment instead means the
    /// coordinator left this school out (thrown as `SupersededAssignment`).
    func nextSecure(round: UInt64, on conn: PandoConnection) async throws -> WireMessage {
        while true {
            let m = try await conn.receive()
            switch m {
            case .secAggKeyBundle(let b) where b.round == round: return m
            case .secAggShareDelivery(let d) where d.round == round: return m
            case .secAggUnmask(let u) where u.round == round: return m
            case .roundAssignment(let next): throw SupersededAssignment(assignment: next)
            case .secAggKeyBundle, .secAggShareDelivery, .secAggUnmask:
                logger.notice("ignoring a secure-aggregation message of another round")
            default:
                throw TransportError.protocolViolation("unexpected \(m.type.name) during secure aggregation")
            }
        }
    }

    /// Test hook: a school that vanishes at `stage`.
    private func vanishIf(_ stage: String, _ conn: PandoConnection) throws {
        guard secureDropAt?(stage) == true else { return }
        conn.close()
        throw TransportError.connectionClosed("test: the school vanished at the \(stage) stage")
    }
}
