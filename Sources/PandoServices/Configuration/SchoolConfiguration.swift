import Foundation
import PandoData
import PandoFederation
import PandoLedger
import PandoTraining
import PandoTransport

/// Everything `pando-client --config FILE` reads (YAML).
///
/// ```yaml
/// school:
///   data: data/comments.csv          # .csv, .tsv or .jsonl; never leaves this machine
///   text_column: text
///   label_column: label
///   validation_fraction: 0.1         # or  validation: data/comments.val.csv
/// federation:                        # as the district announced it
///   id: riverside-question-types     # recorded in every entry of the school's log
///   task: classification
///   labels: [ABBR, DESC, ENTY, HUM, LOC, NUM]
///   base_model: ../models/default    # the shared encoder (the school rebuilds the base version from it)
///   # trust_version: <sha256>        # only to join a federation past versions this school has not seen
/// coordinator: {host: pando.district.example, port: 7443}
/// tls:
///   folder: certs/lincoln-high       # school.pem, school-key.pem, ca.pem, crl.pem
/// cache: pando-cache                 # downloaded global versions, outgoing updates, the school log
/// pii:                               # PII is replaced before tokenisation; on unless enabled: false
///   names_file: staff-and-students.txt  # more names to replace, one per line (the built-in lists stay)
///   student_id_patterns: ['\bLHS-\d{6}\b']  # instead of the default student-ID patterns
/// privacy:                           # optional: this school's own differential-privacy budget
///   target_epsilon: 8                # over every round it ever takes part in; rounds beyond it are declined
///   delta: 1.0e-5
///   max_gradient_norm: 1.0           # per-example clip (else the plan's)
/// secure_aggregation: {required: true, min_survivors: 3}  # optional: train only in rounds the coordinator cannot read one by one
/// ```
/// Relative paths are relative to the configuration file's folder.
public struct SchoolConfiguration: Sendable {
    public var data: URL
    public var validation: URL?
    public var validationFraction = 0.1
    public var format: DataFormat
    /// The federation's label names in output order (`["score"]` for regression).
    public var labels: [String]
    /// The federation's id as the district announced it (`federation.id`), recorded in every
    /// entry of the school's log so the log says which federation each update was for.
    public var federationID: String?
    public var baseModel: URL
    /// A version id (SHA-256) this school accepts without following its lineage to the base
    /// model (`federation.trust_version`): for a school joining a federation whose rounds it did
    /// not see, with the id the district vouches for. Otherwise the first version a school
    /// accepts is the base model it rebuilds from its own copy.
    public var trustVersion: String?
    public var transport: SchoolTransportConfiguration
    public var cache: URL
    /// The school's own record of every update it sent.
    public var log: URL
    public var threads: Int?
    /// The school's differential-privacy budget (`privacy:`); nil: the school takes rounds
    /// with or without DP, and accounts and reports ε for those with it.
    public var privacy: SchoolPrivacyBudget?
    /// PII scrubbing of the school's text before tokenisation (`pii:`); on by default.
    public var pii = PIIOptions()
    /// Whether this school requires secure aggregation (`secure_aggregation:`).
    public var secureAggregation = SchoolSecureAggregationPolicy()

    public init(data: URL, format: DataFormat, labels: [String], baseModel: URL, transport: SchoolTransportConfiguration,
                cache: URL, log: URL? = nil, federationID: String? = nil) {
        self.data = data
        self.format = format
        self.labels = labels
        self.federationID = federationID
        self.baseModel = baseModel
        self.transport = transport
        self.cache = cache
        self.log = log ?? cache.appendingPathComponent("school-log.jsonl")
    }

    public var task: TaskKind { format.task }

    /// Reads and checks `url`; errors name the file and the field.
    public static func load(from url: URL) throws -> SchoolConfiguration {
        let file = try ConfigurationFile.load(SchoolFile.self, from: url)
        let s = file.school, f = file.federation, c = file.coordinator, t = file.tls
        func bad(_ field: String, _ why: String) -> ConfigurationError { ConfigurationError(file: url.path, field: field, why) }
        var format = DataFormat(task: f.task)
        format.textColumn = s.text_column ?? format.textColumn
        format.labelColumn = s.label_column ?? format.labelColumn
        format.multiLabelDelimiter = s.label_delimiter ?? format.multiLabelDelimiter
        format.policy = s.on_bad_rows ?? .fail
        guard let federationID = f.id, !federationID.isEmpty else {
            throw bad("federation.id", "missing: give the federation id the district announced (the coordinator's federation.id); the school's log records it")
        }
        let labels = f.task == .regression ? ["score"] : (f.labels ?? [])
        if f.task != .regression, labels.count < f.task.minimumLabels {
            throw bad("federation.labels", "list the federation's label names, in the district's order")
        }
        let transport: SchoolTransportConfiguration
        if let folder = t.folder {
            var cfg = SchoolTransportConfiguration.fromSchoolFolder(resolve(folder, relativeTo: url).path,
                                                                  coordinatorHost: c.host, port: c.port ?? 7443)
            if let v = t.certificate { cfg.certificatePath = resolve(v, relativeTo: url).path }
            if let v = t.key { cfg.privateKeyPath = resolve(v, relativeTo: url).path }
            if let v = t.ca { cfg.caCertificatePath = resolve(v, relativeTo: url).path }
            if let v = t.crl { cfg.revocationListPath = resolve(v, relativeTo: url).path }
            transport = cfg
        } else {
            guard let cert = t.certificate else { throw bad("tls.certificate", "missing (or give tls.folder)") }
            guard let key = t.key else { throw bad("tls.key", "missing (or give tls.folder)") }
            guard let ca = t.ca else { throw bad("tls.ca", "missing (or give tls.folder)") }
            transport = SchoolTransportConfiguration(
                coordinatorHost: c.host, port: c.port ?? 7443, certificatePath: resolve(cert, relativeTo: url).path,
                privateKeyPath: resolve(key, relativeTo: url).path, caCertificatePath: resolve(ca, relativeTo: url).path,
                revocationListPath: t.crl.map { resolve($0, relativeTo: url).path })
        }
        var config = SchoolConfiguration(
            data: resolve(s.data, relativeTo: url), format: format, labels: labels,
            baseModel: resolve(f.base_model, relativeTo: url), transport: transport,
            cache: resolve(file.cache ?? "pando-cache", relativeTo: url),
            log: file.log.map { resolve($0, relativeTo: url) }, federationID: federationID)
        config.transport.serverName = c.server_name
        config.validation = s.validation.map { resolve($0, relativeTo: url) }
        config.validationFraction = s.validation_fraction ?? config.validationFraction
        config.threads = file.threads
        if let v = f.trust_version {
            guard Digest.isSHA256(v) else { throw bad("federation.trust_version", "'\(v)' is not a version id (64 lower-case hex digits, the SHA-256 of its model.safetensors)") }
            config.trustVersion = v
        }
        guard config.validationFraction >= 0, config.validationFraction < 1 else {
            throw bad("school.validation_fraction", "must be in [0, 1)")
        }
        if let p = c.port, !(1...65535).contains(p) { throw bad("coordinator.port", "must be 1–65535") }
        if let p = file.pii {
            config.pii.enabled = p.enabled ?? true
            config.pii.namesFile = p.names_file.map { resolve($0, relativeTo: url) }
            config.pii.studentIDPatterns = p.student_id_patterns
            if let f = config.pii.namesFile, !FileManager.default.fileExists(atPath: f.path) {
                throw bad("pii.names_file", "\(f.path): no such file")
            }
            do { _ = try config.pii.scrubber() } catch { throw bad("pii.student_id_patterns", "\(error)") }
        }
        if let p = file.privacy {
            guard p.target_epsilon > 0, p.target_epsilon.isFinite else { throw bad("privacy.target_epsilon", "must be a positive number") }
            let delta = p.delta ?? 1e-5
            guard delta > 0, delta < 1 else { throw bad("privacy.delta", "must be in (0, 1)") }
            if let g = p.max_gradient_norm, !(g > 0 && g <= 1e6) { throw bad("privacy.max_gradient_norm", "must be in (0, 1e6]") }
            config.privacy = SchoolPrivacyBudget(targetEpsilon: p.target_epsilon, delta: delta, maxGradientNorm: p.max_gradient_norm.map(Float.init))
        }
        if let a = file.secure_aggregation {
            config.secureAggregation.required = a.required ?? true
            if let m = a.min_survivors {
                guard m >= 2 else { throw bad("secure_aggregation.min_survivors", "must be at least 2") }
                config.secureAggregation.minimumSurvivors = m
            }
        }
        return config
    }
}

// MARK: File schema

struct SchoolFile: Decodable {
    var school: SchoolSection
    var federation: SchoolFederationSection
    var coordinator: AddressSection
    var tls: TLSSection
    var cache: String?
    var log: String?
    var threads: Int?
    var privacy: PrivacyBudgetSection?
    var pii: PIISection?
    var secure_aggregation: SchoolSecureAggregationSection?
    enum Keys: String, CodingKey, CaseIterable { case school, federation, coordinator, tls, cache, log, threads, privacy, pii, secure_aggregation }
    init(from decoder: Decoder) throws {
        try decoder.rejectUnknownKeys(Keys.self)
        let c = try decoder.container(keyedBy: Keys.self)
        school = try c.decode(SchoolSection.self, forKey: .school)
        federation = try c.decode(SchoolFederationSection.self, forKey: .federation)
        coordinator = try c.decode(AddressSection.self, forKey: .coordinator)
        tls = try c.decode(TLSSection.self, forKey: .tls)
        cache = try c.decodeIfPresent(String.self, forKey: .cache)
        log = try c.decodeIfPresent(String.self, forKey: .log)
        threads = try c.decodeIfPresent(Int.self, forKey: .threads)
        privacy = try c.decodeIfPresent(PrivacyBudgetSection.self, forKey: .privacy)
        pii = try c.decodeIfPresent(PIISection.self, forKey: .pii)
        secure_aggregation = try c.decodeIfPresent(SchoolSecureAggregationSection.self, forKey: .secure_aggregation)
    }
}

struct PIISection: Decodable {
    var enabled: Bool?
    var names_file: String?
    var student_id_patterns: [String]?
    enum Keys: String, CodingKey, CaseIterable { case enabled, names_file, student_id_patterns }
    init(from decoder: Decoder) throws {
        try decoder.rejectUnknownKeys(Keys.self)
        let c = try decoder.container(keyedBy: Keys.self)
        enabled = try c.decodeIfPresent(Bool.self, forKey: .enabled)
        names_file = try c.decodeIfPresent(String.self, forKey: .names_file)
        student_id_patterns = try c.decodeIfPresent([String].self, forKey: .student_id_patterns)
    }
}

/// How a school scrubs PII from its text (`pii:` in school.yaml).
public struct PIIOptions: Sendable, Equatable {
    public var enabled = true
    /// Extra names, one per line, on top of the built-in lists.
    public var namesFile: URL?
    /// Student-ID patterns replacing the defaults; nil keeps them.
    public var studentIDPatterns: [String]?
    public init() {}

    /// The scrubber these options describe; throws for a pattern that does not compile or an unreadable names file.
    public func scrubber() throws -> PIIScrubber {
        var c = PIIScrubber.Configuration()
        if let p = studentIDPatterns { c.studentIDPatterns = p }
        if let f = namesFile { try c.addNames(fromFile: f.path) }
        return try PIIScrubber(configuration: c)
    }
}

struct PrivacyBudgetSection: Decodable {
    var target_epsilon: Double
    var delta: Double?
    var max_gradient_norm: Double?
    enum Keys: String, CodingKey, CaseIterable { case target_epsilon, delta, max_gradient_norm }
    init(from decoder: Decoder) throws {
        try decoder.rejectUnknownKeys(Keys.self)
        let c = try decoder.container(keyedBy: Keys.self)
        target_epsilon = try c.decode(Double.self, forKey: .target_epsilon)
        delta = try c.decodeIfPresent(Double.self, forKey: .delta)
        max_gradient_norm = try c.decodeIfPresent(Double.self, forKey: .max_gradient_norm)
    }
}

struct SchoolSection: Decodable {
    var data: String
    var text_column: String?
    var label_column: String?
    var label_delimiter: String?
    var on_bad_rows: BadRowPolicy?
    var validation: String?
    var validation_fraction: Double?
    enum Keys: String, CodingKey, CaseIterable {
        case data, text_column, label_column, label_delimiter, on_bad_rows, validation, validation_fraction
    }
    init(from decoder: Decoder) throws {
        try decoder.rejectUnknownKeys(Keys.self)
        let c = try decoder.container(keyedBy: Keys.self)
        data = try c.decode(String.self, forKey: .data)
        text_column = try c.decodeIfPresent(String.self, forKey: .text_column)
        label_column = try c.decodeIfPresent(String.self, forKey: .label_column)
        label_delimiter = try c.decodeIfPresent(String.self, forKey: .label_delimiter)
        on_bad_rows = try c.decodeIfPresent(BadRowPolicy.self, forKey: .on_bad_rows)
        validation = try c.decodeIfPresent(String.self, forKey: .validation)
        validation_fraction = try c.decodeIfPresent(Double.self, forKey: .validation_fraction)
    }
}

struct SchoolFederationSection: Decodable {
    var id: String?
    var task: TaskKind
    var labels: [String]?
    var base_model: String
    var trust_version: String?
    enum Keys: String, CodingKey, CaseIterable { case id, task, labels, base_model, trust_version }
    init(from decoder: Decoder) throws {
        try decoder.rejectUnknownKeys(Keys.self)
        let c = try decoder.container(keyedBy: Keys.self)
        id = try c.decodeIfPresent(String.self, forKey: .id)
        task = try c.decode(TaskKind.self, forKey: .task)
        labels = try c.decodeIfPresent([String].self, forKey: .labels)
        base_model = try c.decode(String.self, forKey: .base_model)
        trust_version = try c.decodeIfPresent(String.self, forKey: .trust_version)
    }
}

struct AddressSection: Decodable {
    var host: String
    var port: Int?
    var server_name: String?
    enum Keys: String, CodingKey, CaseIterable { case host, port, server_name }
    init(from decoder: Decoder) throws {
        try decoder.rejectUnknownKeys(Keys.self)
        let c = try decoder.container(keyedBy: Keys.self)
        host = try c.decode(String.self, forKey: .host)
        port = try c.decodeIfPresent(Int.self, forKey: .port)
        server_name = try c.decodeIfPresent(String.self, forKey: .server_name)
    }
}

struct TLSSection: Decodable {
    var folder: String?
    var certificate: String?
    var key: String?
    var ca: String?
    var crl: String?
    enum Keys: String, CodingKey, CaseIterable { case folder, certificate, key, ca, crl }
    init(from decoder: Decoder) throws {
        try decoder.rejectUnknownKeys(Keys.self)
        let c = try decoder.container(keyedBy: Keys.self)
        folder = try c.decodeIfPresent(String.self, forKey: .folder)
        certificate = try c.decodeIfPresent(String.self, forKey: .certificate)
        key = try c.decodeIfPresent(String.self, forKey: .key)
        ca = try c.decodeIfPresent(String.self, forKey: .ca)
        crl = try c.decodeIfPresent(String.self, forKey: .crl)
    }
}
