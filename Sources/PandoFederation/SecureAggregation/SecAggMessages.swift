import Foundation

/// Coordinator → school after key advertisement: the keys of the school's neighbours that advertised (U1).
public struct SecAggKeyBundle: Sendable, Hashable, Codable {
    public var recipient: String
    public var context: SecAggContext
    public var keys: [SecAggPublicKeys]

    public init(recipient: String, context: SecAggContext, keys: [SecAggPublicKeys]) {
        self.recipient = recipient
        self.context = context
        self.keys = keys
    }
}

/// School → coordinator: the masked, encoded update. `pairedWith` lists the peers whose
/// pairwise masks are in it, so the coordinator can check that views agree.
public struct SecAggMaskedInput: Sendable, Hashable, Codable {
    public var school: String
    public var context: SecAggContext
    public var pairedWith: [String]
    public var masked: [UInt32]

    public init(school: String, context: SecAggContext, pairedWith: [String], masked: [UInt32]) {
        self.school = school
        self.context = context
        self.pairedWith = pairedWith
        self.masked = masked
    }
}

/// The two secrets a school shares: its self-mask seed b_u and its masking private key s_u.
public enum SecAggShareKind: String, Sendable, Hashable, Codable { case selfMaskSeed, maskingKey }

/// Coordinator → surviving schools: who sent masked input (reveal their self-mask seed
/// shares) and who shared keys but sent no input (reveal their masking-key shares).
public struct SecAggUnmaskRequest: Sendable, Hashable, Codable {
    public var context: SecAggContext
    public var survivors: [String]
    public var dropped: [String]

    public init(context: SecAggContext, survivors: [String], dropped: [String]) {
        self.context = context
        self.survivors = survivors
        self.dropped = dropped
    }
}

/// One share a school reveals: its share of `owner`'s secret of `kind`.
public struct SecAggRevealedShare: Sendable, Hashable, Codable {
    public var owner: String
    public var kind: SecAggShareKind
    public var share: Shamir.Share

    public init(owner: String, kind: SecAggShareKind, share: Shamir.Share) {
        self.owner = owner
        self.kind = kind
        self.share = share
    }
}

/// Contributor → coordinator: the shares it agreed to reveal.
public struct SecAggUnmaskResponse: Sendable, Hashable, Codable {
    public var school: String
    public var context: SecAggContext
    public var shares: [SecAggRevealedShare]

    public init(school: String, context: SecAggContext, shares: [SecAggRevealedShare]) {
        self.school = school
        self.context = context
        self.shares = shares
    }
}
