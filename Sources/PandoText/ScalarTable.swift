/// Exact-match hash table from Unicode scalar sequences to token ids.
///
/// Keys are compared scalar by scalar, never by Swift `String` equality, which would treat
/// canonically equivalent spellings (precomposed "é" and "e" + U+0301) as the same key.
/// Python's `dict` compares code points, so this matches Hugging Face. Lookups take a
/// buffer slice, so the WordPiece inner loop allocates nothing.
final class ScalarTable: Sendable {
    private let keys: [UInt32]          // all keys, back to back
    private let starts: [Int]           // key i is keys[starts[i] ..< starts[i + 1]]
    private let values: [Int32]
    private let slots: [Int32]          // entry index or -1; power-of-two size
    private let mask: Int
    /// The longest key, in scalars; longer queries can never match.
    let maxKeyLength: Int

    init(entries: [([UInt32], Int32)]) {
        var keys: [UInt32] = []
        var starts: [Int] = [0]
        var values: [Int32] = []
        var maxLen = 0
        keys.reserveCapacity(entries.reduce(0) { $0 + $1.0.count })
        for (key, value) in entries {
            keys.append(contentsOf: key)
            starts.append(keys.count)
            values.append(value)
            maxLen = max(maxLen, key.count)
        }
        var size = 16
        while size < entries.count * 2 { size <<= 1 }
        var slots = [Int32](repeating: -1, count: size)
        let mask = size - 1
        for index in 0 ..< entries.count {
            let hash = keys.withUnsafeBufferPointer {
                ScalarTable.hash(UnsafeBufferPointer(rebasing: $0[starts[index] ..< starts[index + 1]]))
            }
            var slot = hash & mask
            while slots[slot] >= 0 { slot = (slot + 1) & mask }
            slots[slot] = Int32(index)
        }
        self.keys = keys
        self.starts = starts
        self.values = values
        self.slots = slots
        self.mask = mask
        self.maxKeyLength = maxLen
    }

    @inline(__always)
    static func hash(_ key: UnsafeBufferPointer<UInt32>) -> Int {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for scalar in key {
            h = (h ^ UInt64(scalar)) &* 0x0000_0100_0000_01b3
        }
        h ^= h >> 29
        return Int(truncatingIfNeeded: h)
    }

    /// The value stored for exactly this scalar sequence, or nil.
    @inline(__always)
    func lookup(_ key: UnsafeBufferPointer<UInt32>) -> Int32? {
        if key.count > maxKeyLength { return nil }
        var slot = ScalarTable.hash(key) & mask
        return keys.withUnsafeBufferPointer { stored in
            while true {
                let entry = Int(slots[slot])
                if entry < 0 { return nil }
                let start = starts[entry], end = starts[entry + 1]
                if end - start == key.count {
                    var equal = true
                    var i = 0
                    while i < key.count {
                        if stored[start + i] != key[i] { equal = false; break }
                        i += 1
                    }
                    if equal { return values[entry] }
                }
                slot = (slot + 1) & mask
            }
        }
    }

    func lookup(_ key: [UInt32]) -> Int32? {
        key.withUnsafeBufferPointer { lookup($0) }
    }
}
