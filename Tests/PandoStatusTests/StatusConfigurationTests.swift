import Foundation
import PandoServices
import PandoTestSupport
import XCTest

/// The configuration file's `status:` section: defaults, and the refusals that keep the
/// listener on loopback unless TLS and a credential are set.
final class StatusConfigurationTests: XCTestCase {
    func load(_ status: String) throws -> CoordinatorConfiguration {
        let folder = try TestFixtures.temporaryDirectory(prefix: "pando-status-config")
        defer { try? FileManager.default.removeItem(at: folder) }
        let yaml = """
        federation: {id: f, task: classification, labels: [a, b], base_model: model}
        coordinator: {state: state, certificate: c.pem, key: k.pem, ca: ca.pem}
        \(status)
        """
        let url = folder.appendingPathComponent("coordinator.yaml")
        try yaml.write(to: url, atomically: true, encoding: .utf8)
        return try CoordinatorConfiguration.load(from: url)
    }

    func assertRefused(_ status: String, field: String, mentions: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertThrowsError(try load(status), file: file, line: line) { error in
            guard let e = error as? ConfigurationError else { return XCTFail("\(error)", file: file, line: line) }
            XCTAssertEqual(e.field, field, "\(e)", file: file, line: line)
            XCTAssertTrue(e.reason.contains(mentions), e.reason, file: file, line: line)
        }
    }

    func testDefaultsAndParsing() throws {
        XCTAssertNil(try load("").status, "no status: section, no listener")
        let defaults = try XCTUnwrap(try load("status: {}").status)
        XCTAssertEqual(defaults.host, "127.0.0.1")
        XCTAssertEqual(defaults.port, 9464)
        XCTAssertTrue(defaults.isLoopback)
        let set = try XCTUnwrap(try load("status: {listen: \"[::1]:9000\", token_file: t}").status)
        XCTAssertEqual(set.host, "::1")
        XCTAssertEqual(set.port, 9000)
        XCTAssertEqual(set.tokenFile?.lastPathComponent, "t")
        let tls = try XCTUnwrap(try load("status: {listen: \"0.0.0.0:9464\", certificate: s.pem, key: s.key, client_ca: ca.pem}").status)
        XCTAssertFalse(tls.isLoopback)
        XCTAssertTrue(tls.usesTLS)
    }

    func testNonLoopbackNeedsTLSAndACredential() {
        assertRefused("status: {listen: \"0.0.0.0:9464\"}", field: "status.listen", mentions: "TLS")
        assertRefused("status: {listen: \"10.1.2.3:9464\", token_file: t}", field: "status.listen", mentions: "TLS")
        assertRefused("status: {listen: \"0.0.0.0:9464\", certificate: s.pem, key: s.key}", field: "status.listen", mentions: "credential")
        assertRefused("status: {listen: \"127.0.0.1:9464\", certificate: s.pem}", field: "status.key", mentions: "together")
        assertRefused("status: {listen: \"127.0.0.1:9464\", client_ca: ca.pem}", field: "status.client_ca", mentions: "TLS")
        assertRefused("status: {listen: \"localhost\"}", field: "status.listen", mentions: "host:port")
        assertRefused("status: {listen: \"127.0.0.1:http\"}", field: "status.listen", mentions: "host:port")
        assertRefused("status: {listen: \"127.0.0.1:70000\"}", field: "status.listen", mentions: "0–65535")
        XCTAssertThrowsError(try load("status: {listen: \"127.0.0.1:1\", password: x}")) { XCTAssertTrue("\($0)".contains("password"), "\($0)") }
    }
}
