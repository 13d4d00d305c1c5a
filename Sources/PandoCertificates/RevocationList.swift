import Crypto
import Foundation
import SwiftASN1
import X509

/// An X.509 v2 certificate revocation list (RFC 5280 §5) signed by the district CA
/// with ECDSA P-256 / SHA-256. `openssl crl -in crl.pem -text` reads it.
public struct RevocationList: Sendable, Equatable {
    public struct Entry: Sendable, Equatable {
        /// Big-endian serial bytes in ASN.1 INTEGER form.
        public var serial: [UInt8]
        public var revokedAt: Date
        public init(serial: [UInt8], revokedAt: Date) {
            self.serial = serial
            self.revokedAt = revokedAt
        }
    }

    public var number: Int
    public var thisUpdate: Date
    public var nextUpdate: Date
    public var entries: [Entry]

    public init(number: Int, thisUpdate: Date, nextUpdate: Date, entries: [Entry]) {
        self.number = number
        self.thisUpdate = thisUpdate
        self.nextUpdate = nextUpdate
        self.entries = entries
    }

    /// Revocation date of `serial`, if it is listed.
    public func revocationDate(of serial: Certificate.SerialNumber) -> Date? {
        let bytes = Array(serial.bytes)
        return entries.first { $0.serial == bytes }?.revokedAt
    }

    static let ecdsaWithSHA256 = ASN1ObjectIdentifier("1.2.840.10045.4.3.2")
    static let crlNumberOID = ASN1ObjectIdentifier("2.5.29.20")

    // MARK: Encoding

    /// DER encoding signed by `caKey`, issued by `caCertificate`'s subject.
    public func derEncoded(caCertificate: Certificate, caKey: P256.Signing.PrivateKey) throws -> [UInt8] {
        var tbs = DER.Serializer()
        try tbs.appendConstructedNode(identifier: .sequence) { s in
            try s.serialize(1)  // v2
            try Self.serializeAlgorithm(into: &s)
            try s.serialize(caCertificate.subject)
            try s.serialize(Self.utcTime(thisUpdate))
            try s.serialize(Self.utcTime(nextUpdate))
            if !entries.isEmpty {
                try s.appendConstructedNode(identifier: .sequence) { s in
                    for e in entries {
                        try s.appendConstructedNode(identifier: .sequence) { s in
                            try s.serialize(ArraySlice(e.serial))
                            try s.serialize(Self.utcTime(e.revokedAt))
                        }
                    }
                }
            }
            try s.serialize(explicitlyTaggedWithTagNumber: 0, tagClass: .contextSpecific) { s in
                try s.appendConstructedNode(identifier: .sequence) { s in
                    try s.appendConstructedNode(identifier: .sequence) { s in
                        try s.serialize(Self.crlNumberOID)
                        var inner = DER.Serializer()
                        try inner.serialize(number)
                        try s.serialize(ASN1OctetString(contentBytes: ArraySlice(inner.serializedBytes)))
                    }
                }
            }
        }
        let tbsBytes = tbs.serializedBytes
        let signature = try caKey.signature(for: tbsBytes).derRepresentation
        var out = DER.Serializer()
        try out.appendConstructedNode(identifier: .sequence) { s in
            s.serializeRawBytes(tbsBytes)
            try Self.serializeAlgorithm(into: &s)
            try s.serialize(ASN1BitString(bytes: ArraySlice(signature)))
        }
        return out.serializedBytes
    }

    /// PEM (`-----BEGIN X509 CRL-----`).
    public func pemEncoded(caCertificate: Certificate, caKey: P256.Signing.PrivateKey) throws -> String {
        PEMDocument(type: "X509 CRL", derBytes: try derEncoded(caCertificate: caCertificate, caKey: caKey)).pemString
    }

    // MARK: Decoding

    /// Parses a PEM or DER CRL and verifies that `caCertificate` issued and signed it.
    public init(verifying bytes: [UInt8], caCertificate: Certificate) throws {
        var der = bytes
        if let text = String(bytes: bytes, encoding: .utf8), text.contains("-----BEGIN") {
            let doc = try PEMDocument(pemString: text)
            guard doc.discriminator == "X509 CRL" else {
                throw CertificateError.malformed("expected an X509 CRL PEM block, found \(doc.discriminator)")
            }
            der = doc.derBytes
        }
        let root = try DER.parse(der)
        guard case .constructed(let top) = root.content, root.identifier == .sequence else {
            throw CertificateError.malformed("CRL is not a DER SEQUENCE")
        }
        var it = top.makeIterator()
        guard let tbsNode = it.next(), let algNode = it.next(), let sigNode = it.next(), it.next() == nil else {
            throw CertificateError.malformed("CRL must have exactly three top-level elements")
        }
        try Self.checkAlgorithm(algNode)
        let signature = try ASN1BitString(derEncoded: sigNode)
        guard caCertificate.publicKey.isValidSignature(
            Array(signature.bytes), for: Array(tbsNode.encodedBytes), signatureAlgorithm: .ecdsaWithSHA256)
        else {
            throw CertificateError.malformed("CRL signature does not verify against the district CA")
        }
        guard case .constructed(let tbsChildren) = tbsNode.content else {
            throw CertificateError.malformed("CRL tbsCertList is not a SEQUENCE")
        }
        var t = tbsChildren.makeIterator()
        var node = t.next()
        if let n = node, n.identifier == .integer {
            let version = try Int(derEncoded: n)
            guard version == 1 else { throw CertificateError.malformed("unsupported CRL version \(version)") }
            node = t.next()
        }
        guard let alg2 = node else { throw CertificateError.malformed("CRL truncated") }
        try Self.checkAlgorithm(alg2)
        guard let issuerNode = t.next() else { throw CertificateError.malformed("CRL truncated") }
        let issuer = try DistinguishedName(derEncoded: issuerNode)
        guard issuer == caCertificate.subject else {
            throw CertificateError.malformed("CRL issuer \(issuer) is not the district CA \(caCertificate.subject)")
        }
        guard let thisNode = t.next() else { throw CertificateError.malformed("CRL truncated") }
        let thisUpdate = try Self.date(thisNode)
        var nextUpdate: Date? = nil
        var number: Int? = nil
        var entries: [Entry] = []
        node = t.next()
        if let n = node, n.identifier == UTCTime.defaultIdentifier || n.identifier == GeneralizedTime.defaultIdentifier {
            nextUpdate = try Self.date(n)
            node = t.next()
        }
        if let n = node, n.identifier == .sequence {
            guard case .constructed(let list) = n.content else { throw CertificateError.malformed("bad revokedCertificates") }
            for entryNode in list {
                guard case .constructed(let fields) = entryNode.content else { throw CertificateError.malformed("bad CRL entry") }
                var f = fields.makeIterator()
                guard let serialNode = f.next(), let dateNode = f.next() else { throw CertificateError.malformed("bad CRL entry") }
                let serial = try ArraySlice<UInt8>(derEncoded: serialNode)
                entries.append(Entry(serial: Array(serial), revokedAt: try Self.date(dateNode)))
            }
            node = t.next()
        }
        if let n = node, n.identifier == ASN1Identifier(tagWithNumber: 0, tagClass: .contextSpecific) {
            guard case .constructed(let wrapped) = n.content, let extSeq = Array(wrapped).first,
                case .constructed(let exts) = extSeq.content
            else { throw CertificateError.malformed("bad CRL extensions") }
            for ext in exts {
                guard case .constructed(let parts) = ext.content else { continue }
                let p = Array(parts)
                guard p.count >= 2, let oid = try? ASN1ObjectIdentifier(derEncoded: p[0]) else { continue }
                if oid == Self.crlNumberOID, let octets = try? ASN1OctetString(derEncoded: p[p.count - 1]) {
                    number = try? Int(derEncoded: DER.parse(octets.bytes))
                }
            }
        }
        // RFC 5280 §5.1.2.5 / §5.2.3: conforming CRLs carry nextUpdate and a CRL number. Both are
        // needed to refuse stale and replayed lists, so a list without them is refused.
        guard let nextUpdate else { throw CertificateError.malformed("CRL has no nextUpdate time") }
        guard let number, number > 0 else { throw CertificateError.malformed("CRL has no (positive) CRL number") }
        self.init(number: number, thisUpdate: thisUpdate, nextUpdate: nextUpdate, entries: entries)
    }

    // MARK: Helpers

    static func serializeAlgorithm(into s: inout DER.Serializer) throws {
        try s.appendConstructedNode(identifier: .sequence) { s in try s.serialize(ecdsaWithSHA256) }
    }

    static func checkAlgorithm(_ node: ASN1Node) throws {
        guard case .constructed(let parts) = node.content, let first = Array(parts).first,
            let oid = try? ASN1ObjectIdentifier(derEncoded: first), oid == ecdsaWithSHA256
        else { throw CertificateError.malformed("CRL is not signed with ecdsa-with-SHA256") }
    }

    static func utcTime(_ date: Date) throws -> UTCTime {
        var cal = Calendar(identifier: .gregorian)
        cal.timeZone = TimeZone(identifier: "UTC")!
        let c = cal.dateComponents([.year, .month, .day, .hour, .minute, .second], from: date)
        return try UTCTime(year: c.year!, month: c.month!, day: c.day!, hours: c.hour!, minutes: c.minute!, seconds: c.second!)
    }

    static func date(_ node: ASN1Node) throws -> Date {
        var c = DateComponents()
        if node.identifier == UTCTime.defaultIdentifier {
            let t = try UTCTime(derEncoded: node)
            (c.year, c.month, c.day, c.hour, c.minute, c.second) = (t.year, t.month, t.day, t.hours, t.minutes, t.seconds)
        } else {
            let t = try GeneralizedTime(derEncoded: node)
            (c.year, c.month, c.day, c.hour, c.minute, c.second) = (t.year, t.month, t.day, t.hours, t.minutes, t.seconds)
        }
        var cal = Calendar(identifier: .gregorian)
        cal.timeZone = TimeZone(identifier: "UTC")!
        guard let d = cal.date(from: c) else { throw CertificateError.malformed("bad time in CRL") }
        return d
    }
}
