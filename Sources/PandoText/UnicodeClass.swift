import Foundation

/// Character classes exactly as Hugging Face's Python BasicTokenizer defines them, looked up
/// by code point. The Basic Multilingual Plane is tabulated once (lazily, thread-safe as a
/// global); other planes are classified on the fly.
enum UnicodeClass {
    /// Removed by `_clean_text`: U+0000, U+FFFD and "control" (category C*, except \t \n \r).
    static let drop: UInt8 = 1
    /// Turned into a space by `_clean_text`: space, \t, \n, \r and category Zs.
    static let whitespace: UInt8 = 2
    /// `_is_punctuation`: category P* or ASCII 33–47, 58–64, 91–96, 123–126.
    static let punctuation: UInt8 = 4
    /// Python `str.isspace()`: what `str.split()` splits on.
    static let pythonSpace: UInt8 = 8
    /// Category Mn, dropped by `_run_strip_accents`.
    static let nonspacingMark: UInt8 = 16
    /// Unicode Cased and Case_Ignorable, for Python's final-sigma rule in `str.lower()`.
    static let cased: UInt8 = 32
    static let caseIgnorable: UInt8 = 64

    /// The Unicode version of the reference: Python 3.11's `unicodedata` (14.0.0), which the
    /// fixtures were made with. Scalars assigned later are category Cn there, so they are
    /// dropped like other unassigned code points instead of being read with Swift's newer data.
    static let referenceUnicodeVersion = (major: 14, minor: 0)

    static let bmpFlags: [UInt8] = (0 ..< 0x10000).map { classify(UInt32($0)) }

    /// Single-scalar lowercase of each BMP scalar; `multiScalar` where the full mapping is longer.
    static let bmpLower: [UInt32] = (0 ..< 0x10000).map { value -> UInt32 in
        guard let scalar = Unicode.Scalar(UInt32(value)) else { return UInt32(value) }
        if value < 0x80 { return (value >= 0x41 && value <= 0x5A) ? UInt32(value + 32) : UInt32(value) }
        guard scalar.properties.changesWhenLowercased else { return UInt32(value) }
        let mapped = scalar.properties.lowercaseMapping.unicodeScalars
        return mapped.count == 1 ? mapped.first!.value : multiScalar
    }
    static let multiScalar: UInt32 = 0xFFFF_FFFF

    @inline(__always)
    static func flags(_ c: UInt32) -> UInt8 {
        c < 0x10000 ? bmpFlags.withUnsafeBufferPointer { $0[Int(c)] } : classify(c)
    }

    /// Python `str.isspace()` (Unicode 14 and later agree on this set).
    static func isPythonSpace(_ c: UInt32) -> Bool {
        switch c {
        case 0x09 ... 0x0D, 0x1C ... 0x20, 0x85, 0xA0, 0x1680, 0x2000 ... 0x200A, 0x2028, 0x2029, 0x202F, 0x205F, 0x3000:
            return true
        default:
            return false
        }
    }

    /// `_is_chinese_char`: the CJK ideograph blocks Hugging Face pads with spaces.
    @inline(__always)
    static func isCJK(_ c: UInt32) -> Bool {
        (c >= 0x4E00 && c <= 0x9FFF) || (c >= 0x3400 && c <= 0x4DBF)
            || (c >= 0x20000 && c <= 0x2A6DF) || (c >= 0x2A700 && c <= 0x2B73F)
            || (c >= 0x2B740 && c <= 0x2B81F) || (c >= 0x2B820 && c <= 0x2CEAF)
            || (c >= 0xF900 && c <= 0xFAFF) || (c >= 0x2F800 && c <= 0x2FA1F)
    }

    static func classify(_ c: UInt32) -> UInt8 {
        var f: UInt8 = isPythonSpace(c) ? pythonSpace : 0
        guard let scalar = Unicode.Scalar(c) else { return f | drop }  // surrogates: category Cs
        let p = scalar.properties
        let isTNR = c == 0x09 || c == 0x0A || c == 0x0D
        var category = p.generalCategory
        if let age = p.age {
            if age.major > referenceUnicodeVersion.major
                || (age.major == referenceUnicodeVersion.major && age.minor > referenceUnicodeVersion.minor) {
                category = .unassigned
            }
        } else {
            category = .unassigned
        }
        if c == 0x1171E { category = .nonspacingMark }  // AHOM SIGN MEDIAL RA: Mn until Unicode 15
        switch category {
        case .control, .format, .surrogate, .privateUse, .unassigned:
            if !isTNR { f |= drop }
        case .spaceSeparator:
            f |= whitespace
        case .connectorPunctuation, .dashPunctuation, .openPunctuation, .closePunctuation,
             .initialPunctuation, .finalPunctuation, .otherPunctuation:
            f |= punctuation
        case .nonspacingMark:
            f |= nonspacingMark
        default:
            break
        }
        if c == 0 || c == 0xFFFD { f |= drop }
        if isTNR || c == 0x20 { f |= whitespace }
        if (c >= 33 && c <= 47) || (c >= 58 && c <= 64) || (c >= 91 && c <= 96) || (c >= 123 && c <= 126) {
            f |= punctuation
        }
        if p.isCased { f |= cased }
        if p.isCaseIgnorable { f |= caseIgnorable }
        return f
    }

    /// Appends Python's `s.lower()` of `token` to `out`, including the contextual final-sigma
    /// rule (Σ → ς at the end of a cased word), which per-scalar mappings miss.
    static func appendLowercased(_ token: UnsafeBufferPointer<UInt32>, to out: inout [UInt32]) {
        let n = token.count
        for i in 0 ..< n {
            let c = token[i]
            if c < 0x80 {
                out.append(c >= 0x41 && c <= 0x5A ? c + 32 : c)
            } else if c == 0x3A3 {
                out.append(isFinalSigma(token, at: i) ? 0x3C2 : 0x3C3)
            } else if c < 0x10000 {
                let m = bmpLower.withUnsafeBufferPointer { $0[Int(c)] }
                if m != multiScalar {
                    out.append(m)
                } else {
                    for s in Unicode.Scalar(c)!.properties.lowercaseMapping.unicodeScalars { out.append(s.value) }
                }
            } else if let scalar = Unicode.Scalar(c), scalar.properties.changesWhenLowercased {
                for s in scalar.properties.lowercaseMapping.unicodeScalars { out.append(s.value) }
            } else {
                out.append(c)
            }
        }
    }

    /// CPython's `handle_capital_sigma`:
    /// `\p{cased} \p{case-ignorable}* Σ !(\p{case-ignorable}* \p{cased})`.
    private static func isFinalSigma(_ s: UnsafeBufferPointer<UInt32>, at i: Int) -> Bool {
        var j = i - 1
        while j >= 0 && flags(s[j]) & caseIgnorable != 0 { j -= 1 }
        guard j >= 0 && flags(s[j]) & cased != 0 else { return false }
        j = i + 1
        while j < s.count && flags(s[j]) & caseIgnorable != 0 { j += 1 }
        return j == s.count || flags(s[j]) & cased == 0
    }

    /// Unicode normalization through Foundation, on scalar arrays.
    static func normalize(_ scalars: UnsafeBufferPointer<UInt32>, decompose: Bool) -> [UInt32] {
        var view = String.UnicodeScalarView()
        for c in scalars { view.append(Unicode.Scalar(c) ?? "\u{FFFD}") }
        let string = String(view)
        let normalized = decompose ? string.decomposedStringWithCanonicalMapping : string.precomposedStringWithCanonicalMapping
        return normalized.unicodeScalars.map(\.value)
    }
}
