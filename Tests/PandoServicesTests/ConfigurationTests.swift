import Foundation
import Logging
import PandoEngine
import PandoFederation
@testable import PandoServices
import PandoTestSupport
import XCTest

final class ConfigurationTests: XCTestCase {
    func write(_ text: String, name: String = "coordinator.yaml") throws -> URL {
        let dir = try TestFixtures.temporaryDirectory(prefix: "pando-config")
        let url = dir.appendingPathComponent(name)
        try text.write(to: url, atomically: true, encoding: .utf8)
        return url
    }

    let valid = """
    federation: {id: f, task: classification, labels: [a, b], base_model: model, rounds: 3}
    selection: {min_schools: 2, quorum: 2}
    local: {epochs: 2, learning_rate: 2.0e-5, batch_size: 16, max_length: 64}
    strategy: {name: fedadam, server_learning_rate: 1.0e-3}
    coordinator: {state: state, certificate: c.pem, key: k.pem, ca: pki/ca.pem}
    """

    func testShippedExamplesLoad() throws {
        let examples = TestFixtures.repository.appendingPathComponent("deploy/examples")
        let c = try CoordinatorConfiguration.load(from: examples.appendingPathComponent("coordinator.yaml"))
        XCTAssertEqual(c.labels, ["ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM"])
        XCTAssertEqual(c.baseModel.resolvingSymlinksInPath().path,
                       TestFixtures.repository.appendingPathComponent("models/default").resolvingSymlinksInPath().path)
        let s = try SchoolConfiguration.load(from: examples.appendingPathComponent("school.yaml"))
        XCTAssertEqual(s.labels, c.labels, "the school example announces the same federation")
        XCTAssertEqual(s.federationID, c.federationID)
        XCTAssertTrue(s.transport.certificatePath.hasSuffix("schools/lincoln-high/school.pem"))
    }

    func testValuesAndRelativePaths() throws {
        let url = try write(valid)
        let c = try CoordinatorConfiguration.load(from: url)
        XCTAssertEqual(c.plan.epochs, 2)
        XCTAssertEqual(c.plan.learningRate, 2e-5)
        XCTAssertEqual(c.rounds.quorum, 2)
        XCTAssertEqual(c.strategy.name, .fedadam)
        XCTAssertEqual(c.stateFolder.path, url.deletingLastPathComponent().appendingPathComponent("state").path)
        XCTAssertEqual(c.revocationList.lastPathComponent, "crl.pem")
        XCTAssertEqual(c.revocationList.deletingLastPathComponent().lastPathComponent, "pki", "the CRL defaults to the CA's folder")
    }

    func expectError(_ yaml: String, _ fragments: [String], file: StaticString = #filePath, line: UInt = #line) throws {
        let url = try write(yaml)
        XCTAssertThrowsError(try CoordinatorConfiguration.load(from: url), file: file, line: line) { error in
            let text = "\(error)"
            XCTAssertTrue(text.hasPrefix(url.path), "names the file: \(text)", file: file, line: line)
            for f in fragments { XCTAssertTrue(text.contains(f), "'\(f)' missing from: \(text)", file: file, line: line) }
        }
    }

    func testErrorsNameTheFileAndTheField() throws {
        try expectError(valid.replacingOccurrences(of: "learning_rate", with: "learning_rte"), ["local.learning_rte", "unknown setting"])
        try expectError(valid.replacingOccurrences(of: "epochs: 2", with: "epochs: two"), ["local.epochs"])
        try expectError(valid.replacingOccurrences(of: "epochs: 2", with: "epochs: 2.5"), ["local.epochs", "whole number"])
        try expectError(valid.replacingOccurrences(of: "task: classification, ", with: ""), ["federation.task", "missing"])
        try expectError(valid.replacingOccurrences(of: "task: classification", with: "task: sorting"), ["federation.task"])
        try expectError(valid.replacingOccurrences(of: "quorum: 2", with: "quorum: 3"), ["selection.quorum", "min_schools"])
        try expectError(valid.replacingOccurrences(of: "labels: [a, b]", with: "labels: [a, a]"), ["federation.labels", "twice"])
        try expectError(valid.replacingOccurrences(of: "name: fedadam", with: "name: fedsgd"), ["strategy.name"])
        try expectError(valid.replacingOccurrences(of: "name: fedadam", with: "name: fedavgm, momentum: 1.0"), ["strategy.momentum", "[0, 1)"])
        let momentum = try CoordinatorConfiguration.load(from: try write(valid.replacingOccurrences(of: "name: fedadam", with: "name: fedavgm, momentum: 0.5")))
        XCTAssertEqual(momentum.strategy.name, .fedavgm)
        XCTAssertEqual(momentum.strategy.momentum, 0.5)
        try expectError("federation: [unclosed\n", ["not valid YAML"])
    }

    func testSecureAggregationSettings() throws {
        let secure = valid.replacingOccurrences(of: "min_schools: 2", with: "min_schools: 3")
            .replacingOccurrences(of: "name: fedadam", with: "name: fedavg")
            + "\nsecure_aggregation: {threshold: 3, neighbours: 4, clip: 0.5, min_survivors: 3, stage_deadline_seconds: 30}\n"
        let c = try CoordinatorConfiguration.load(from: try write(secure))
        let s = try XCTUnwrap(c.secureAggregation)
        XCTAssertEqual(s.threshold, 3)
        XCTAssertEqual(s.neighbours, 4)
        XCTAssertEqual(s.clip, 0.5)
        XCTAssertEqual(s.minimumSurvivors, 3)
        XCTAssertEqual(s.stageDeadline, .seconds(30))
        XCTAssertNil(try CoordinatorConfiguration.load(from: try write(valid)).secureAggregation, "off unless configured")
        // Strategies that need each update, compression, too few schools, bad values: refused, naming the field.
        try expectError(secure.replacingOccurrences(of: "name: fedavg", with: "name: trimmed-mean"), ["strategy.name", "weighted mean"])
        XCTAssertEqual(try CoordinatorConfiguration.load(from: try write(secure + "update: {compression: int8}\n")).plan.compression, .int8,
                       "compression composes: the school compresses, then masks what it kept")
        try expectError(secure.replacingOccurrences(of: "min_schools: 3", with: "min_schools: 2"), ["selection.min_schools", "at least 3"])
        try expectError(secure.replacingOccurrences(of: "threshold: 3", with: "threshold: 5"), ["secure_aggregation.threshold", "4 neighbours"])
        try expectError(secure.replacingOccurrences(of: "clip: 0.5", with: "clip: 0"), ["secure_aggregation.clip"])
        try expectError(secure.replacingOccurrences(of: "min_survivors: 3", with: "min_survivor: 3"), ["secure_aggregation.min_survivor", "unknown setting"])
    }

    func testFederatedLoRASettings() throws {
        let fedavg = valid.replacingOccurrences(of: "name: fedadam", with: "name: fedavg")
        let c = try CoordinatorConfiguration.load(from: try write(fedavg + "\nupdate: {lora: {rank: 8, alpha: 16, targets: [query, value]}}\n"))
        XCTAssertEqual(c.plan.lora, LoRAConfig(rank: 8, alpha: 16, targets: [.query, .value]))
        try expectError(valid + "\nupdate: {lora: {rank: 8}}\n", ["strategy.name", "fedadam"])
        try expectError(fedavg + "\nupdate: {lora: {rank: 8, targets: [queries]}}\n", ["update.lora.targets"])
        try expectError(fedavg + "\nupdate: {lora: {rank: 0}}\n", ["update.lora"])
        try expectError(fedavg + "\nupdate: {lora: {rank: 8, alpa: 16}}\n", ["update.lora.alpa", "unknown setting"])
        try expectError(fedavg.replacingOccurrences(of: "max_length: 64", with: "max_length: 64, freeze_layers: 2") + "\nupdate: {lora: {rank: 8}}\n",
                        ["local.freeze_layers"])
    }

    func testClassBalanceSettings() throws {
        XCTAssertEqual(try CoordinatorConfiguration.load(from: write(valid)).plan.classBalance, ClassBalance.none)
        let secure = "\nsecure_aggregation: {threshold: 2}\n"
        for balance in ClassBalance.allCases {
            let yaml = valid.replacingOccurrences(of: "max_length: 64", with: "max_length: 64, class_balance: \(balance.rawValue)")
                .replacingOccurrences(of: "name: fedadam", with: "name: fedavg")
                .replacingOccurrences(of: "min_schools: 2, quorum: 2", with: "min_schools: 3, quorum: 3")
            XCTAssertEqual(try CoordinatorConfiguration.load(from: write(yaml + secure)).plan.classBalance, balance)
            if balance.needsSecureAggregation {
                // Without secure aggregation each update would show which classes its school lacks,
                // or (weighted-global) its label fractions.
                try expectError(yaml, ["local.class_balance", "secure_aggregation"])
            } else {
                XCTAssertEqual(try CoordinatorConfiguration.load(from: write(yaml)).plan.classBalance, balance)
            }
        }
        XCTAssertEqual(ClassBalance.allCases.filter(\.needsSecureAggregation),
                       [.presentClasses, .priorAdjusted, .weightedPresentClasses, .weightedGlobal])
        // weighted-global's fractions go up to 1: a tighter clip of the fixed-point encoding would cut them.
        let global = valid.replacingOccurrences(of: "max_length: 64", with: "max_length: 64, class_balance: weighted-global")
            .replacingOccurrences(of: "name: fedadam", with: "name: fedavg")
            .replacingOccurrences(of: "min_schools: 2, quorum: 2", with: "min_schools: 3, quorum: 3")
        try expectError(global + "\nsecure_aggregation: {threshold: 2, clip: 0.5}\n", ["secure_aggregation.clip", "weighted-global"])
        try expectError(valid.replacingOccurrences(of: "max_length: 64", with: "max_length: 64, class_balance: balanced"),
                        ["local.class_balance", "'balanced'", "present-classes"])
        try expectError(valid.replacingOccurrences(of: "max_length: 64", with: "max_length: 64, class_balance: weighted, privacy: {noise_multiplier: 1}"),
                        ["local.class_balance", "local.privacy"])
        try expectError(valid.replacingOccurrences(of: "max_length: 64", with: "max_length: 64, class_balance: weighted")
                            .replacingOccurrences(of: "task: classification, labels: [a, b]", with: "task: multi-label, labels: [a, b]"),
                        ["local.class_balance", "multi-label"])
    }

    func testRoundDecaySettings() throws {
        XCTAssertEqual(try CoordinatorConfiguration.load(from: write(valid)).rounds.learningRateDecay, RoundDecay.none)
        for decay in RoundDecay.allCases {
            let yaml = valid.replacingOccurrences(of: "max_length: 64", with: "max_length: 64, round_decay: \(decay.rawValue)")
            XCTAssertEqual(try CoordinatorConfiguration.load(from: write(yaml)).rounds.learningRateDecay, decay)
        }
        try expectError(valid.replacingOccurrences(of: "max_length: 64", with: "max_length: 64, round_decay: exponential"),
                        ["local.round_decay", "'exponential'", "cosine"])
    }

    func testUpdateCompressionSettings() throws {
        XCTAssertEqual(try CoordinatorConfiguration.load(from: write(valid)).plan.compression, .none)
        XCTAssertEqual(try CoordinatorConfiguration.load(from: write(valid + "\nupdate: {compression: int8}")).plan.compression, .int8)
        XCTAssertEqual(try CoordinatorConfiguration.load(from: write(valid + "\nupdate: {compression: float16}")).plan.compression, .float16)
        XCTAssertEqual(try CoordinatorConfiguration.load(from: write(valid + "\nupdate: {compression: topk}")).plan.compression, .topK(density: 0.01))
        XCTAssertEqual(try CoordinatorConfiguration.load(from: write(valid + "\nupdate: {compression: topk, topk_density: 0.05}")).plan.compression,
                       .topK(density: 0.05))
        try expectError(valid + "\nupdate: {compression: zip}", ["update.compression", "'zip'"])
        try expectError(valid + "\nupdate: {compression: topk, topk_density: 0}", ["update.topk_density", "(0, 1]"])
        try expectError(valid + "\nupdate: {compression: int8, topk_density: 0.1}", ["update.topk_density", "only with compression: topk"])
        try expectError(valid + "\nupdate: {compresion: int8}", ["update.compresion", "unknown setting"])
    }

    func testSchoolRefusesDataOutsideTheFederationsLabels() throws {
        let dir = try TestFixtures.temporaryDirectory(prefix: "pando-school-config")
        try "text,label\nhello there,a\nsomething else,c\n".write(to: dir.appendingPathComponent("data.csv"), atomically: true, encoding: .utf8)
        let model = try TestFixtures.tinyModelFolder()
        let yaml = """
        school: {data: data.csv, validation_fraction: 0}
        federation: {id: f, task: classification, labels: [a, b], base_model: \(model.path)}
        coordinator: {host: 127.0.0.1}
        tls: {folder: nowhere}
        """
        try yaml.write(to: dir.appendingPathComponent("school.yaml"), atomically: true, encoding: .utf8)
        let config = try SchoolConfiguration.load(from: dir.appendingPathComponent("school.yaml"))
        XCTAssertThrowsError(try SchoolAgent(configuration: config, logger: Logger(label: "t"))) { error in
            let text = "\(error)"
            XCTAssertTrue(text.contains("data.csv:3") && text.contains("unknown label"), text)
            XCTAssertFalse(text.contains("something else"), "the text of a row is never quoted: \(text)")
        }
        // With good data, a missing certificate is the next refusal, before any connection.
        try "text,label\nhello there,a\nsomething else,b\n".write(to: dir.appendingPathComponent("data.csv"), atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try SchoolAgent(configuration: config, logger: Logger(label: "t"))) { error in
            XCTAssertTrue("\(error)".contains("school.pem"), "\(error)")
        }
    }

    /// The school's configuration names its federation (its log records it); a missing id is an error naming the field.
    func testSchoolConfigurationNeedsTheFederationID() throws {
        let dir = try TestFixtures.temporaryDirectory(prefix: "pando-school-id")
        let yaml = """
        school: {data: data.csv}
        federation: {id: riverside, task: classification, labels: [a, b], base_model: model}
        coordinator: {host: 127.0.0.1}
        tls: {folder: certs}
        """
        let url = dir.appendingPathComponent("school.yaml")
        try yaml.write(to: url, atomically: true, encoding: .utf8)
        XCTAssertEqual(try SchoolConfiguration.load(from: url).federationID, "riverside")
        try yaml.replacingOccurrences(of: "id: riverside, ", with: "").write(to: url, atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try SchoolConfiguration.load(from: url)) { error in
            let text = "\(error)"
            XCTAssertTrue(text.hasPrefix(url.path) && text.contains("federation.id") && text.contains("missing"), text)
        }
    }

    /// `federation.trust_version` names a version id a school accepts without following its
    /// lineage to the base model; anything but a SHA-256 is an error naming the field.
    func testSchoolTrustVersionIsAVersionID() throws {
        let dir = try TestFixtures.temporaryDirectory(prefix: "pando-school-trust")
        let id = String(repeating: "4b", count: 32)
        let yaml = """
        school: {data: data.csv}
        federation: {id: riverside, task: classification, labels: [a, b], base_model: model, trust_version: \(id)}
        coordinator: {host: 127.0.0.1}
        tls: {folder: certs}
        """
        let url = dir.appendingPathComponent("school.yaml")
        try yaml.write(to: url, atomically: true, encoding: .utf8)
        XCTAssertEqual(try SchoolConfiguration.load(from: url).trustVersion, id)
        try yaml.replacingOccurrences(of: id, with: "head").write(to: url, atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try SchoolConfiguration.load(from: url)) { error in
            XCTAssertTrue("\(error)".contains("federation.trust_version") && "\(error)".contains("not a version id"), "\(error)")
        }
    }

    /// A port already in use is a clear error, not a hang.
    func testPortInUseIsAnError() async throws {
        let model = try TestFixtures.tinyModelFolder()
        let work = try TestFixtures.temporaryDirectory(prefix: "pando-port")
        let federation = try LoopbackFederation(configuration: Federation.configuration(model: model, state: work.appendingPathComponent("state")),
                                                schools: try Federation.schools(), workFolder: work.appendingPathComponent("run"),
                                                schoolLogFolder: work.appendingPathComponent("logs"), logger: Logger(label: "t", factory: { _ in SwiftLogNoOpLogHandler() }))
        // Hold a port with a listening socket, then ask the coordinator to listen on it.
        let (fd, port) = try ChildProcesses.loopbackListener()
        defer { close(fd) }
        federation.coordinator.transport.port = port
        do {
            _ = try await federation.coordinator.run()
            XCTFail("listening on a port in use must fail")
        } catch {
            XCTAssertTrue("\(error)".lowercased().contains("address") || "\(error)".lowercased().contains("in use"), "\(error)")
        }
    }

    /// DP settings on both sides, and the school's PII options: values read, errors named.
    func testPrivacyAndPIISettings() throws {
        let dp = valid.replacingOccurrences(of: "max_length: 64}", with: "max_length: 64, privacy: {noise_multiplier: 0.9, max_gradient_norm: 0.5}}")
        let c = try CoordinatorConfiguration.load(from: try write(dp))
        XCTAssertEqual(c.plan.privacy, RoundPrivacy(noiseMultiplier: 0.9, maxGradientNorm: 0.5, delta: 1e-5))
        let unfrozen = { (yaml: String) in yaml.replacingOccurrences(of: "max_length: 64", with: "max_length: 64, freeze_embeddings: false") }
        XCTAssertFalse(try CoordinatorConfiguration.load(from: try write(unfrozen(dp))).plan.freezeEmbeddings, "allowed with DP")
        try expectError(unfrozen(valid), ["local.freeze_embeddings", "only with differential privacy"])
        try expectError(dp.replacingOccurrences(of: "noise_multiplier: 0.9", with: "noise_multiplier: 0"), ["local.privacy.noise_multiplier"])
        try expectError(dp.replacingOccurrences(of: "max_gradient_norm: 0.5", with: "max_gradient_norm: 0.5, delta: 2"), ["local.privacy.delta"])

        let dir = try TestFixtures.temporaryDirectory(prefix: "pando-school-privacy")
        let school = """
        school: {data: data.csv}
        federation: {id: riverside, task: classification, labels: [a, b], base_model: model}
        coordinator: {host: 127.0.0.1}
        tls: {folder: certs}
        privacy: {target_epsilon: 4, delta: 1.0e-6}
        pii: {student_id_patterns: ['LHS-[0-9]{6}']}
        """
        let url = dir.appendingPathComponent("school.yaml")
        func load(_ yaml: String) throws -> SchoolConfiguration {
            try yaml.write(to: url, atomically: true, encoding: .utf8)
            return try SchoolConfiguration.load(from: url)
        }
        let s = try load(school)
        XCTAssertEqual(s.privacy, SchoolPrivacyBudget(targetEpsilon: 4, delta: 1e-6))
        XCTAssertTrue(s.pii.enabled, "on by default")
        XCTAssertEqual(try s.pii.scrubber().scrub("id LHS-123456 here").text, "id [STUDENT_ID] here")
        XCTAssertFalse(try load(school.replacingOccurrences(of: "pii: {student_id_patterns: ['LHS-[0-9]{6}']}", with: "pii: {enabled: false}")).pii.enabled)
        for (from, to, field) in [("target_epsilon: 4", "target_epsilon: -1", "privacy.target_epsilon"), ("delta: 1.0e-6", "delta: 0", "privacy.delta")] {
            XCTAssertThrowsError(try load(school.replacingOccurrences(of: from, with: to))) { XCTAssertTrue("\($0)".contains(field), "\($0)") }
        }
        XCTAssertThrowsError(try load(school.replacingOccurrences(of: "LHS-[0-9]{6}", with: "LHS-[0-9"))) {
            XCTAssertTrue("\($0)".contains("pii.student_id_patterns"), "\($0)")
        }
        XCTAssertThrowsError(try load(school.replacingOccurrences(of: "pii: {", with: "pii: {names_file: missing.txt, "))) {
            XCTAssertTrue("\($0)".contains("pii.names_file"), "\($0)")
        }
    }
}

