import Foundation

/// Byte-level byte-pair encoding as RoBERTa (and GPT-2) tokenize: text is cut into pieces by
/// GPT-2's pre-tokenization pattern, each piece's UTF-8 bytes are written as printable
/// stand-in scalars (so every byte has a token and nothing is ever unknown), and adjacent
/// symbols are merged by the rank of their pair in `merges.txt` until no ranked pair is left.
///
/// Matches Hugging Face's `RobertaTokenizer` (the Rust `tokenizers` pipeline: added tokens
/// split out first, `ByteLevel` pre-tokenizer, `BPE` model). Symbols are token ids, not
/// strings: a merge is one hash lookup of an id pair, and each piece's result is cached,
/// since real text repeats the same words.
struct ByteLevelBPE: Sendable {
    /// A token matched in raw text before pre-tokenization (Hugging Face's added tokens).
    struct AddedToken: Sendable {
        var scalars: [UInt32]
        var id: Int32
        /// Whether whitespace before (`lstrip`) or after (`rstrip`) it belongs to it.
        var lstrip: Bool
        var rstrip: Bool
    }

    let addPrefixSpace: Bool
    let unknownID: Int32?
    /// Token id of each byte's stand-in scalar, or -1 when the vocabulary lacks it.
    private let byteIDs: [Int32]
    private let merges: PairTable
    private let added: [AddedToken]        // longest first
    private let addedFirst: Set<UInt32>
    private let cache = PieceCache()

    /// - Parameters:
    ///   - vocabulary: token strings by id (holes are empty strings).
    ///   - lookup: the id of a token string, compared by scalars.
    ///   - merges: ranked pairs as (left, right) token strings, best first.
    ///   - path: the merges' file, named in errors.
    init(vocabulary: [String], lookup: (String) -> Int32?, merges: [(String, String)], added: [AddedToken],
         addPrefixSpace: Bool, unknownID: Int32?, path: String) throws {
        self.addPrefixSpace = addPrefixSpace
        self.unknownID = unknownID
        byteIDs = (0..<256).map { lookup(String(Character(Unicode.Scalar(ByteLevelAlphabet.scalar(ofByte: UInt8($0)))!))) ?? -1 }
        var table = PairTable(capacity: merges.count)
        for (rank, (left, right)) in merges.enumerated() {
            guard let a = lookup(left), let b = lookup(right) else {
                throw BertTokenizerError.unreadableFile(path: path, reason: "merge \(rank + 1) '\(left) \(right)': \(lookup(left) == nil ? left : right) is not in the vocabulary")
            }
            guard let merged = lookup(left + right) else {
                throw BertTokenizerError.unreadableFile(path: path, reason: "merge \(rank + 1) '\(left) \(right)': the merged token '\(left + right)' is not in the vocabulary")
            }
            // A pair listed twice keeps its first (best) rank, as Hugging Face's loader does.
            table.insertIfAbsent(a, b, rank: Int32(rank), merged: merged)
        }
        self.merges = table
        self.added = added.filter { !$0.scalars.isEmpty }.sorted { $0.scalars.count > $1.scalars.count }
        addedFirst = Set(self.added.map { $0.scalars[0] })
    }

    /// Token ids of `text`, without `<s>`/`</s>`.
    func encode(_ text: String) -> [Int32] {
        var scalars: [UInt32] = []
        scalars.reserveCapacity(text.utf8.count)
        for s in text.unicodeScalars { scalars.append(s.value) }
        var out: [Int32] = []
        out.reserveCapacity(scalars.count / 3 + 4)
        scalars.withUnsafeBufferPointer { all in
            var start = 0, i = 0
            let n = all.count
            while i < n {
                guard addedFirst.contains(all[i]), let token = added.first(where: { Self.matches($0.scalars, all, at: i) }) else {
                    i += 1
                    continue
                }
                var end = i
                if token.lstrip { while end > start && GPT2Pieces.kind(all[end - 1]) == .space { end -= 1 } }
                if start < end { segment(UnsafeBufferPointer(rebasing: all[start ..< end]), into: &out) }
                out.append(token.id)
                i += token.scalars.count
                if token.rstrip { while i < n && GPT2Pieces.kind(all[i]) == .space { i += 1 } }
                start = i
            }
            if start < n { segment(UnsafeBufferPointer(rebasing: all[start ..< n]), into: &out) }
        }
        return out
    }

    @inline(__always)
    private static func matches(_ token: [UInt32], _ text: UnsafeBufferPointer<UInt32>, at i: Int) -> Bool {
        guard i + token.count <= text.count else { return false }
        for k in 0 ..< token.count where text[i + k] != token[k] { return false }
        return true
    }

    /// Text between added tokens: pre-tokenize, then BPE each piece.
    private func segment(_ text: UnsafeBufferPointer<UInt32>, into out: inout [Int32]) {
        if addPrefixSpace && text.first != 0x20 {
            var spaced: [UInt32] = [0x20]
            spaced.append(contentsOf: text)
            spaced.withUnsafeBufferPointer { s in GPT2Pieces.split(s) { piece(UnsafeBufferPointer(rebasing: s[$0]), into: &out) } }
        } else {
            GPT2Pieces.split(text) { piece(UnsafeBufferPointer(rebasing: text[$0]), into: &out) }
        }
    }

    /// One pre-tokenized piece: its UTF-8 bytes, merged.
    private func piece(_ scalars: UnsafeBufferPointer<UInt32>, into out: inout [Int32]) {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(scalars.count * 2)
        for s in scalars { UTF8Bytes.append(s, to: &bytes) }
        if bytes.count == 1 {
            emit(byteIDs[Int(bytes[0])], into: &out)
            return
        }
        if let hit = cache.get(bytes) {
            out.append(contentsOf: hit)
            return
        }
        var result: [Int32] = []
        merge(bytes, into: &result)
        cache.put(bytes, result)
        out.append(contentsOf: result)
    }

    @inline(__always)
    private func emit(_ id: Int32, into out: inout [Int32]) {
        if id >= 0 { out.append(id) } else if let unknownID { out.append(unknownID) }
    }

    /// BPE over byte symbols: repeatedly merge the adjacent pair of lowest rank, leftmost
    /// first, until no adjacent pair is ranked. Symbols form a linked list and candidate
    /// pairs a min-heap keyed by (rank, position), so a long word costs O(n log n).
    private func merge(_ bytes: [UInt8], into out: inout [Int32]) {
        let n = bytes.count
        var id = [Int32](repeating: 0, count: n)
        var next = [Int32](repeating: -1, count: n)
        var prev = [Int32](repeating: -1, count: n)
        var alive = [Bool](repeating: true, count: n)
        for i in 0..<n {
            id[i] = byteIDs[Int(bytes[i])]
            next[i] = i + 1 < n ? Int32(i + 1) : -1
            prev[i] = Int32(i - 1)
        }
        var heap = MinHeap()
        func consider(_ left: Int32) {
            guard left >= 0, next[Int(left)] >= 0 else { return }
            let a = id[Int(left)], b = id[Int(next[Int(left)])]
            guard a >= 0, b >= 0, let m = merges.lookup(a, b) else { return }
            heap.push(UInt64(UInt32(m.rank)) << 32 | UInt64(UInt32(left)))
        }
        for i in 0..<(n - 1) { consider(Int32(i)) }
        while let top = heap.pop() {
            let rank = Int32(truncatingIfNeeded: top >> 32), left = Int(UInt32(truncatingIfNeeded: top))
            guard alive[left], next[left] >= 0 else { continue }
            let right = Int(next[left])
            // A stale entry: the pair at this position changed since it was pushed.
            guard id[left] >= 0, id[right] >= 0, let m = merges.lookup(id[left], id[right]), m.rank == rank else { continue }
            id[left] = m.merged
            alive[right] = false
            next[left] = next[right]
            if next[right] >= 0 { prev[Int(next[right])] = Int32(left) }
            consider(prev[left])
            consider(Int32(left))
        }
        var i: Int32 = 0
        while i >= 0 {
            emit(id[Int(i)], into: &out)
            i = next[Int(i)]
        }
    }
}

/// GPT-2's reversible map from the 256 byte values to printable scalars: the printable
/// Latin-1 bytes stand for themselves, the other 68 take U+0100 onwards in byte order.
enum ByteLevelAlphabet {
    private static func printable(_ b: Int) -> Bool { (0x21...0x7E).contains(b) || (0xA1...0xAC).contains(b) || (0xAE...0xFF).contains(b) }

    private static let scalars: [UInt32] = {
        var out = [UInt32](repeating: 0, count: 256)
        var extra: UInt32 = 0
        for b in 0..<256 {
            if printable(b) { out[b] = UInt32(b) } else { out[b] = 256 + extra; extra += 1 }
        }
        return out
    }()

    /// The stand-in scalar of byte `b`.
    static func scalar(ofByte b: UInt8) -> UInt32 { scalars[Int(b)] }

    /// The byte a stand-in scalar stands for, or nil for any other scalar.
    static func byte(of scalar: UInt32) -> UInt8? {
        if scalar < 256 { return printable(Int(scalar)) ? UInt8(scalar) : nil }
        return bytesOfExtras[scalar]
    }

    private static let bytesOfExtras: [UInt32: UInt8] = {
        var map: [UInt32: UInt8] = [:]
        for b in 0..<256 where !printable(b) { map[scalars[b]] = UInt8(b) }
        return map
    }()
}

/// GPT-2's pre-tokenization pattern
/// `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`,
/// written out as a scan (leftmost alternative wins at each position, runs are greedy).
enum GPT2Pieces {
    enum Kind: UInt8 { case letter, number, space, other }

    private static let ascii: [Kind] = (0..<128).map { kindSlow(UInt32($0)) }

    @inline(__always)
    static func kind(_ c: UInt32) -> Kind { c < 128 ? ascii[Int(c)] : kindSlow(c) }

    /// `\p{L}`, `\p{N}` and `\s` (Unicode White_Space) as the Rust regex crate defines them.
    private static func kindSlow(_ c: UInt32) -> Kind {
        guard let s = Unicode.Scalar(c) else { return .other }
        if s.properties.isWhitespace { return .space }
        switch s.properties.generalCategory {
        case .uppercaseLetter, .lowercaseLetter, .titlecaseLetter, .modifierLetter, .otherLetter: return .letter
        case .decimalNumber, .letterNumber, .otherNumber: return .number
        default: return .other
        }
    }

    /// Calls `piece` with each piece's range, in order; the pieces tile the text.
    static func split(_ s: UnsafeBufferPointer<UInt32>, _ piece: (Range<Int>) -> Void) {
        let n = s.count
        var i = 0
        func run(from j: Int, _ k: Kind) -> Int {
            var e = j
            while e < n && kind(s[e]) == k { e += 1 }
            return e
        }
        while i < n {
            let c = s[i]
            // 's 't 'm 'd, then 're 've 'll (ASCII apostrophe and lowercase letters only).
            if c == 0x27 && i + 1 < n {
                let a = s[i + 1]
                if a == 0x73 || a == 0x74 || a == 0x6D || a == 0x64 {
                    piece(i ..< i + 2); i += 2; continue
                }
                if i + 2 < n {
                    let b = s[i + 2]
                    if (a == 0x72 && b == 0x65) || (a == 0x76 && b == 0x65) || (a == 0x6C && b == 0x6C) {
                        piece(i ..< i + 3); i += 3; continue
                    }
                }
            }
            // An optional ASCII space, then a run of letters, of numbers or of other symbols.
            if c == 0x20 && i + 1 < n {
                let k = kind(s[i + 1])
                if k != .space {
                    let e = run(from: i + 1, k)
                    piece(i ..< e); i = e; continue
                }
            }
            let k = kind(c)
            if k != .space {
                let e = run(from: i, k)
                piece(i ..< e); i = e; continue
            }
            // Whitespace: all of it at the end of the text; else all but the last scalar, which
            // may start the next piece (" word"); a single one before a non-space stands alone.
            let e = run(from: i, .space)
            if e == n || e - i == 1 {
                piece(i ..< e); i = e
            } else {
                piece(i ..< e - 1); i = e - 1
            }
        }
    }
}

enum UTF8Bytes {
    @inline(__always)
    static func append(_ c: UInt32, to out: inout [UInt8]) {
        switch c {
        case 0..<0x80: out.append(UInt8(c))
        case 0x80..<0x800:
            out.append(UInt8(0xC0 | (c >> 6))); out.append(UInt8(0x80 | (c & 0x3F)))
        case 0x800..<0x10000:
            out.append(UInt8(0xE0 | (c >> 12))); out.append(UInt8(0x80 | ((c >> 6) & 0x3F))); out.append(UInt8(0x80 | (c & 0x3F)))
        default:
            out.append(UInt8(0xF0 | (c >> 18))); out.append(UInt8(0x80 | ((c >> 12) & 0x3F)))
            out.append(UInt8(0x80 | ((c >> 6) & 0x3F))); out.append(UInt8(0x80 | (c & 0x3F)))
        }
    }
}

/// Open-addressing table from a pair of token ids to the merge's rank and result.
struct PairTable: Sendable {
    private var keys: [UInt64]
    private var values: [UInt64]
    private var mask: Int
    private static let empty = UInt64.max

    init(capacity: Int) {
        var size = 16
        while size < capacity * 2 { size <<= 1 }
        keys = [UInt64](repeating: Self.empty, count: size)
        values = [UInt64](repeating: 0, count: size)
        mask = size - 1
    }

    @inline(__always)
    private static func slot(_ key: UInt64, _ mask: Int) -> Int {
        Int(truncatingIfNeeded: (key &* 0x9E37_79B9_7F4A_7C15) >> 29) & mask
    }

    mutating func insertIfAbsent(_ a: Int32, _ b: Int32, rank: Int32, merged: Int32) {
        let key = UInt64(UInt32(a)) << 32 | UInt64(UInt32(b))
        var s = Self.slot(key, mask)
        while keys[s] != Self.empty {
            if keys[s] == key { return }
            s = (s + 1) & mask
        }
        keys[s] = key
        values[s] = UInt64(UInt32(rank)) << 32 | UInt64(UInt32(merged))
    }

    @inline(__always)
    func lookup(_ a: Int32, _ b: Int32) -> (rank: Int32, merged: Int32)? {
        let key = UInt64(UInt32(a)) << 32 | UInt64(UInt32(b))
        var s = Self.slot(key, mask)
        while true {
            let k = keys[s]
            if k == key {
                let v = values[s]
                return (Int32(truncatingIfNeeded: v >> 32), Int32(truncatingIfNeeded: v))
            }
            if k == Self.empty { return nil }
            s = (s + 1) & mask
        }
    }
}

/// A binary min-heap of packed (rank, position) keys.
struct MinHeap {
    private var items: [UInt64] = []

    mutating func push(_ x: UInt64) {
        items.append(x)
        var i = items.count - 1
        while i > 0 {
            let p = (i - 1) / 2
            guard items[p] > items[i] else { break }
            items.swapAt(p, i)
            i = p
        }
    }

    mutating func pop() -> UInt64? {
        guard let top = items.first else { return nil }
        let last = items.removeLast()
        if !items.isEmpty {
            items[0] = last
            var i = 0
            while true {
                let l = 2 * i + 1, r = l + 1
                var m = i
                if l < items.count && items[l] < items[m] { m = l }
                if r < items.count && items[r] < items[m] { m = r }
                if m == i { break }
                items.swapAt(i, m)
                i = m
            }
        }
        return top
    }
}

/// The merged ids of pieces already seen, shared by copies of a tokenizer and threads.
/// Bounded: emptied when it reaches `limit` entries (a corpus's vocabulary fits easily).
final class PieceCache: @unchecked Sendable {
    private var entries: [[UInt8]: [Int32]] = [:]
    private let lock = NSLock()
    private let limit = 200_000

    func get(_ key: [UInt8]) -> [Int32]? {
        lock.lock(); defer { lock.unlock() }
        return entries[key]
    }

    func put(_ key: [UInt8], _ value: [Int32]) {
        lock.lock(); defer { lock.unlock() }
        if entries.count >= limit { entries.removeAll(keepingCapacity: true) }
        entries[key] = value
    }
}
