import Crypto
import Foundation

/// Who masks with whom and who holds whose shares.
public enum SecAggTopology: Sendable, Hashable, Codable {
    /// Every pair of schools (Bonawitz et al. 2017): n − 1 neighbours each.
    case complete
    /// SecAgg+ (Bell et al. 2020): a Harary graph H(k, n) laid on a pseudo-random cyclic
    /// order of the roster, so every school has exactly k neighbours (k rounded up to even);
    /// falls back to the complete graph when k ≥ n − 1.
    case harary(degree: Int)
}

/// A symmetric neighbour relation over roster positions 0..<n, identical for every party
/// that knows (topology, n, public round seed).
///
/// Harary construction: shuffle 0..<n with a Fisher–Yates pass driven by an AES-CTR
/// keystream keyed by HKDF(round seed, federation, round, n), place the nodes on a cycle
/// in that order, and join each to the k/2 nearest on either side. This is k-regular and
/// k-connected; the shuffle keeps a school's neighbours unpredictable before the round
/// seed is fixed, which is what SecAgg+'s analysis needs of its random graph.
public struct NeighbourGraph: Sendable, Hashable {
    public let size: Int
    public let topology: SecAggTopology
    /// Sorted neighbour positions of each node (never the node itself).
    private let adjacency: [[Int]]

    public init(size: Int, topology: SecAggTopology, roundSeed: [UInt8], context: SecAggContext) throws {
        guard size >= 2 else { throw SecAggError.invalidConfiguration("a round needs at least 2 schools, got \(size)") }
        self.size = size
        self.topology = topology
        switch topology {
        case .complete:
            adjacency = (0..<size).map { u in (0..<size).filter { $0 != u } }
        case .harary(let degree):
            guard degree >= 2 else { throw SecAggError.invalidConfiguration("neighbour degree must be ≥ 2, got \(degree)") }
            guard roundSeed.count >= 16 else { throw SecAggError.invalidConfiguration("round seed must be at least 16 bytes") }
            let half = (degree + 1) / 2
            if 2 * half >= size - 1 {
                adjacency = (0..<size).map { u in (0..<size).filter { $0 != u } }
                return
            }
            var w = SecAggByteWriter()
            w.append(string: context.federationID)
            w.append(context.round)
            w.append(UInt64(size))
            let key = HKDF<SHA256>.deriveKey(inputKeyMaterial: SymmetricKey(data: roundSeed),
                                             salt: Array("pando-secagg-v1".utf8),
                                             info: Array("pando-secagg-v1/neighbour-graph".utf8) + w.bytes,
                                             outputByteCount: 32)
            var rng = KeystreamGenerator(seed: MaskSeed(key: key))
            var order = Array(0..<size)
            for i in stride(from: size - 1, to: 0, by: -1) { order.swapAt(i, rng.uniform(below: i + 1)) }
            var sets = [Set<Int>](repeating: [], count: size)
            for p in 0..<size {
                for d in 1...half {
                    let a = order[p], b = order[(p + d) % size]
                    sets[a].insert(b)
                    sets[b].insert(a)
                }
            }
            adjacency = sets.map { $0.sorted() }
        }
    }

    /// Sorted neighbour positions of `node`.
    public func neighbours(of node: Int) -> [Int] { adjacency[node] }

    public func areNeighbours(_ a: Int, _ b: Int) -> Bool {
        a != b && adjacency[a].contains(b)
    }

    /// Smallest number of neighbours any node has (k, or n − 1 when complete).
    public var minimumDegree: Int { adjacency.map(\.count).min() ?? 0 }
}
