import Foundation

/// The schools invited to one round, in canonical order (lexicographic over UTF-8 bytes,
/// so every platform agrees). Position p has Shamir share index p + 1.
public struct SecAggRoster: Sendable, Hashable {
    public let schools: [String]
    private let positions: [String: Int]

    public init(_ schools: [String]) throws {
        let sorted = schools.sorted(by: Self.precedes)
        var positions: [String: Int] = [:]
        for (p, s) in sorted.enumerated() {
            guard !s.isEmpty else { throw SecAggError.invalidConfiguration("empty school id") }
            guard positions.updateValue(p, forKey: s) == nil else {
                throw SecAggError.invalidConfiguration("school \(s) appears twice on the roster")
            }
        }
        self.schools = sorted
        self.positions = positions
    }

    public var count: Int { schools.count }
    public func position(of school: String) -> Int? { positions[school] }
    /// The Shamir x-coordinate of `school`'s shares: its position + 1, in 1...n.
    public func shareIndex(of school: String) -> Int? { positions[school].map { $0 + 1 } }

    /// Canonical order of school ids: lexicographic over UTF-8 bytes.
    public static func precedes(_ a: String, _ b: String) -> Bool { a.utf8.lexicographicallyPrecedes(b.utf8) }
}

/// Everything the coordinator and every school must agree on before a round starts.
public struct SecAggConfig: Sendable {
    public let context: SecAggContext
    public let roster: SecAggRoster
    public let graph: NeighbourGraph
    /// t: shares needed to reconstruct any one school's seed or key. Default ⌊k/2⌋ + 1,
    /// a strict majority of a school's k neighbours (k = n − 1 for the complete graph).
    public let threshold: Int
    /// Fewest masked inputs the coordinator may unmask, and that a school accepts in an
    /// unmasking request (a sum of very few schools reveals too much). Default t.
    public let minimumSurvivors: Int
    /// L: model values per school; masked vectors are L + 1 words (the last is the weight).
    public let vectorLength: Int
    public let encoding: FixedPointEncoding

    /// - Parameter roundSeed: public randomness for the SecAgg+ graph (≥ 16 bytes); ignored for `.complete`.
    public init(context: SecAggContext, schools: [String], topology: SecAggTopology = .complete, roundSeed: [UInt8] = [],
                threshold: Int? = nil, minimumSurvivors: Int? = nil, vectorLength: Int, encoding: FixedPointEncoding) throws {
        let roster = try SecAggRoster(schools)
        let graph = try NeighbourGraph(size: roster.count, topology: topology, roundSeed: roundSeed, context: context)
        let k = graph.minimumDegree
        let t = threshold ?? (k / 2 + 1)
        guard t >= 2, t <= k else {
            throw SecAggError.invalidConfiguration("threshold \(t) must be in 2...\(k) (the neighbour count); need ≥ 3 schools")
        }
        let m = minimumSurvivors ?? t
        guard m >= 2, m <= roster.count else {
            throw SecAggError.invalidConfiguration("minimum survivors \(m) must be in 2...\(roster.count)")
        }
        guard vectorLength >= 1 else { throw SecAggError.invalidConfiguration("vector length must be ≥ 1") }
        guard encoding.maxSchools >= roster.count else {
            throw SecAggError.invalidConfiguration("encoding is sized for \(encoding.maxSchools) schools, roster has \(roster.count)")
        }
        self.context = context
        self.roster = roster
        self.graph = graph
        self.threshold = t
        self.minimumSurvivors = m
        self.vectorLength = vectorLength
        self.encoding = encoding
    }

    public var maskedLength: Int { vectorLength + 1 }

    /// `school`'s neighbours, in canonical order.
    public func neighbours(of school: String) -> [String] {
        guard let p = roster.position(of: school) else { return [] }
        return graph.neighbours(of: p).map { roster.schools[$0] }
    }

    public func areNeighbours(_ a: String, _ b: String) -> Bool {
        guard let pa = roster.position(of: a), let pb = roster.position(of: b) else { return false }
        return graph.areNeighbours(pa, pb)
    }
}
