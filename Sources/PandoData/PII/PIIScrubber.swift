import Foundation

/// Replaces personally identifying information in student text with placeholder words
/// before the text is tokenised, so that it never reaches training or an update.
///
/// Kinds and how they are found:
/// - `email`, `url`, `phone`, `address`: hand-written scanners over the UTF-8 bytes
///   (regular expressions are several times too slow for the 10 MB/s budget).
/// - `studentID`: the configured regular expressions (`NSRegularExpression`), run only
///   on lines that contain a digit.
/// - `name`: whole-word look-up of capitalised tokens in the configured name lists.
///
/// Policy (see also NOTES.md):
/// - Only tokens starting with an uppercase ASCII letter and not written all in capitals
///   are name candidates ("emma" and "EMMA" are left alone); the lists themselves are
///   case-insensitive.
/// - Names that are also common words (`ambiguousNames`: "May", "Will", "Brown", ...)
///   count only inside a sequence of two or more names ("Will Smith") or after a title
///   ("Ms. Brown"); alone, e.g. at a sentence start ("May I go?"), they are kept.
/// - A listed, unambiguous first name followed by one more capitalised word takes that
///   word as its surname ("Emma Kowalczyk" → one `[NAME]`), unless it is a function
///   word, weekday or month.
/// - Titles stay in the text ("Mr. [NAME]"); adjacent names become one placeholder.
/// - Phones: North-American numbers need 10 digits (11 with a leading 1) in 3-3-4 or
///   unbroken form, or the local 3-4 form with `-`/`.`; numbers starting with `+` need
///   8–15 digits. Extensions (`x12`, `ext. 12`, `#12`) belong to the phone. Years,
///   decimals, times ("3:45"), dates and scores are therefore not phones.
/// - A URL or address ending a sentence keeps its final period outside the placeholder.
/// - Placeholders are bracketed upper-case words (`[EMAIL]`, `[NAME]`, ...): a WordPiece
///   tokeniser splits them into `[`, `email`, `]`, three ordinary tokens that occur in
///   no real text in that order, so the model can learn them without a vocabulary change.
public struct PIIScrubber: Sendable {
    /// The kinds of PII the scrubber replaces.
    public enum Kind: String, CaseIterable, Sendable, Hashable, Codable {
        case email, phone, url, address
        case studentID = "student_id"
        case name
    }

    /// A detected span, as UTF-8 byte offsets into the input (for evaluation; the
    /// scrubbed text and counts are what product code should use).
    public struct Span: Sendable, Hashable {
        public var start: Int
        public var end: Int
        public var kind: Kind
        public init(start: Int, end: Int, kind: Kind) {
            self.start = start; self.end = end; self.kind = kind
        }
    }

    /// Scrubbed text and how many spans of each kind were replaced; never the matches.
    public struct Result: Sendable {
        public var text: String
        public var counts: [Kind: Int]
    }

    /// What to look for and what to put in its place.
    public struct Configuration: Sendable {
        /// Default student-ID patterns: an `S`/`s` followed by 6–8 digits (`S1234567`),
        /// and `ID` followed by an optional `:`, `#` or `No.` and 5–10 digits
        /// (`ID: 20231234`, `ID# 55512`). The whole match is replaced.
        public static let defaultStudentIDPatterns = [
            #"\b[Ss]\d{6,8}\b"#,
            #"\bID\s*(?:[:#]|No\.?)?\s*\d{5,10}\b"#,
        ]

        /// Regular expressions (ICU syntax) for student IDs.
        public var studentIDPatterns: [String]
        /// Given names and surnames, any case; matched as whole, capitalised words.
        public var names: Set<String>
        /// Names that are also common words; see the policy in `PIIScrubber`.
        public var ambiguousNames: Set<String>
        /// Given names that may take a following unlisted capitalised word as surname.
        public var firstNames: Set<String>
        /// Replacement text per kind.
        public var placeholders: [Kind: String]
        /// Kinds to detect; all by default.
        public var kinds: Set<Kind>

        public init(studentIDPatterns: [String] = Configuration.defaultStudentIDPatterns,
                    firstNames: [String] = PIIDefaultNames.firstNames,
                    lastNames: [String] = PIIDefaultNames.lastNames,
                    ambiguousNames: [String] = PIIDefaultNames.ambiguousNames,
                    placeholders: [Kind: String] = Configuration.defaultPlaceholders,
                    kinds: Set<Kind> = Set(Kind.allCases)) {
            self.studentIDPatterns = studentIDPatterns
            let lower = { (a: [String]) in Set(a.map { $0.lowercased() }) }
            self.ambiguousNames = lower(ambiguousNames)
            self.firstNames = lower(firstNames)
            self.names = lower(firstNames).union(lower(lastNames)).union(self.ambiguousNames)
            self.placeholders = placeholders
            self.kinds = kinds
        }

        public static let defaultPlaceholders: [Kind: String] = [
            .email: "[EMAIL]", .phone: "[PHONE]", .url: "[URL]", .address: "[ADDRESS]",
            .studentID: "[STUDENT_ID]", .name: "[NAME]",
        ]

        public static var `default`: Configuration { Configuration() }

        /// Adds the names in a text file (one per line; blank lines and `#` comments
        /// skipped). `ambiguous: true` adds them to the ambiguous list as well.
        public mutating func addNames(fromFile path: String, ambiguous: Bool = false) throws {
            let text = try String(contentsOfFile: path, encoding: .utf8)
            for raw in text.split(whereSeparator: \.isNewline) {
                let name = raw.trimmingCharacters(in: .whitespaces).lowercased()
                if name.isEmpty || name.hasPrefix("#") { continue }
                names.insert(name)
                if ambiguous { ambiguousNames.insert(name) }
            }
        }
    }

    /// NSRegularExpression is immutable and documented thread-safe.
    private final class Patterns: @unchecked Sendable {
        let regexes: [NSRegularExpression]
        init(_ r: [NSRegularExpression]) { regexes = r }
    }

    public let configuration: Configuration
    private let patterns: Patterns
    private let nameHashes: Set<UInt64>
    private let ambiguousHashes: Set<UInt64>
    private let firstHashes: Set<UInt64>
    private let placeholderBytes: [Kind: [UInt8]]

    /// Throws if a student-ID pattern does not compile.
    public init(configuration: Configuration = .default) throws {
        self.configuration = configuration
        patterns = Patterns(try configuration.studentIDPatterns.map { try NSRegularExpression(pattern: $0) })
        nameHashes = Set(configuration.names.map { PIIScan.hash(Array($0.utf8)[...]) })
        ambiguousHashes = Set(configuration.ambiguousNames.map { PIIScan.hash(Array($0.utf8)[...]) })
        firstHashes = Set(configuration.firstNames.subtracting(configuration.ambiguousNames)
                            .map { PIIScan.hash(Array($0.utf8)[...]) })
        var p: [Kind: [UInt8]] = [:]
        for k in Kind.allCases { p[k] = Array((configuration.placeholders[k] ?? "[\(k.rawValue.uppercased())]").utf8) }
        placeholderBytes = p
    }

    /// Replaces every detected span by its placeholder and counts them by kind.
    public func scrub(_ text: String) -> Result {
        let bytes = Array(text.utf8)
        let spans = detect(bytes)
        if spans.isEmpty { return Result(text: text, counts: [:]) }
        var out = [UInt8]()
        out.reserveCapacity(bytes.count)
        var counts: [Kind: Int] = [:]
        var pos = 0
        for s in spans {
            out.append(contentsOf: bytes[pos..<s.start])
            out.append(contentsOf: placeholderBytes[s.kind]!)
            counts[s.kind, default: 0] += 1
            pos = s.end
        }
        out.append(contentsOf: bytes[pos...])
        return Result(text: String(decoding: out, as: UTF8.self), counts: counts)
    }

    /// The spans `scrub` would replace, sorted and non-overlapping (UTF-8 offsets).
    public func spans(in text: String) -> [Span] { detect(Array(text.utf8)) }

    // MARK: - Detection

    private func detect(_ b: [UInt8]) -> [Span] {
        let kinds = configuration.kinds
        // Pass 1: e-mails (anchored on '@') and student IDs (regexes) take precedence.
        var first: [Span] = []
        if kinds.contains(.email) { first += PIIScan.emails(b) }
        if kinds.contains(.studentID), !patterns.regexes.isEmpty { first += studentIDs(b) }
        first.sort { $0.start != $1.start ? $0.start < $1.start : $0.end > $1.end }
        var fixed: [Span] = []
        for s in first where fixed.last.map({ s.start >= $0.end }) ?? true { fixed.append(s) }

        // Pass 2: one left-to-right walk over words for URLs, phones, addresses, names.
        var result: [Span] = []
        result.reserveCapacity(fixed.count + 16)
        var names = NameState()
        var k = 0
        var i = 0
        let n = b.count
        let wantURL = kinds.contains(.url), wantPhone = kinds.contains(.phone)
        let wantAddr = kinds.contains(.address), wantName = kinds.contains(.name)
        while i < n {
            let limit = k < fixed.count ? fixed[k].start : n
            if i >= limit {
                flushName(&names, &result, b)
                result.append(fixed[k]); i = fixed[k].end; k += 1
                continue
            }
            let c = b[i]
            if !PIIScan.isWord(c) {
                if wantPhone, (c == 0x2B || c == 0x28), i + 1 < limit, PIIScan.isDigit(b[i + 1]),
                   i == 0 || !PIIScan.isWord(b[i - 1]), let e = PIIScan.phone(b, i, limit) {
                    flushName(&names, &result, b)
                    result.append(Span(start: i, end: e, kind: .phone)); i = e; continue
                }
                i += 1
                continue
            }
            // Word start: b[i] is a word byte and b[i-1] is not.
            var we = i + 1
            while we < limit, PIIScan.isWord(b[we]) { we += 1 }
            if PIIScan.isDigit(c) {
                if wantPhone, let e = PIIScan.phone(b, i, limit) {
                    flushName(&names, &result, b)
                    result.append(Span(start: i, end: e, kind: .phone)); i = e; continue
                }
                if wantAddr, let e = PIIScan.address(b, i, we, limit) {
                    flushName(&names, &result, b)
                    result.append(Span(start: i, end: e, kind: .address)); i = e; continue
                }
            } else if PIIScan.isAlpha(c) {
                if wantURL, let e = PIIScan.url(b, i, we, limit) {
                    flushName(&names, &result, b)
                    result.append(Span(start: i, end: e, kind: .url)); i = e; continue
                }
                if wantName, PIIScan.isUpper(c) {
                    var te = we
                    // O'Brien, D'Angelo: an apostrophe followed by a capital continues the token.
                    if te + 1 < limit, b[te] == 0x27, PIIScan.isUpper(b[te + 1]) {
                        te += 1
                        while te < limit, PIIScan.isWord(b[te]) { te += 1 }
                    }
                    if PIIScan.isCapitalisedWord(b, i, te) {
                        let h = PIIScan.hash(b[i..<te])
                        if nameHashes.contains(h) {
                            names.add(b, i, te, ambiguous: ambiguousHashes.contains(h),
                                      first: firstHashes.contains(h), into: &result)
                            i = te; continue
                        } else if names.canTakeSurname(b, i), !PIIScan.isStopWord(h) {
                            names.extend(to: te)
                            i = te; continue
                        }
                    }
                }
            }
            i = we
        }
        flushName(&names, &result, b)
        return result
    }

    /// Pending run of adjacent name tokens, emitted when the run ends.
    private struct NameState {
        var start = -1
        var end = -1
        var tokens = 0
        var allAmbiguous = true
        var lastWasFirst = false
        var tookSurname = false

        /// True if the previous token was an unambiguous first name directly before `i`.
        func canTakeSurname(_ b: [UInt8], _ i: Int) -> Bool {
            start >= 0 && lastWasFirst && !tookSurname && i == end + 1 && b[end] == 0x20
        }
        mutating func extend(to e: Int) {
            end = e; tokens += 1; allAmbiguous = false; lastWasFirst = false; tookSurname = true
        }
        mutating func add(_ b: [UInt8], _ s: Int, _ e: Int, ambiguous: Bool, first: Bool,
                          into result: inout [Span]) {
            if start >= 0, s == end + 1, b[end] == 0x20 || b[end] == 0x2D {
                end = e; tokens += 1
                allAmbiguous = allAmbiguous && ambiguous
            } else {
                emit(b, into: &result)
                start = s; end = e; tokens = 1; allAmbiguous = ambiguous; tookSurname = false
            }
            lastWasFirst = first
        }
        mutating func emit(_ b: [UInt8], into result: inout [Span]) {
            if start >= 0, !allAmbiguous || tokens >= 2 || PIIScan.followsTitle(b, start) {
                result.append(Span(start: start, end: end, kind: .name))
            }
            start = -1; end = -1; tokens = 0; allAmbiguous = true; lastWasFirst = false; tookSurname = false
        }
    }

    private func flushName(_ s: inout NameState, _ result: inout [Span], _ b: [UInt8]) {
        s.emit(b, into: &result)
    }

    /// Runs the student-ID regexes on each maximal block of consecutive lines that
    /// contain a digit (every default and most custom ID patterns need one).
    private func studentIDs(_ b: [UInt8]) -> [Span] {
        var spans: [Span] = []
        var blockStart = -1, blockEnd = -1
        var lineStart = 0
        var lineHasDigit = false
        func runBlock() {
            guard blockStart >= 0 else { return }
            let s = String(decoding: b[blockStart..<blockEnd], as: UTF8.self)
            let ns = NSRange(location: 0, length: s.utf16.count)
            for re in patterns.regexes {
                for m in re.matches(in: s, range: ns) {
                    guard let r = Range(m.range, in: s), !r.isEmpty else { continue }
                    let a = s.utf8.distance(from: s.startIndex, to: r.lowerBound)
                    let z = s.utf8.distance(from: s.startIndex, to: r.upperBound)
                    spans.append(Span(start: blockStart + a, end: blockStart + z, kind: .studentID))
                }
            }
            blockStart = -1
        }
        var i = 0
        let n = b.count
        while i <= n {
            if i == n || b[i] == 0x0A {
                if lineHasDigit {
                    if blockStart < 0 { blockStart = lineStart }
                    blockEnd = i
                } else {
                    runBlock()
                }
                lineStart = i + 1
                lineHasDigit = false
            } else if !lineHasDigit, PIIScan.isDigit(b[i]) {
                lineHasDigit = true
            }
            i += 1
        }
        runBlock()
        return spans
    }
}

/// Byte-level scanners. Every function takes the text, a start offset and a `limit`
/// it must not cross (the start of a span already claimed by a higher-priority kind),
/// and returns the end offset of a match or nil.
enum PIIScan {
    // Character classes over UTF-8 bytes. Bytes >= 0x80 (non-ASCII letters) count as
    // word bytes so that ASCII patterns never match inside "José" or "Zoë".
    @inline(__always) static func isDigit(_ c: UInt8) -> Bool { c &- 0x30 < 10 }
    @inline(__always) static func isUpper(_ c: UInt8) -> Bool { c &- 0x41 < 26 }
    @inline(__always) static func isLower(_ c: UInt8) -> Bool { c &- 0x61 < 26 }
    @inline(__always) static func isAlpha(_ c: UInt8) -> Bool { (c | 0x20) &- 0x61 < 26 }
    @inline(__always) static func isAlnum(_ c: UInt8) -> Bool { isAlpha(c) || isDigit(c) }
    @inline(__always) static func isWord(_ c: UInt8) -> Bool { isAlnum(c) || c >= 0x80 }
    @inline(__always) static func isSpace(_ c: UInt8) -> Bool { c == 0x20 || c == 0x09 || c == 0x0A || c == 0x0D }
    @inline(__always) static func lower(_ c: UInt8) -> UInt8 { isUpper(c) ? c | 0x20 : c }

    /// FNV-1a of the ASCII-lowercased bytes (names are looked up by this hash).
    static func hash(_ s: ArraySlice<UInt8>) -> UInt64 {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for c in s { h = (h ^ UInt64(lower(c))) &* 0x100_0000_01b3 }
        return h
    }

    /// Uppercase first letter, only letters (and apostrophes), not all capitals.
    static func isCapitalisedWord(_ b: [UInt8], _ s: Int, _ e: Int) -> Bool {
        guard isUpper(b[s]) else { return false }
        var sawLower = false
        for j in (s + 1)..<max(s + 1, e) {
            let c = b[j]
            if isLower(c) { sawLower = true } else if !(isUpper(c) || c == 0x27) { return false }
        }
        return sawLower
    }

    private static func hashes(_ words: [String]) -> Set<UInt64> {
        Set(words.map { hash(Array($0.utf8)[...]) })
    }

    /// Capitalised words that never serve as a surname after a first name.
    static let stopWords: Set<UInt64> = hashes("""
        i a an and or but so the then if when while as at in on of to for from with by is \
        was are were be has had have do did does not no yes my our your his her their its \
        this that these those we he she they it you me us him them who what where why how \
        monday tuesday wednesday thursday friday saturday sunday january february march \
        april may june july august september october november december today tomorrow \
        yesterday mr mrs ms dr miss school high middle elementary class grade
        """.split(whereSeparator: { $0 == " " || $0 == "\n" }).map(String.init))
    @inline(__always) static func isStopWord(_ h: UInt64) -> Bool { stopWords.contains(h) }

    static let titles: Set<UInt64> = hashes(
        "mr mrs ms miss mx dr prof coach principal dean teacher officer".split(whereSeparator: { $0 == " " || $0 == "\n" }).map(String.init))

    /// True if `start` is preceded by a title such as "Ms. " or "Coach ".
    static func followsTitle(_ b: [UInt8], _ start: Int) -> Bool {
        var j = start - 1
        guard j >= 0, b[j] == 0x20 else { return false }
        j -= 1
        if j >= 0, b[j] == 0x2E { j -= 1 }
        let e = j + 1
        while j >= 0, isAlpha(b[j]) { j -= 1 }
        let s = j + 1
        guard e > s, e - s <= 9, s == 0 || !isWord(b[s - 1]) else { return false }
        return titles.contains(hash(b[s..<e]))
    }

    // MARK: E-mail

    @inline(__always) static func isLocal(_ c: UInt8) -> Bool {
        isAlnum(c) || c == 0x2E || c == 0x5F || c == 0x25 || c == 0x2B || c == 0x2D  // . _ % + -
    }
    @inline(__always) static func isHost(_ c: UInt8) -> Bool { isAlnum(c) || c == 0x2D || c == 0x2E }

    /// `local@host.tld`: the local part grows left from '@', the host right, and the
    /// last host label must be 2+ letters. Trailing dots and hyphens are not taken.
    static func emails(_ b: [UInt8]) -> [PIIScrubber.Span] {
        var out: [PIIScrubber.Span] = []
        let n = b.count
        var lastEnd = 0
        var i = 0
        while i < n {
            if b[i] != 0x40 { i += 1; continue }
            var s = i
            while s > lastEnd, isLocal(b[s - 1]) { s -= 1 }
            while s < i, b[s] == 0x2E || b[s] == 0x2D { s += 1 }  // no leading dot
            var e = i + 1
            while e < n, isHost(b[e]) { e += 1 }
            while e > i + 1, b[e - 1] == 0x2E || b[e - 1] == 0x2D { e -= 1 }
            // Last label: letters only, length >= 2, and at least one dot in the host.
            var d = e
            while d > i + 1, isAlpha(b[d - 1]) { d -= 1 }
            let ok = s < i && e - d >= 2 && d > i + 2 && b[d - 1] == 0x2E && isAlnum(b[i + 1])
                && (e >= n || !isWord(b[e]))
            if ok {
                out.append(.init(start: s, end: e, kind: .email))
                lastEnd = e; i = e
            } else {
                i += 1
            }
        }
        return out
    }

    // MARK: URL

    static let bareTLDs: Set<UInt64> = hashes(
        "com org net edu gov us io info biz uk ca".split(whereSeparator: { $0 == " " || $0 == "\n" }).map(String.init))

    @inline(__always) static func matchesLower(_ b: [UInt8], _ i: Int, _ lit: StaticString, _ limit: Int) -> Bool {
        let len = lit.utf8CodeUnitCount
        guard i + len <= limit else { return false }
        let p = lit.utf8Start
        for j in 0..<len where lower(b[i + j]) != p[j] { return false }
        return true
    }

    /// `http://`, `https://`, `www.` at a word start, or a bare domain followed by a
    /// path (`lincoln.k12.il.us/lunch`), or a bare domain with a common TLD.
    static func url(_ b: [UInt8], _ i: Int, _ we: Int, _ limit: Int) -> Int? {
        let c = lower(b[i])
        if c == 0x68 { // h
            if matchesLower(b, i, "https://", limit) { return urlTail(b, i + 8, limit) }
            if matchesLower(b, i, "http://", limit) { return urlTail(b, i + 7, limit) }
        } else if c == 0x77, matchesLower(b, i, "www.", limit) {
            return urlTail(b, i + 4, limit)
        }
        // Bare domain: only worth checking if the word is followed by '.' or '-'.
        guard we < limit, b[we] == 0x2E || b[we] == 0x2D else { return nil }
        var e = i
        var labels = 0
        var lastLabelStart = i
        var lastLabelAlpha = true
        while true {
            let ls = e
            var alpha = true
            while e < limit, isAlnum(b[e]) || b[e] == 0x2D { if !isAlpha(b[e]) { alpha = false }; e += 1 }
            if e == ls { return nil }
            labels += 1
            lastLabelStart = ls; lastLabelAlpha = alpha
            if e + 1 < limit, b[e] == 0x2E, isAlnum(b[e + 1]) { e += 1; continue }
            break
        }
        guard labels >= 2, lastLabelAlpha, e - lastLabelStart >= 2 else { return nil }
        if e < limit, b[e] == 0x2F, e + 1 < limit, !isSpace(b[e + 1]) { return urlTail(b, e, limit) }
        if bareTLDs.contains(hash(b[lastLabelStart..<e])), e >= limit || !isWord(b[e]) && b[e] != 0x40 {
            return e
        }
        return nil
    }

    /// Extends a URL to the next space or quote, then drops trailing punctuation and
    /// an unbalanced closing bracket ("(see http://x.org/a)." keeps ")." outside).
    static func urlTail(_ b: [UInt8], _ from: Int, _ limit: Int) -> Int? {
        var e = from
        var parens = 0
        while e < limit {
            let c = b[e]
            if isSpace(c) || c == 0x22 || c == 0x3C || c == 0x3E || c < 0x20 { break }
            if c == 0x28 { parens += 1 } else if c == 0x29 { parens -= 1 }
            e += 1
        }
        while e > from {
            let c = b[e - 1]
            if c == 0x2E || c == 0x2C || c == 0x3B || c == 0x3A || c == 0x21 || c == 0x3F || c == 0x27 || c == 0x5D {
                e -= 1
            } else if c == 0x29, parens < 0 {
                parens += 1; e -= 1
            } else {
                break
            }
        }
        return e > from ? e : nil
    }

    // MARK: Phone

    /// Groups of digits joined by one separator (space, '.', '-', or a parenthesis with
    /// an optional space/dash), validated as North-American or '+' international; the
    /// longest valid prefix wins, then an optional extension is appended.
    static func phone(_ b: [UInt8], _ i: Int, _ limit: Int) -> Int? {
        // Left context: not glued to a previous number ("3.5", "10-12", "1,000").
        if i > 0 {
            let p = b[i - 1]
            if isWord(p) { return nil }
            if (p == 0x2E || p == 0x2C || p == 0x2D || p == 0x2F || p == 0x3A || p == 0x24), i > 1, isDigit(b[i - 2]) || p == 0x24 { return nil }
        }
        var j = i
        let plus = b[j] == 0x2B
        if plus { j += 1 }
        var groups: [Int] = []
        groups.reserveCapacity(6)
        var total = 0
        var best: Int? = nil
        var openParen = false
        var localDashOrDot = false
        var firstDigit: UInt8 = 0
        if j < limit, b[j] == 0x28 { openParen = true; j += 1 }
        while j < limit, groups.count < 7 {
            let gs = j
            while j < limit, isDigit(b[j]) { j += 1 }
            let g = j - gs
            if g == 0 { break }
            if groups.isEmpty { firstDigit = b[gs] }
            groups.append(g); total += g
            if total > 15 { break }
            // Valid so far?  Check right boundary at j.
            let rightOK = j >= limit || !(isWord(b[j]) || ((b[j] == 0x2E || b[j] == 0x2C || b[j] == 0x3A || b[j] == 0x2F) && j + 1 < limit && isDigit(b[j + 1])))
            if rightOK, validPhone(groups, total, plus: plus, localSep: localDashOrDot, firstDigit: firstDigit) {
                best = j
            }
            // Separator.
            var k = j
            var sepLen = 0
            if k < limit, b[k] == 0x29 { k += 1; sepLen += 1; openParen = false }
            if k < limit, b[k] == 0x20 || b[k] == 0x2E || b[k] == 0x2D {
                if groups.count == 1 && (b[k] == 0x2E || b[k] == 0x2D) { localDashOrDot = true }
                k += 1; sepLen += 1
            }
            if k < limit, b[k] == 0x28, !openParen { k += 1; sepLen += 1; openParen = true }
            if sepLen == 0 || k >= limit || !isDigit(b[k]) { break }
            j = k
        }
        guard let end = best else { return nil }
        return phoneExtension(b, end, limit) ?? end
    }

    static func validPhone(_ g: [Int], _ total: Int, plus: Bool, localSep: Bool, firstDigit: UInt8) -> Bool {
        if plus {
            guard total >= 8 && total <= 15 else { return false }
            return g.count == 1 || g[0] <= 4
        }
        switch g.count {
        case 1: return g[0] == 10 || (g[0] == 11 && firstDigit == 0x31)
        case 2: return (g[0] == 3 && g[1] == 4 && localSep) || (g[0] == 3 && g[1] == 7)
        case 3: return g[0] == 3 && g[1] == 3 && g[2] == 4
        case 4: return g[0] == 1 && firstDigit == 0x31 && g[1] == 3 && g[2] == 3 && g[3] == 4
        default: return false
        }
    }

    /// ` x12`, ` ext. 12`, ` extension 12`, ` #12` (1–6 digits) after a phone.
    static func phoneExtension(_ b: [UInt8], _ from: Int, _ limit: Int) -> Int? {
        var j = from
        if j < limit, b[j] == 0x2C { j += 1 }
        var spaces = 0
        while j < limit, b[j] == 0x20, spaces < 2 { j += 1; spaces += 1 }
        if matchesLower(b, j, "extension", limit) { j += 9 }
        else if matchesLower(b, j, "ext", limit) { j += 3 }
        else if j < limit, lower(b[j]) == 0x78 || b[j] == 0x23 { j += 1 }
        else { return nil }
        if j < limit, b[j] == 0x2E { j += 1 }
        while j < limit, b[j] == 0x20 { j += 1 }
        let ds = j
        while j < limit, isDigit(b[j]), j - ds < 7 { j += 1 }
        guard j - ds >= 1, j - ds <= 6, j >= limit || !isWord(b[j]) else { return nil }
        return j
    }

    // MARK: Street address

    static let streetSuffixes: Set<UInt64> = hashes("""
        street st avenue ave av road rd boulevard blvd lane ln drive dr court ct way place pl \
        terrace ter circle cir parkway pkwy highway hwy square sq trail trl alley loop row \
        crescent path pike plaza plz run parkway expressway freeway
        """.split(whereSeparator: { $0 == " " || $0 == "\n" }).map(String.init))
    static let directions: Set<UInt64> = hashes(
        "n s e w ne nw se sw north south east west".split(whereSeparator: { $0 == " " || $0 == "\n" }).map(String.init))
    static let unitWords: Set<UInt64> = hashes(
        "apt apartment unit suite ste room rm floor fl".split(whereSeparator: { $0 == " " || $0 == "\n" }).map(String.init))

    /// `123 [N.] Elm [Tree] Street[, Apt 4B]`: a 1–6 digit house number (optionally one
    /// letter, "221B"), an optional direction, 1–3 capitalised words or ordinals ("5th"),
    /// a street suffix, and an optional unit.
    static func address(_ b: [UInt8], _ i: Int, _ we: Int, _ limit: Int) -> Int? {
        if i > 0, b[i - 1] == 0x24 || b[i - 1] == 0x23 { return nil }   // $12, #12
        var j = i
        while j < we, isDigit(b[j]) { j += 1 }
        let digits = j - i
        guard digits >= 1, digits <= 6 else { return nil }
        if j < we { if we - j == 1, isUpper(b[j]) { j = we } else { return nil } }
        var words = 0
        var sawDirection = false
        while words < 4 {
            guard j < limit, b[j] == 0x20, j + 1 < limit, isWord(b[j + 1]) else { return nil }
            let ws = j + 1
            var e = ws
            while e < limit, isWord(b[e]) { e += 1 }
            let h = hash(b[ws..<e])
            if words > 0 || sawDirection, streetSuffixes.contains(h), isAlpha(b[ws]) {
                return unit(b, e, limit) ?? e
            }
            if !sawDirection, words == 0, directions.contains(h), isUpper(b[ws]) {
                sawDirection = true
                j = (e < limit && b[e] == 0x2E) ? e + 1 : e
                continue
            }
            let ordinal = isDigit(b[ws]) && isOrdinal(b, ws, e)
            guard ordinal || isCapitalisedWord(b, ws, e) else { return nil }
            words += 1
            j = e
        }
        return nil
    }

    static func isOrdinal(_ b: [UInt8], _ s: Int, _ e: Int) -> Bool {
        var j = s
        while j < e, isDigit(b[j]) { j += 1 }
        guard j > s, e - j == 2 else { return false }
        let a = lower(b[j]), c = lower(b[j + 1])
        return (a == 0x73 && c == 0x74) || (a == 0x6E && c == 0x64) || (a == 0x72 && c == 0x64) || (a == 0x74 && c == 0x68)
    }

    /// `, Apt 4B`, ` Suite 300`, ` #12` after a street suffix (optionally after its '.').
    static func unit(_ b: [UInt8], _ from: Int, _ limit: Int) -> Int? {
        var j = from
        if j < limit, b[j] == 0x2E { j += 1 }
        if j < limit, b[j] == 0x2C { j += 1 }
        guard j < limit, b[j] == 0x20 else { return nil }
        j += 1
        if j < limit, b[j] == 0x23 {
            j += 1
        } else {
            let ws = j
            while j < limit, isAlpha(b[j]) { j += 1 }
            guard j > ws, unitWords.contains(hash(b[ws..<j])) else { return nil }
            if j < limit, b[j] == 0x2E { j += 1 }
            if j < limit, b[j] == 0x20 { j += 1 }
        }
        let vs = j
        while j < limit, isAlnum(b[j]) || (b[j] == 0x2D && j > vs), j - vs < 7 { j += 1 }
        guard j > vs, isDigit(b[vs]) || (j - vs == 1 && isUpper(b[vs])), j >= limit || !isWord(b[j]) else { return nil }
        return j
    }
}

extension LabeledDataset {
    /// The same examples with every detected PII span replaced by its placeholder, and how
    /// many of each kind were replaced (never the matches). Runs on all cores.
    public func scrubbed(with scrubber: PIIScrubber) -> (data: LabeledDataset, counts: [PIIScrubber.Kind: Int]) {
        var out = self
        let n = examples.count, workers = max(1, min(ProcessInfo.processInfo.activeProcessorCount, n / 256 + 1))
        var partial = [[PIIScrubber.Kind: Int]](repeating: [:], count: workers)
        out.examples.withUnsafeMutableBufferPointer { ex in
            partial.withUnsafeMutableBufferPointer { counts in
                let box = (ex.baseAddress!, counts.baseAddress!)
                nonisolated(unsafe) let shared = box
                DispatchQueue.concurrentPerform(iterations: workers) { w in
                    let (ex, counts) = shared
                    for i in stride(from: n * w / workers, to: n * (w + 1) / workers, by: 1) {
                        let r = scrubber.scrub(ex[i].text)
                        ex[i].text = r.text
                        for (k, c) in r.counts { counts[w][k, default: 0] += c }
                    }
                }
            }
        }
        var total: [PIIScrubber.Kind: Int] = [:]
        for p in partial { for (k, c) in p { total[k, default: 0] += c } }
        return (out, total)
    }
}

extension PIIScrubber {
    /// Counts as one line for consoles and logs: `2 email, 1 name` (kinds in a fixed order), or `none`.
    public static func describe(_ counts: [Kind: Int]) -> String {
        let parts = Kind.allCases.compactMap { k in counts[k].map { "\($0) \(k.rawValue)" } }
        return parts.isEmpty ? "none" : parts.joined(separator: ", ")
    }
}
