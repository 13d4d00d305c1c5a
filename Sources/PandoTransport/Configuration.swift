import Foundation
import NIOCore
import NIOSSL
import PandoCertificates
import PandoWire

/// Errors the transport surfaces to its callers, each naming the problem.
public enum TransportError: Error, CustomStringConvertible, Sendable {
    /// The coordinator refused the session (code and its reason).
    case rejected(Reject)
    /// The peer speaks another protocol version.
    case protocolVersionMismatch(local: UInt16, remote: UInt16)
    /// TLS setup or verification failed.
    case tls(String)
    /// The connection closed (or was cut) while something was expected.
    case connectionClosed(String)
    /// The peer sent something the protocol does not allow here.
    case protocolViolation(String)
    /// An object transfer failed (digest or size mismatch, refusal).
    case transferFailed(String)
    /// Configuration is unusable (missing files, bad names).
    case configuration(String)

    public var description: String {
        switch self {
        case .rejected(let r):
            // The reason is peer text (up to 4 KiB on the wire): cap it for logs.
            let reason = r.reason.count <= 300 ? r.reason : String(r.reason.prefix(300)) + "…"
            return "coordinator rejected the session (\(r.code.rawValue)): \(reason)"
        case .protocolVersionMismatch(let l, let r):
            return "protocol version mismatch: this side speaks \(l), the peer speaks \(r); upgrade the older side"
        case .tls(let s): return "TLS: \(s)"
        case .connectionClosed(let s): return "connection closed: \(s)"
        case .protocolViolation(let s): return "protocol violation: \(s)"
        case .transferFailed(let s): return "transfer failed: \(s)"
        case .configuration(let s): return "configuration: \(s)"
        }
    }
}

/// Coordinator side: where to listen and which certificates to use.
///
/// There is no plaintext option: every connection is mutual TLS 1.3 with P-256 ECDSA (``TLSPolicy``).
public struct CoordinatorTransportConfiguration: Sendable {
    public var host: String
    public var port: Int
    /// Coordinator certificate (PEM), issued by `pando certs issue-coordinator`.
    public var certificatePath: String
    public var privateKeyPath: String
    /// District CA certificate (PEM); clients must chain to it.
    public var caCertificatePath: String
    /// CRL written by `pando certs revoke` (re-read whenever it changes). Required: a missing CRL rejects every school.
    public var revocationListPath: String
    /// Keeps the highest CRL number accepted, so that after a restart an older `crl.pem` put
    /// back is still refused (the coordinator uses its state folder). nil: memory only.
    public var revocationNumberPath: String?
    /// Interval the coordinator asks clients to heartbeat at.
    public var heartbeatInterval: TimeAmount
    /// A connection that delivers no bytes at all for this long is closed (progress-aware: any frame resets it).
    public var idleTimeout: TimeAmount
    /// Time allowed from TCP accept to a valid `hello` (TLS included).
    public var handshakeTimeout: TimeAmount
    public var limits: WireLimits
    public var softwareVersion: WireToken
    /// Protocol versions accepted (default: this build's).
    public var supportedProtocolVersions: [UInt16]
    /// Most school sessions at once (connections that completed TLS and `hello`); a school
    /// beyond it is refused with `busy` and retries with backoff.
    public var maxConnections: Int
    /// Most connections still in TLS or `hello` at once; when full, the oldest is closed to make
    /// room, so unauthenticated sockets can never lock schools out.
    public var maxPendingHandshakes: Int
    /// Most connections in TLS or `hello` from one IP address; more are closed at accept.
    public var maxPendingHandshakesPerAddress: Int
    /// How often live sessions' certificates are re-checked (revocation, expiry); one that
    /// fails is closed.
    public var revalidationInterval: TimeAmount = .seconds(5)

    public init(host: String = "0.0.0.0", port: Int = 7443, certificatePath: String, privateKeyPath: String,
                caCertificatePath: String, revocationListPath: String,
                heartbeatInterval: TimeAmount = .seconds(10), idleTimeout: TimeAmount = .seconds(60),
                handshakeTimeout: TimeAmount = .seconds(10), limits: WireLimits = .default,
                softwareVersion: WireToken = PandoTransportInfo.softwareVersion,
                supportedProtocolVersions: [UInt16] = [PandoProtocol.version], maxConnections: Int = 1024,
                maxPendingHandshakes: Int = 256, maxPendingHandshakesPerAddress: Int = 16) {
        self.host = host
        self.port = port
        self.certificatePath = certificatePath
        self.privateKeyPath = privateKeyPath
        self.caCertificatePath = caCertificatePath
        self.revocationListPath = revocationListPath
        self.heartbeatInterval = heartbeatInterval
        self.idleTimeout = idleTimeout
        self.handshakeTimeout = handshakeTimeout
        self.limits = limits
        self.softwareVersion = softwareVersion
        self.supportedProtocolVersions = supportedProtocolVersions
        self.maxConnections = maxConnections
        self.maxPendingHandshakes = maxPendingHandshakes
        self.maxPendingHandshakesPerAddress = maxPendingHandshakesPerAddress
    }

    /// Conventional paths inside a `pando certs` folder.
    public static func fromCertificateFolder(_ dir: String, host: String = "0.0.0.0", port: Int = 7443) -> Self {
        let d = URL(fileURLWithPath: dir)
        return Self(host: host, port: port,
                    certificatePath: d.appendingPathComponent("coordinator/coordinator.pem").path,
                    privateKeyPath: d.appendingPathComponent("coordinator/coordinator-key.pem").path,
                    caCertificatePath: d.appendingPathComponent("ca.pem").path,
                    revocationListPath: d.appendingPathComponent("crl.pem").path)
    }
}

/// School side: whom to dial and with which certificate.
public struct SchoolTransportConfiguration: Sendable {
    /// Coordinator address to connect to (name or IP).
    public var coordinatorHost: String
    public var port: Int
    /// Name the coordinator certificate must carry (SNI + host-name check). Defaults to `coordinatorHost`.
    public var serverName: String?
    public var certificatePath: String
    public var privateKeyPath: String
    public var caCertificatePath: String
    /// The district CRL (`crl.pem` of the school bundle), checked against the coordinator's
    /// certificate so a retired (e.g. leaked) coordinator certificate is refused. If set, the
    /// file must exist. `nil` skips the check (not recommended).
    public var revocationListPath: String?
    /// Keeps the highest CRL number accepted across restarts (the school agent uses its cache). nil: memory only.
    public var revocationNumberPath: String?
    public var connectTimeout: TimeAmount
    /// Silence after which the client gives up on the connection (the coordinator acks every heartbeat).
    public var idleTimeout: TimeAmount
    /// Heartbeat period used if the coordinator does not say otherwise (it does, in `welcome`).
    public var heartbeatInterval: TimeAmount
    public var backoff: Backoff
    public var limits: WireLimits
    public var softwareVersion: WireToken
    /// Protocol version announced in `hello` (only tests change it).
    var protocolVersion: UInt16 = PandoProtocol.version

    public init(coordinatorHost: String, port: Int = 7443, serverName: String? = nil, certificatePath: String,
                privateKeyPath: String, caCertificatePath: String, revocationListPath: String? = nil,
                connectTimeout: TimeAmount = .seconds(15),
                idleTimeout: TimeAmount = .seconds(60), heartbeatInterval: TimeAmount = .seconds(10),
                backoff: Backoff = Backoff(), limits: WireLimits = .default,
                softwareVersion: WireToken = PandoTransportInfo.softwareVersion) {
        self.coordinatorHost = coordinatorHost
        self.port = port
        self.serverName = serverName
        self.certificatePath = certificatePath
        self.privateKeyPath = privateKeyPath
        self.caCertificatePath = caCertificatePath
        self.revocationListPath = revocationListPath
        self.connectTimeout = connectTimeout
        self.idleTimeout = idleTimeout
        self.heartbeatInterval = heartbeatInterval
        self.backoff = backoff
        self.limits = limits
        self.softwareVersion = softwareVersion
    }

    /// Conventional paths inside a school bundle folder (`schools/<ID>/` from `pando certs issue-school`).
    public static func fromSchoolFolder(_ dir: String, coordinatorHost: String, port: Int = 7443) -> Self {
        let d = URL(fileURLWithPath: dir)
        return Self(coordinatorHost: coordinatorHost, port: port,
                    certificatePath: d.appendingPathComponent("school.pem").path,
                    privateKeyPath: d.appendingPathComponent("school-key.pem").path,
                    caCertificatePath: d.appendingPathComponent("ca.pem").path,
                    revocationListPath: d.appendingPathComponent("crl.pem").path)
    }
}

public enum PandoTransportInfo {
    public static let softwareVersion: WireToken = "pando-0.1.0"
}

/// Jittered exponential backoff ("equal jitter"): attempt n waits uniformly in
/// [c/2, c] where c = min(maximum, initial × multiplierⁿ⁻¹).
public struct Backoff: Sendable, Equatable {
    public var initial: Duration
    public var maximum: Duration
    public var multiplier: Double

    public init(initial: Duration = .milliseconds(500), maximum: Duration = .seconds(60), multiplier: Double = 2) {
        self.initial = initial
        self.maximum = maximum
        self.multiplier = multiplier
    }

    /// Delay before reconnect attempt `attempt` (1-based).
    public func delay<R: RandomNumberGenerator>(attempt: Int, using rng: inout R) -> Duration {
        let base = Self.seconds(initial) * pow(multiplier, Double(max(0, attempt - 1)))
        let cap = min(Self.seconds(maximum), base)
        let s = cap / 2 + Double.random(in: 0...(cap / 2), using: &rng)
        return .nanoseconds(Int64(s * 1e9))
    }

    public func delay(attempt: Int) -> Duration {
        var g = SystemRandomNumberGenerator()
        return delay(attempt: attempt, using: &g)
    }

    static func seconds(_ d: Duration) -> Double {
        Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18
    }
}

/// The TLS settings both ends use: TLS 1.3 only, P-256 ECDSA with SHA-256 as the only
/// handshake signature algorithm (what `pando certs` issues). A peer with any other key
/// cannot complete a handshake, whatever certificates it presents.
enum TLSPolicy {
    static let signatureAlgorithms: [SignatureAlgorithm] = [.ecdsaSecp256R1Sha256]

    static func apply(to tls: inout TLSConfiguration) {
        tls.minimumTLSVersion = .tlsv13
        tls.maximumTLSVersion = .tlsv13
        tls.verifySignatureAlgorithms = signatureAlgorithms
        tls.signingSignatureAlgorithms = signatureAlgorithms
    }
}

enum TLSFiles {
    static func certificate(_ path: String, what: String) throws -> NIOSSLCertificate {
        guard FileManager.default.fileExists(atPath: path) else { throw TransportError.configuration("\(what) \(path) does not exist") }
        do { return try NIOSSLCertificate(file: path, format: .pem) } catch {
            throw TransportError.configuration("\(what) \(path) is not a PEM certificate")
        }
    }

    static func key(_ path: String, what: String) throws -> NIOSSLPrivateKey {
        guard FileManager.default.fileExists(atPath: path) else { throw TransportError.configuration("\(what) \(path) does not exist") }
        if let problem = PrivateKeyFile.permissionProblem(path: path) { throw TransportError.configuration("\(what): \(problem)") }
        do { return try NIOSSLPrivateKey(file: path, format: .pem) } catch {
            // Never include key material in errors or logs.
            throw TransportError.configuration("\(what) \(path) is not a PEM private key")
        }
    }

    /// A reason for a log line: at most 300 characters, whatever produced it.
    static func loggable(_ s: String) -> String {
        s.count <= 300 ? s : String(s.prefix(300)) + "…"
    }

    /// What went wrong in a failed handshake, seen from the coordinator: about the client's side.
    static func describeHandshakeFailure(_ error: Error) -> String {
        let text = String(describing: error)
        if text.contains("UNSUPPORTED_PROTOCOL") || text.contains("PROTOCOL_VERSION") {
            return "no common TLS version (the coordinator speaks TLS 1.3 only) (\(text))"
        }
        if text.contains("NO_COMMON_SIGNATURE_ALGORITHMS") || text.contains("WRONG_SIGNATURE_TYPE") || text.contains("SIGNATURE") {
            return "no acceptable signature algorithm (the client's key is not P-256 ECDSA?) (\(text))"
        }
        if text.contains("PEER_DID_NOT_RETURN_A_CERTIFICATE") { return "the client presented no certificate (\(text))" }
        if text.contains("CERTIFICATE_VERIFY_FAILED") {
            return "the client's certificate was refused (the line before says why) (\(text))"
        }
        return text
    }

    /// Maps NIOSSL errors to a sentence a school IT person can act on.
    static func explain(_ error: Error, serverName: String? = nil) -> String {
        let text = String(describing: error)
        if text.contains("failedToValidateHostname") || text.contains("hostname") {
            return "the coordinator's certificate does not name \(serverName ?? "the host dialled") (\(text))"
        }
        if text.contains("NO_COMMON_SIGNATURE_ALGORITHMS") || text.contains("WRONG_SIGNATURE_TYPE") {
            return "no common signature algorithm: Pando accepts only P-256 ECDSA certificates (\(text))"
        }
        if text.contains("CERTIFICATE_VERIFY_FAILED") {
            return "the coordinator's certificate does not chain to the district CA or has expired (\(text))"
        }
        if text.contains("PEER_DID_NOT_RETURN_A_CERTIFICATE") {
            return "the client presented no certificate (\(text))"
        }
        if text.contains("ALERT_CERTIFICATE") || text.contains("ALERT_BAD_CERTIFICATE") || text.contains("ALERT_UNKNOWN_CA")
            || text.contains("ALERT_HANDSHAKE_FAILURE")
        {
            return "the coordinator refused this school's certificate (unknown CA, expired or revoked; the coordinator log names the reason) (\(text))"
        }
        if text.contains("UNSUPPORTED_PROTOCOL") || text.contains("TLSV1_ALERT_PROTOCOL_VERSION") {
            return "no common TLS version: Pando requires TLS 1.3 (\(text))"
        }

        if text.contains("uncleanShutdown") || text.contains("ioOnClosedChannel") {
            return "the coordinator closed the connection without a TLS close (\(text)); if this happens during the handshake the coordinator refused this school's certificate — its log names the reason"
        }
        return text
    }
}
