import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import NIOSSL
import PandoCertificates
@testable import PandoTransport
import PandoWire
import X509
import XCTest

/// Issue 17, item 1: a peer must not be admitted under the identity of a certificate it
/// merely copied. The attack: present `[own RSA-1024 leaf, copy of a school's certificate]`.
/// BoringSSL verifies the handshake against the RSA leaf (whose key the attacker has);
/// swift-certificates cannot parse that leaf, so a validator that skipped unparseable
/// certificates would judge the copy instead.
final class BorrowedIdentityTests: XCTestCase {
    func hello() throws -> [UInt8] {
        Array(buffer: try WireCodec.frame(.hello(Hello(softwareVersion: PandoTransportInfo.softwareVersion))))
    }

    /// The validators judge exactly the first certificate: an unparseable leaf is refused
    /// (this is the check that accepted the copy before the fix), and so is any key but P-256.
    func testValidatorsJudgeOnlyTheLeafTheHandshakeUsed() throws {
        let pki = try TestPKI()
        let school = try pki.ca.issueSchool(id: "victim")
        let schoolDER = try TLSAttack.der(pki.dir.appendingPathComponent("schools/victim/school.pem"))
        let coordinatorDER = try TLSAttack.der(pki.dir.appendingPathComponent("coordinator/coordinator.pem"))
        let rsa = try TLSAttack.rsaCertificate(bits: 1024, in: pki.dir, name: "attacker")
        let rsaDER = try TLSAttack.der(rsa.certificate)
        XCTAssertThrowsError(try Certificate(derEncoded: rsaDER), "the attack needs a leaf swift-certificates cannot parse")

        let schools = SchoolCertificateValidator(caCertificate: pki.ca.certificate, revocation: nil)
        XCTAssertEqual(schools.validate(presented: [schoolDER]), .accepted(schoolID: "victim", serial: PandoIdentity.hex(school.serialNumber)))
        guard case .rejected(let refusal) = schools.validate(presented: [rsaDER, schoolDER]) else {
            return XCTFail("a copied school certificate behind an unparseable leaf was accepted")
        }
        XCTAssertEqual(refusal.kind, .unparseableLeaf)
        XCTAssertTrue(refusal.reason.contains("cannot be parsed"), refusal.reason)
        XCTAssertEqual(schools.validate(presented: [[0x30, 0x03, 0x02, 0x01, 0x01], schoolDER]).refusalKind, .unparseableLeaf)
        XCTAssertEqual(schools.validate(presented: []).refusalKind, .noCertificate)
        XCTAssertEqual(schools.validate(presented: Array(repeating: schoolDER, count: 5)).refusalKind, .malformedChain)

        // A parseable RSA-2048 leaf is refused for its key type, whoever issued it.
        let rsa2048 = try TLSAttack.rsaCertificate(bits: 2048, in: pki.dir, name: "rsa2048")
        XCTAssertEqual(schools.validate(presented: [try TLSAttack.der(rsa2048.certificate), schoolDER]).refusalKind, .wrongKeyType)

        let coordinator = CoordinatorCertificateValidator(caCertificate: pki.ca.certificate)
        XCTAssertNil(coordinator.problem(presented: [coordinatorDER], serverName: "localhost"))
        let problem = try XCTUnwrap(coordinator.problem(presented: [rsaDER, coordinatorDER], serverName: "localhost"),
                                    "a copied coordinator certificate behind an unparseable leaf was accepted")
        XCTAssertTrue(problem.contains("coordinator's certificate") && problem.contains("cannot be parsed"), problem)
    }

    /// Over the network: a raw NIOSSL client presenting the borrowed chain gets no session,
    /// and the coordinator reports the refusal (the service audits it).
    func testBorrowedSchoolChainIsRefusedAndReported() async throws {
        let pki = try TestPKI()
        _ = try pki.school("victim")
        let rsa = try TLSAttack.rsaCertificate(bits: 1024, in: pki.dir, name: "attacker")
        let logs = LogCapture()
        let refusals = NIOLockedValueBox<[ConnectionRefusal]>([])
        let sessions = NIOLockedValueBox<[String]>([])
        let server = try CoordinatorServer(configuration: pki.serverConfig(), logger: logs.logger("coord")) { r in
            refusals.withLockedValue { $0.append(r) }
        }
        let (stream, cont) = AsyncStream<Int>.makeStream()
        let task = Task {
            try await server.run(onListening: { cont.yield($0); cont.finish() }) { conn, status in
                sessions.withLockedValue { $0.append(conn.schoolID.description) }
                try await drainSession(conn, status)
            }
        }
        defer { task.cancel() }
        var it = stream.makeAsyncIterator()
        let listened = await it.next()
        let port = try XCTUnwrap(listened)

        let outcome = try await TLSAttack.dial(port: port, chain: [rsa.certificate, pki.dir.appendingPathComponent("schools/victim/school.pem")],
                                               key: rsa.key, payload: try hello())
        guard case .refused = outcome else { return XCTFail("the borrowed chain got an answer: \(outcome)") }
        let deadline = Date().addingTimeInterval(5)
        while refusals.withLockedValue({ $0.isEmpty }), Date() < deadline { try await Task.sleep(for: .milliseconds(20)) }
        XCTAssertEqual(sessions.withLockedValue { $0 }, [], "a session was opened")
        XCTAssertFalse(logs.lines.contains { $0.contains("school connected") }, logs.lines.joined(separator: "\n"))
        let seen = refusals.withLockedValue { $0 }
        XCTAssertEqual(seen.count, 1, "\(seen)")
        XCTAssertTrue(seen.first?.address.contains("127.0.0.1") ?? false, "\(seen)")

        // The real school still gets in.
        let client = try SchoolClient(configuration: pki.clientConfig(school: pki.dir.appendingPathComponent("schools/victim"), port: port),
                                      logger: logs.logger("school"))
        try await client.withConnection { conn in XCTAssertEqual(conn.schoolID, "victim") }
    }

    /// The same attack against a school: a fake coordinator presenting
    /// `[own RSA-1024 leaf, copy of the coordinator's certificate]` is refused.
    func testSchoolRefusesABorrowedCoordinatorChain() async throws {
        let pki = try TestPKI()
        let school = try pki.school("lincoln")
        let rsa = try TLSAttack.rsaCertificate(bits: 1024, in: pki.dir, name: "fake-coordinator")
        var tls = TLSConfiguration.makeServerConfiguration(
            certificateChain: [.certificate(try NIOSSLCertificate(file: rsa.certificate.path, format: .pem)),
                               .certificate(try NIOSSLCertificate(file: pki.dir.appendingPathComponent("coordinator/coordinator.pem").path, format: .pem))],
            privateKey: .privateKey(try NIOSSLPrivateKey(file: rsa.key.path, format: .pem)))
        tls.certificateVerification = .none
        let context = try NIOSSLContext(configuration: tls)
        let listener = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: context)) }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        defer { listener.close(promise: nil) }
        let port = try XCTUnwrap(listener.localAddress?.port)
        var config = pki.clientConfig(school: school, port: port)
        config.connectTimeout = .seconds(3)
        let client = try SchoolClient(configuration: config, logger: LogCapture().logger("school"))
        do {
            try await client.withConnection { _ in XCTFail("connected to a coordinator that borrowed the real one's certificate") }
        } catch let error as TransportError {
            guard case .tls = error else { return XCTFail("expected a TLS refusal, got \(error)") }
        }
    }

    /// Both ends speak TLS 1.3 only: a TLS 1.2 client is refused by the coordinator.
    func testCoordinatorRefusesTLS12() async throws {
        let pki = try TestPKI()
        _ = try pki.school("old")
        let refusals = NIOLockedValueBox<[ConnectionRefusal]>([])
        let server = try CoordinatorServer(configuration: pki.serverConfig(), logger: LogCapture().logger("coord")) { r in
            refusals.withLockedValue { $0.append(r) }
        }
        let (stream, cont) = AsyncStream<Int>.makeStream()
        let task = Task { try await server.run(onListening: { cont.yield($0); cont.finish() }, session: drainSession) }
        defer { task.cancel() }
        var it = stream.makeAsyncIterator()
        let listened = await it.next()
        let port = try XCTUnwrap(listened)
        var tls = TLSConfiguration.makeClientConfiguration()
        tls.maximumTLSVersion = .tlsv12
        tls.certificateVerification = .none
        let dir = pki.dir.appendingPathComponent("schools/old")
        tls.certificateChain = [.certificate(try NIOSSLCertificate(file: dir.appendingPathComponent("school.pem").path, format: .pem))]
        tls.privateKey = .privateKey(try NIOSSLPrivateKey(file: dir.appendingPathComponent("school-key.pem").path, format: .pem))
        let context = try NIOSSLContext(configuration: tls)
        let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .channelInitializer { ch in
                ch.eventLoop.makeCompletedFuture { try ch.pipeline.syncOperations.addHandler(NIOSSLClientHandler(context: context, serverHostname: nil)) }
            }
            .connect(host: "127.0.0.1", port: port).get()
        let deadline = Date().addingTimeInterval(5)
        while channel.isActive, Date() < deadline { try await Task.sleep(for: .milliseconds(20)) }
        XCTAssertFalse(channel.isActive, "a TLS 1.2 connection stayed open")
        while refusals.withLockedValue({ $0.isEmpty }), Date() < deadline { try await Task.sleep(for: .milliseconds(20)) }
        XCTAssertEqual(refusals.withLockedValue { $0.map(\.refusal.kind) }, [.tlsHandshake])
    }
}

extension PeerValidation {
    var refusalKind: PeerRefusal.Kind? {
        if case .rejected(let r) = self { return r.kind }
        return nil
    }
}
