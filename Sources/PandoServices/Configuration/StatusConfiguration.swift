import Foundation

/// The coordinator's status listener (status page, JSON API, `/metrics`), from the
/// configuration file's `status:` section:
///
/// ```yaml
/// status:
///   listen: 127.0.0.1:9464          # host:port; loopback unless TLS and a credential are set
///   certificate: certs/status.pem   # TLS (required off loopback)
///   key: certs/status-key.pem
///   token_file: status-token        # bearer token, mode 0600 (a credential)
///   client_ca: certs/ca.pem         # or: clients must present a certificate this CA issued
/// ```
/// Bound to 127.0.0.1 by default. Any other address needs TLS and at least one credential,
/// or the configuration is refused.
public struct StatusSettings: Sendable, Equatable {
    public var host = "127.0.0.1"
    public var port = 9464
    public var certificate: URL?
    public var privateKey: URL?
    /// A file holding the bearer token clients must send (`Authorization: Bearer …`).
    public var tokenFile: URL?
    /// Clients must present a certificate issued by this CA (mutual TLS; an admin certificate).
    public var clientCA: URL?

    public init(host: String = "127.0.0.1", port: Int = 9464) {
        self.host = host
        self.port = port
    }

    /// Whether `host` names this machine only (127.0.0.0/8, ::1, localhost).
    public var isLoopback: Bool {
        host == "localhost" || host == "::1" || host.hasPrefix("127.")
    }

    /// Whether the listener speaks TLS (a certificate and key are set).
    public var usesTLS: Bool { certificate != nil }

    /// Problems a person should fix before the listener starts; errors name the field.
    func validate(file: String) throws {
        func bad(_ field: String, _ why: String) -> ConfigurationError { ConfigurationError(file: file, field: "status.\(field)", why) }
        if !(0...65535).contains(port) { throw bad("listen", "port must be 0–65535") }
        if (certificate == nil) != (privateKey == nil) { throw bad(certificate == nil ? "certificate" : "key", "certificate and key go together (TLS)") }
        if clientCA != nil && !usesTLS { throw bad("client_ca", "client certificates need TLS: set certificate and key") }
        if !isLoopback {
            guard usesTLS else {
                throw bad("listen", "\(host) is not a loopback address: the status listener is reachable from elsewhere only with TLS (set status.certificate and status.key) and a credential")
            }
            guard tokenFile != nil || clientCA != nil else {
                throw bad("listen", "\(host) is not a loopback address: set a credential, status.token_file (a bearer token in a 0600 file) or status.client_ca (admin client certificates)")
            }
        }
    }
}

struct StatusSection: Decodable {
    var listen: String?
    var certificate: String?
    var key: String?
    var token_file: String?
    var client_ca: String?
    enum Keys: String, CodingKey, CaseIterable { case listen, certificate, key, token_file, client_ca }
    init(from decoder: Decoder) throws {
        try decoder.rejectUnknownKeys(Keys.self)
        let c = try decoder.container(keyedBy: Keys.self)
        listen = try c.decodeIfPresent(String.self, forKey: .listen)
        certificate = try c.decodeIfPresent(String.self, forKey: .certificate)
        key = try c.decodeIfPresent(String.self, forKey: .key)
        token_file = try c.decodeIfPresent(String.self, forKey: .token_file)
        client_ca = try c.decodeIfPresent(String.self, forKey: .client_ca)
    }

    /// The settings, paths resolved against the configuration file's folder.
    func settings(relativeTo url: URL) throws -> StatusSettings {
        var s = StatusSettings()
        if let listen {
            // host:port, with [v6]:port for IPv6.
            let host: Substring, port: Substring
            if listen.hasPrefix("["), let close = listen.firstIndex(of: "]") {
                host = listen[listen.index(after: listen.startIndex)..<close]
                port = listen[listen.index(after: close)...].drop { $0 == ":" }
            } else if let colon = listen.lastIndex(of: ":") {
                host = listen[..<colon]
                port = listen[listen.index(after: colon)...]
            } else {
                throw ConfigurationError(file: url.path, field: "status.listen", "'\(listen)' is not host:port (e.g. 127.0.0.1:9464)")
            }
            guard !host.isEmpty, let p = Int(port) else {
                throw ConfigurationError(file: url.path, field: "status.listen", "'\(listen)' is not host:port (e.g. 127.0.0.1:9464)")
            }
            s.host = String(host)
            s.port = p
        }
        s.certificate = certificate.map { resolve($0, relativeTo: url) }
        s.privateKey = key.map { resolve($0, relativeTo: url) }
        s.tokenFile = token_file.map { resolve($0, relativeTo: url) }
        s.clientCA = client_ca.map { resolve($0, relativeTo: url) }
        return s
    }
}
