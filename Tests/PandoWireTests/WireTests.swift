import Foundation
import NIOCore
@testable import PandoWire
import XCTest

/// One fully populated sample per message type. The switch is exhaustive, so adding a
/// message type does not compile until it has a sample here — and then the no-text
/// test below inspects it.
func sample(_ type: MessageType) -> WireMessage {
    let digest = ObjectDigest.of(Array("x".utf8))
    let ref = ObjectRef(id: "update-r3", size: 1234, sha256: digest)
    let key = WireKey(Array(0..<32))!
    let sealed = WireSealedShares(Data((0..<WireSealedShares.byteCount).map { UInt8(truncatingIfNeeded: $0 &* 37) }))!
    switch type {
    case .hello: return .hello(Hello(softwareVersion: "pando-0.1.0"))
    case .welcome:
        return .welcome(Welcome(softwareVersion: "pando-0.1.0", capabilities: ["resume.v1"], schoolID: "lincoln-high",
                                heartbeatIntervalMillis: 10000, idleTimeoutMillis: 60000, maxFrameLength: 1 << 20))
    case .reject: return .reject(Reject(code: .protocolVersionMismatch, reason: "coordinator speaks 1"))
    case .heartbeat: return .heartbeat(Heartbeat(sequence: 9, activity: .training, progress: 0.25))
    case .heartbeatAck: return .heartbeatAck(HeartbeatAck(sequence: 9))
    case .goodbye: return .goodbye(Goodbye(code: .shuttingDown))
    case .objectOffer: return .objectOffer(ObjectOffer(id: "update-r3", kind: .update, size: 1234, sha256: digest))
    case .objectRequest: return .objectRequest(ObjectRequest(id: "update-r3", offset: 512))
    case .objectChunk: return .objectChunk(ObjectChunk(id: "update-r3", offset: 512, data: ByteBuffer(bytes: [1, 2, 3, 4])))
    case .objectComplete: return .objectComplete(ObjectComplete(id: "update-r3", sha256: digest))
    case .objectReceipt: return .objectReceipt(ObjectReceipt(id: "update-r3", status: .stored))
    case .roundAssignment:
        return .roundAssignment(RoundAssignment(round: 3, model: ref, nonce: "0f3a9c", parameters: ["learning_rate": 2e-5],
                                                auditHead: AuditAnchor(sequence: 41, hash: digest),
                                                lineage: VersionLineage(chain: [VersionLink(version: digest, parent: digest, round: 2),
                                                                                VersionLink(version: digest, parent: nil, round: nil)],
                                                                        initSeed: 42),
                                                secureAggregation: SecureAggregationSetup(
                                                    roster: ["lincoln-high", "roosevelt-middle", "west-elementary"], threshold: 2, minimumSurvivors: 2,
                                                    neighbours: 2, roundSeed: digest, clip: 1, scale: 4096, maxWeight: 5000, vectorLength: 1_000_000),
                                                patch: VersionPatchRef(base: digest, object: ObjectRef(id: "patch-4be1c0ffee12", size: 99, sha256: digest))))
    case .roundResult:
        return .roundResult(RoundResult(round: 3, nonce: "0f3a9c", status: .completed, update: ref, exampleCount: 812,
                                        metrics: ["accuracy": 0.91, "macro_f1": 0.88], declineReason: "lineage-unknown-parent",
                                        maskedWith: ["roosevelt-middle"]))
    case .secAggKeys:
        return .secAggKeys(SecAggKeys(round: 3, nonce: "0f3a9c", encryptionKey: key, maskingKey: WireKey(Array(repeating: 7, count: 32))!))
    case .secAggKeyBundle:
        return .secAggKeyBundle(SecAggKeyBundleMessage(round: 3, keys: [SecAggPeerKeys(school: "roosevelt-middle", encryptionKey: key, maskingKey: key)]))
    case .secAggShares:
        return .secAggShares(SecAggShares(round: 3, nonce: "0f3a9c", envelopes: [SecAggSealedShares(peer: "roosevelt-middle", sealed: sealed)]))
    case .secAggShareDelivery:
        return .secAggShareDelivery(SecAggShareDelivery(round: 3, envelopes: [SecAggSealedShares(peer: "lincoln-high", sealed: sealed)]))
    case .secAggUnmask:
        return .secAggUnmask(SecAggUnmask(round: 3, survivors: ["lincoln-high", "roosevelt-middle"], dropped: ["west-elementary"]))
    case .secAggReveal:
        return .secAggReveal(SecAggReveal(round: 3, nonce: "0f3a9c", shares: [SecAggRevealed(owner: "roosevelt-middle", kind: .selfMaskSeed,
                                                                                               index: 1, values: [1, 2, 3, 4, 5])]))
    }
}

final class WireTests: XCTestCase {
    func testEveryMessageRoundTrips() throws {
        for type in MessageType.allCases {
            let m = sample(type)
            XCTAssertEqual(m.type, type)
            var buf = try WireCodec.frame(m)
            let back = try WireCodec.decodeFrame(from: &buf)
            XCTAssertEqual(back, m, "\(type)")
            XCTAssertEqual(buf.readableBytes, 0)
        }
    }

    /// No client→coordinator message can carry free text: every leaf of every such
    /// message is a number, Bool, fieldless enum, `WireToken` (restricted alphabet,
    /// ≤ 64 bytes) or `ObjectDigest` (32 bytes). The only opaque bytes allowed are
    /// `ObjectChunk.data`, which carries tensor objects, and the fixed-size key material and
    /// ciphertext of secure aggregation (`WireKey`: 32 bytes; `WireSealedShares`: exactly the size
    /// of two sealed Shamir shares). A `String`, `Character`, `Data`, `[UInt8]` or `ByteBuffer`
    /// field anywhere else fails this test.
    func testNoClientMessageCanCarryText() {
        var violations: [String] = []
        func walk(_ value: Any, path: String, allowBytes: Bool) {
            switch value {
            case is WireToken, is ObjectDigest, is WireKey, is WireSealedShares, is Bool, is Double, is Float, is any FixedWidthInteger: return
            case is String, is Substring, is Character, is Data, is [UInt8], is [Character]:
                violations.append("\(path): \(type(of: value)) can hold text")
                return
            case is ByteBuffer:
                if !allowBytes { violations.append("\(path): ByteBuffer can hold text") }
                return
            default: break
            }
            let mirror = Mirror(reflecting: value)
            if mirror.displayStyle == .optional {
                guard let child = mirror.children.first else {
                    violations.append("\(path): sample leaves an optional nil — populate it so it can be inspected")
                    return
                }
                return walk(child.value, path: path, allowBytes: allowBytes)
            }
            if mirror.displayStyle == .enum && mirror.children.isEmpty { return }  // fieldless enum (code, status)
            if mirror.children.isEmpty && mirror.displayStyle != .collection && mirror.displayStyle != .dictionary {
                violations.append("\(path): unrecognised leaf type \(type(of: value))")
                return
            }
            for (i, child) in mirror.children.enumerated() {
                walk(child.value, path: "\(path).\(child.label ?? String(i))", allowBytes: allowBytes)
            }
        }
        var checked = 0
        for type in MessageType.allCases where type.direction.clientMaySend {
            walk(sample(type), path: "\(type)", allowBytes: type == .objectChunk)
            checked += 1
        }
        XCTAssertEqual(checked, 12)
        XCTAssertEqual(violations, [])

        // The detector itself works: a String field is caught.
        struct Leaky { var note: String = "hi" }
        violations = []
        walk(Leaky(), path: "Leaky", allowBytes: false)
        XCTAssertEqual(violations.count, 1)
        // And coordinator-only text (Reject.reason) is seen as text, which is why Reject is coordinator→client only.
        violations = []
        walk(sample(.reject), path: "reject", allowBytes: false)
        XCTAssertEqual(violations.count, 1)
        XCTAssertFalse(MessageType.reject.direction.clientMaySend)
    }

    func testTokensRejectText() {
        // (A literal argument would be a literal coercion; go through a String variable.)
        func tok(_ s: String) -> WireToken? { WireToken(s) }
        XCTAssertNotNil(tok("macro_f1"))
        XCTAssertNotNil(tok("pando-0.1.0"))
        XCTAssertNil(tok("I feel sad today"))
        XCTAssertNil(tok(""))
        XCTAssertNil(tok(String(repeating: "a", count: 65)))
        XCTAssertNil(tok("é"))
        XCTAssertNil(tok("-leading"))
        // JSON decoding validates too.
        let json = #"{"round":1,"task":"train","nonce":"n1","status":"completed","exampleCount":1,"metrics":{"my essay was about":1}}"#
        XCTAssertThrowsError(try WireCodec.decodeMessage(type: MessageType.roundResult.rawValue, payload: ByteBuffer(string: json)))
    }

    func testFrameErrorsAreTyped() throws {
        var b = ByteBuffer(bytes: [0, 0, 0, 0])
        XCTAssertThrowsError(try WireCodec.decodeFrame(from: &b)) { XCTAssertEqual($0 as? WireError, .emptyFrame) }
        b = ByteBuffer(bytes: [0xFF, 0xFF, 0xFF, 0xFF, 1])
        XCTAssertThrowsError(try WireCodec.decodeFrame(from: &b)) {
            XCTAssertEqual($0 as? WireError, .frameTooLarge(length: 0xFFFF_FFFF, max: WireLimits.default.maxFrameLength))
        }
        b = ByteBuffer(bytes: [0, 0, 0, 1, 0x7F])
        XCTAssertThrowsError(try WireCodec.decodeFrame(from: &b)) { XCTAssertEqual($0 as? WireError, .unknownMessageType(0x7F)) }
        b = ByteBuffer(bytes: [0, 0, 0, 3, 0x01, 0x7B, 0x7D])  // hello "{}"
        XCTAssertThrowsError(try WireCodec.decodeFrame(from: &b)) {
            guard case .malformed(let t, let d)? = $0 as? WireError else { return XCTFail("\($0)") }
            XCTAssertEqual(t, "hello")
            XCTAssertTrue(d.contains("missing field"), d)
        }
        // Incomplete frame: nothing consumed, nil returned; decodeLast reports truncation.
        var frame = try WireCodec.frame(sample(.heartbeat))
        var partial = frame.readSlice(length: frame.readableBytes - 2)!
        XCTAssertNil(try WireCodec.decodeFrame(from: &partial))
        var decoder = WireFrameDecoder()
        XCTAssertThrowsError(try decoder.decodeLast(buffer: &partial, seenEOF: true)) {
            guard case .truncatedFrame? = $0 as? WireError else { return XCTFail("\($0)") }
        }
        // Non-finite metric and out-of-range progress are rejected.
        XCTAssertThrowsError(try WireMessage.heartbeat(Heartbeat(sequence: 1, activity: .idle, progress: 2)).validate())
        XCTAssertThrowsError(try WireCodec.frame(.roundResult(RoundResult(round: 1, nonce: "n", status: .completed, update: nil, exampleCount: 1, metrics: ["x": .nan]))))
    }

    func testHandshakeEvaluation() {
        let ok = Handshake.evaluate(Hello(softwareVersion: "a"), schoolID: "s", softwareVersion: "b",
                                    heartbeatIntervalMillis: 1000, idleTimeoutMillis: 5000)
        guard case .success(let w) = ok else { return XCTFail() }
        XCTAssertEqual(w.capabilities, PandoProtocol.capabilities)
        let bad = Handshake.evaluate(Hello(protocolVersion: 2, softwareVersion: "pando-9.0.0"), schoolID: "s", softwareVersion: "pando-0.1.0",
                                     heartbeatIntervalMillis: 1000, idleTimeoutMillis: 5000)
        guard case .failure(let r) = bad else { return XCTFail() }
        XCTAssertEqual(r.code, .protocolVersionMismatch)
        XCTAssertTrue(r.reason.contains("client speaks Pando protocol 2 (software pando-9.0.0)"), r.reason)
    }

    /// Seeded random-input fuzzing of the frame and message decoders. Runs a bounded number
    /// of iterations in CI; set PANDO_FUZZ_ITERATIONS (and PANDO_FUZZ_SEED) to run longer.
    func testFuzzDecoders() throws {
        let env = ProcessInfo.processInfo.environment
        let iterations = Int(env["PANDO_FUZZ_ITERATIONS"] ?? "") ?? 20_000
        var rng = Xorshift(seed: UInt64(env["PANDO_FUZZ_SEED"] ?? "") ?? 0x5EED)
        let seeds = try MessageType.allCases.map { try Array(WireCodec.frame(sample($0)).readableBytesView) }
        let limits = WireLimits(maxFrameLength: 4096, maxControlPayload: 2048, chunkSize: 1024)
        var decoded = 0, rejected = 0
        for _ in 0..<iterations {
            var bytes: [UInt8]
            switch rng.next() % 4 {
            case 0:  // pure garbage
                bytes = (0..<Int(rng.next() % 64)).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
            case 1:  // valid frame with flipped bytes
                bytes = seeds[Int(rng.next() % UInt64(seeds.count))]
                for _ in 0..<(1 + Int(rng.next() % 4)) where !bytes.isEmpty {
                    bytes[Int(rng.next() % UInt64(bytes.count))] = UInt8(truncatingIfNeeded: rng.next())
                }
            case 2:  // valid frame truncated or extended
                bytes = seeds[Int(rng.next() % UInt64(seeds.count))]
                if rng.next() % 2 == 0 { bytes = Array(bytes.prefix(Int(rng.next() % UInt64(bytes.count + 1)))) }
                else { bytes += (0..<Int(rng.next() % 16)).map { _ in UInt8(truncatingIfNeeded: rng.next()) } }
            default:  // valid header, JSON-ish payload of random structure
                let type = MessageType.allCases[Int(rng.next() % UInt64(MessageType.allCases.count))].rawValue
                let pieces = ["{", "}", "[", "]", "\"", ":", ",", "1", "-1e999", "null", "\"id\"", "\"offset\"", "\"sha256\"", "true", "\"\u{0}\""]
                let body = Array((0..<Int(rng.next() % 24)).map { _ in pieces[Int(rng.next() % UInt64(pieces.count))] }.joined().utf8)
                bytes = [0, 0, UInt8((body.count + 1) >> 8), UInt8((body.count + 1) & 0xFF), type] + body
            }
            var buf = ByteBuffer(bytes: bytes)
            var decoder = WireFrameDecoder(limits: limits)
            do {
                while let m = try decoder.decode(buffer: &buf) {
                    decoded += 1
                    // Whatever decodes must re-encode and decode to the same value.
                    var again = try WireCodec.frame(m, limits: WireLimits(maxFrameLength: 1 << 20))
                    XCTAssertEqual(try WireCodec.decodeFrame(from: &again, limits: WireLimits(maxFrameLength: 1 << 20)), m)
                }
                _ = try decoder.decodeLast(buffer: &buf, seenEOF: true)
            } catch is WireError {
                rejected += 1
            } catch {
                XCTFail("untyped error \(error) for \(bytes)")
            }
            XCTAssertLessThanOrEqual(buf.readableBytes, bytes.count)
        }
        XCTAssertGreaterThan(decoded, 0)
        XCTAssertGreaterThan(rejected, 0)
    }

    /// Decoding errors end up in the coordinator's log: they must never quote what the peer
    /// sent (dictionary keys, enum values, token values, raw JSON), only the static schema.
    func testDecodeErrorsNeverEchoPeerText() {
        let canary = "the student wrote zebrapurple lighthouse"
        let token = "zebrapurple-lighthouse"
        let cases: [(MessageType, String, String)] = [
            (.roundResult, #"{"round":1,"task":"train","nonce":"n1","status":"completed","exampleCount":1,"metrics":{"\#(canary)":0.5}}"#, "metrics.<key>"),
            (.roundResult, #"{"round":1,"task":"train","nonce":"n1","status":"completed","exampleCount":1,"metrics":{"\#(token)":"\#(canary)"}}"#, "wrong type at metrics.<key>"),
            (.roundResult, #"{"round":1,"task":"train","nonce":"n1","status":"\#(canary)","exampleCount":1,"metrics":{}}"#, "invalid value at status"),
            (.roundResult, #"{"round":1,"task":"train","nonce":"n1","status":"completed","exampleCount":1,"metrics":{},"update":{"id":"\#(canary)","size":1,"sha256":"\#(canary)"}}"#, "invalid value at update.id"),
            (.roundAssignment, #"{"round":1,"task":"train","nonce":"n1","model":{"id":"m","size":1,"sha256":"00"},"parameters":{"\#(token)":"\#(canary)"}}"#, "at model.sha256"),
            (.heartbeat, #"{"sequence":1,"activity":"\#(canary)"}"#, "invalid value at activity"),
            (.heartbeat, canary, "not a valid JSON object"),
            (.hello, #"{"protocolVersion":1,"softwareVersion":"\#(canary)","capabilities":[]}"#, "invalid value at softwareVersion"),
            (.hello, #"{"protocolVersion":1,"softwareVersion":"x","capabilities":["ok","\#(canary)"]}"#, "invalid value at capabilities.1"),
            (.objectOffer, #"{"id":"a","kind":"\#(canary)","size":1,"sha256":"x"}"#, "invalid value at kind"),
            (.roundResult, #"{"round":1,"task":"train","nonce":"\#(canary)","status":"completed","exampleCount":1,"metrics":{}}"#, "invalid value at nonce"),
            (.roundAssignment, #"{"round":1,"task":"\#(canary)","nonce":"n","model":{"id":"m","size":1,"sha256":"00"},"parameters":{}}"#, "invalid value at task"),
        ]
        for (type, json, expected) in cases {
            do {
                _ = try WireCodec.decodeMessage(type: type.rawValue, payload: ByteBuffer(string: json))
                XCTFail("decoded \(json)")
            } catch {
                let text = "\(error) \(String(reflecting: error))"
                XCTAssertFalse(text.contains("zebrapurple") || text.contains("lighthouse") || text.contains("student"), text)
                XCTAssertTrue("\(error)".contains(expected), "\(error) lacks \(expected)")
            }
        }
        // Any description stays short whatever the peer sends.
        XCTAssertLessThan(WireError.malformed(type: "x", detail: String(repeating: "a", count: 70_000)).description.utf8.count, 300)
    }

    /// The fields added to `roundAssignment` since its first version are optional: an
    /// assignment from an older coordinator, without them, still decodes.
    func testAssignmentWithoutTheNewerFieldsDecodes() throws {
        let json = #"{"round":1,"task":"train","nonce":"n1","model":{"id":"m","size":1,"sha256":"\#(String(repeating: "0", count: 64))"},"parameters":{}}"#
        guard case .roundAssignment(let a) = try WireCodec.decodeMessage(type: MessageType.roundAssignment.rawValue, payload: ByteBuffer(string: json)) else {
            return XCTFail("not an assignment")
        }
        XCTAssertNil(a.auditHead)
        XCTAssertNil(a.lineage)
        // A lineage is 1…64 links: more is refused before anyone acts on it.
        var long = a
        let link = VersionLink(version: a.model.sha256, parent: a.model.sha256, round: 1)
        long.lineage = VersionLineage(chain: Array(repeating: link, count: VersionLineage.maxLinks + 1), initSeed: 1)
        XCTAssertThrowsError(try WireMessage.roundAssignment(long).validate())
        long.lineage = VersionLineage(chain: [], initSeed: 1)
        XCTAssertThrowsError(try WireMessage.roundAssignment(long).validate())
    }

    /// Secure-aggregation payloads: keys and ciphertext only at their exact sizes, lists bounded.
    func testSecureAggregationMessagesAreBounded() throws {
        func decode(_ type: MessageType, _ json: String) throws -> WireMessage {
            try WireCodec.decodeMessage(type: type.rawValue, payload: ByteBuffer(string: json))
        }
        let nonce = "0f3a9c"
        let good = String(repeating: "ab", count: 32)
        XCTAssertNoThrow(try decode(.secAggKeys, #"{"round":1,"nonce":"\#(nonce)","encryptionKey":"\#(good)","maskingKey":"\#(good)"}"#))
        for bad in [String(repeating: "ab", count: 33), "I feel sad today", ""] {
            XCTAssertThrowsError(try decode(.secAggKeys, #"{"round":1,"nonce":"\#(nonce)","encryptionKey":"\#(bad)","maskingKey":"\#(good)"}"#)) {
                XCTAssertFalse("\($0)".contains(bad.isEmpty ? "\u{0}" : bad), "never echoes the value: \($0)")
            }
        }
        let exact = Data(count: WireSealedShares.byteCount).base64EncodedString()
        let long = Data(count: WireSealedShares.byteCount + 1).base64EncodedString()
        XCTAssertNoThrow(try decode(.secAggShares, #"{"round":1,"nonce":"\#(nonce)","envelopes":[{"peer":"a","sealed":"\#(exact)"}]}"#))
        XCTAssertThrowsError(try decode(.secAggShares, #"{"round":1,"nonce":"\#(nonce)","envelopes":[{"peer":"a","sealed":"\#(long)"}]}"#))
        let many = (0...SecureAggregationSetup.maxRoster).map { _ in #"{"peer":"a","sealed":"\#(exact)"}"# }.joined(separator: ",")
        XCTAssertThrowsError(try WireCodec.decodeMessage(type: MessageType.secAggShareDelivery.rawValue,
                                                         payload: ByteBuffer(string: #"{"round":1,"envelopes":[\#(many)]}"#),
                                                         limits: WireLimits(maxControlPayload: 1 << 20)))
        XCTAssertThrowsError(try decode(.secAggReveal, #"{"round":1,"nonce":"\#(nonce)","shares":[{"owner":"a","kind":"masking-key","index":1,"values":[1,2]}]}"#))
        XCTAssertThrowsError(try decode(.secAggReveal, #"{"round":1,"nonce":"\#(nonce)","shares":[{"owner":"a","kind":"both","index":1,"values":[1,2,3,4,5]}]}"#))
        // Direction: a school cannot send the coordinator's messages, nor the reverse.
        XCTAssertFalse(MessageType.secAggKeyBundle.direction.clientMaySend)
        XCTAssertFalse(MessageType.secAggUnmask.direction.clientMaySend)
        XCTAssertFalse(MessageType.secAggReveal.direction.coordinatorMaySend)
        var assignment = try XCTUnwrap({ if case .roundAssignment(let a) = sample(.roundAssignment) { return a } else { return nil } }())
        assignment.secureAggregation?.roster = []
        XCTAssertThrowsError(try WireMessage.roundAssignment(assignment).validate())
        assignment.secureAggregation?.roster = ["a", "b", "c"]
        assignment.secureAggregation?.scale = .infinity
        XCTAssertThrowsError(try WireMessage.roundAssignment(assignment).validate())
    }

    /// The schema field list used to render error paths covers every field of every message.
    func testSchemaFieldNamesCoverEveryField() throws {
        func keys(_ value: Any, dynamic: Bool, into out: inout Set<String>) {
            if let dict = value as? [String: Any] {
                for (k, v) in dict {
                    if !dynamic { out.insert(k) }
                    keys(v, dynamic: !dynamic && (k == "metrics" || k == "parameters"), into: &out)
                }
            } else if let array = value as? [Any] {
                for v in array { keys(v, dynamic: false, into: &out) }
            }
        }
        var fields = Set<String>()
        for type in MessageType.allCases where type != .objectChunk {
            var frame = try WireCodec.frame(sample(type))
            frame.moveReaderIndex(forwardBy: 5)
            keys(try JSONSerialization.jsonObject(with: Data(frame.readableBytesView)), dynamic: false, into: &fields)
        }
        XCTAssertTrue(fields.isSubset(of: WireCodec.schemaFieldNames), "missing: \(fields.subtracting(WireCodec.schemaFieldNames))")
    }
}

struct Xorshift {
    var s: UInt64
    init(seed: UInt64) { s = seed == 0 ? 1 : seed }
    mutating func next() -> UInt64 {
        s ^= s << 13
        s ^= s >> 7
        s ^= s << 17
        return s
    }
}
