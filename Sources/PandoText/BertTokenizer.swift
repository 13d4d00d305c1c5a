import Foundation

/// Why a tokenizer could not be built.
public enum BertTokenizerError: Error, Equatable, CustomStringConvertible, LocalizedError {
    /// A required file does not exist.
    case fileNotFound(path: String)
    /// A file exists but could not be read or parsed.
    case unreadableFile(path: String, reason: String)
    /// A special token the encoder needs (e.g. "[UNK]") is not in the vocabulary.
    case missingSpecialToken(role: String, token: String)
    /// The vocabulary has no tokens, or more than Int32 can index.
    case invalidVocabulary(reason: String)

    public var description: String {
        switch self {
        case .fileNotFound(let path):
            return "file not found: \(path)"
        case .unreadableFile(let path, let reason):
            return "cannot read \(path): \(reason)"
        case .missingSpecialToken(let role, let token):
            return "the vocabulary has no \(role) token \(token.debugDescription)"
        case .invalidVocabulary(let reason):
            return "invalid vocabulary: \(reason)"
        }
    }

    public var errorDescription: String? { description }
}

/// Padding strategy for `BertTokenizer.encodeBatch`.
public enum Padding: Sendable, Equatable {
    /// Pad every row to the longest encoding in the batch (dynamic padding; least wasted compute).
    case longest
    /// Pad (and truncate) every row to exactly this many tokens (static shapes).
    case fixed(Int)
}

/// One encoded input: `[CLS] a [SEP]` or `[CLS] a [SEP] b [SEP]`, unpadded.
public struct Encoding: Sendable, Equatable {
    /// Token ids, special tokens included.
    public var ids: [Int32]
    /// Segment ids: 0 for `[CLS] a [SEP]`, 1 for `b [SEP]`.
    public var typeIDs: [Int32]
    /// Number of tokens (`ids.count`).
    public var count: Int

    public init(ids: [Int32], typeIDs: [Int32]) {
        self.ids = ids
        self.typeIDs = typeIDs
        self.count = ids.count
    }
}

/// A padded batch, ready for the model. All arrays are row-major `size × length`.
public struct Batch: Sendable, Equatable {
    /// Number of rows.
    public var size: Int
    /// Tokens per row after padding.
    public var length: Int
    /// Token ids; padding positions hold the `[PAD]` id.
    public var ids: [Int32]
    /// Segment ids; 0 at padding positions.
    public var typeIDs: [Int32]
    /// Attention mask: 1 for real tokens, 0 for padding.
    public var mask: [Float]
    /// Real (unpadded) token count of each row.
    public var lengths: [Int]
}

/// The tokenizer of a BERT-family model folder. For WordPiece vocabularies (BERT,
/// DistilBERT, MiniLM, multilingual BERT) it is the WordPiece tokenizer described below; for
/// byte-level BPE vocabularies (RoBERTa) it runs ``ByteLevelBPE`` and RoBERTa's templates
/// (see `encodeRoBERTa`), so every caller handles both through one type.
///
/// WordPiece tokenizer that reproduces Hugging Face's (Python, "slow") `BertTokenizer`
/// token for token: BasicTokenizer (cleaning, CJK splitting, NFC, lowercasing with Python
/// `str.lower` semantics, accent stripping, punctuation splitting, never-split tokens) followed
/// by greedy longest-match-first WordPiece. All text is processed as Unicode scalars (Python
/// code points), not Swift `Character`s, so lengths and lookups agree with Python.
public struct BertTokenizer: Sendable {
    /// Settings from `tokenizer_config.json`, with Hugging Face's defaults.
    public struct Options: Sendable, Codable, Equatable {
        /// `do_lower_case`: lowercase before WordPiece (uncased models).
        public var lowercase: Bool = true
        /// `strip_accents`: nil follows `lowercase`, as in Hugging Face.
        public var stripAccents: Bool? = nil
        /// `tokenize_chinese_chars`: put spaces around CJK ideographs.
        public var tokenizeChineseChars: Bool = true
        /// Words longer than this (in Unicode scalars) become the unknown token.
        public var maxInputCharsPerWord: Int = 100
        public var unknownToken = "[UNK]"
        public var classifierToken = "[CLS]"
        public var separatorToken = "[SEP]"
        public var paddingToken = "[PAD]"
        public var maskToken = "[MASK]"
        /// `never_split`: whitespace-delimited words kept whole (not lowercased, not split);
        /// the special tokens are always kept whole too, as in Hugging Face.
        public var neverSplit: [String] = []

        public init() {}

        public init(from decoder: Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            let d = Options()
            lowercase = try c.decodeIfPresent(Bool.self, forKey: .lowercase) ?? d.lowercase
            stripAccents = try c.decodeIfPresent(Bool.self, forKey: .stripAccents)
            tokenizeChineseChars = try c.decodeIfPresent(Bool.self, forKey: .tokenizeChineseChars) ?? d.tokenizeChineseChars
            maxInputCharsPerWord = try c.decodeIfPresent(Int.self, forKey: .maxInputCharsPerWord) ?? d.maxInputCharsPerWord
            unknownToken = try c.decodeIfPresent(String.self, forKey: .unknownToken) ?? d.unknownToken
            classifierToken = try c.decodeIfPresent(String.self, forKey: .classifierToken) ?? d.classifierToken
            separatorToken = try c.decodeIfPresent(String.self, forKey: .separatorToken) ?? d.separatorToken
            paddingToken = try c.decodeIfPresent(String.self, forKey: .paddingToken) ?? d.paddingToken
            maskToken = try c.decodeIfPresent(String.self, forKey: .maskToken) ?? d.maskToken
            neverSplit = try c.decodeIfPresent([String].self, forKey: .neverSplit) ?? d.neverSplit
        }

        /// Whether accents are stripped, resolving nil as Hugging Face does.
        var effectiveStripAccents: Bool { stripAccents ?? lowercase }
    }

    /// The files a model folder's tokenizer may consist of, for copying a folder whole
    /// (WordPiece's `vocab.txt`, RoBERTa's `vocab.json` + `merges.txt`, either's `tokenizer.json`).
    public static let folderFiles = ["vocab.txt", "vocab.json", "merges.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"]

    /// The settings this tokenizer was built with.
    public let options: Options
    /// Number of entries in the vocabulary (the model's embedding rows).
    public var vocabularySize: Int { tokens.count }
    /// Id of `[PAD]`, `[CLS]`, `[SEP]` and `[UNK]`.
    public let paddingID: Int32
    public let classifierID: Int32
    public let separatorID: Int32
    public let unknownID: Int32
    /// Id of `[MASK]`, if the vocabulary has it.
    public let maskID: Int32?

    private let tokens: [String]
    private let tokenScalars: [[UInt32]]
    private let wholeWords: ScalarTable        // every vocabulary entry
    private let continuations: ScalarTable     // entries "##x", keyed by "x"
    private let neverSplitAll: ScalarTable?    // options.neverSplit plus the special tokens
    private let neverSplitUser: ScalarTable?   // options.neverSplit only (these skip WordPiece)
    private let specialScalars: [[UInt32]]     // matched anywhere in raw text (HF added tokens)
    private let specialFirst: [UInt32]         // first scalar of each special token
    private let specialIDs: Set<Int32>
    /// Set for byte-level BPE vocabularies (RoBERTa): then it tokenizes, and `encode` uses
    /// RoBERTa's `<s> a </s></s> b </s>` template; the WordPiece tables above are unused.
    private let bpe: ByteLevelBPE?

    /// Which algorithm the vocabulary is for.
    public enum Kind: String, Sendable {
        case wordPiece, byteLevelBPE
    }
    public var kind: Kind { bpe == nil ? .wordPiece : .byteLevelBPE }

    /// Builds a tokenizer from a vocabulary (index = token id).
    /// Throws if a token appears twice or if `[UNK]`, `[CLS]`, `[SEP]` or `[PAD]` is missing.
    public init(vocabulary: [String], options: Options = .init()) throws {
        try self.init(vocabulary: vocabulary, options: options, path: nil)
    }

    /// Loads a model folder's tokenizer, whichever files it has: `vocab.txt` (WordPiece, with
    /// `tokenizer_config.json`'s settings if present), else `tokenizer.json` (WordPiece or
    /// byte-level BPE), else `vocab.json` + `merges.txt` (byte-level BPE, RoBERTa).
    /// Errors name the offending file and field.
    public init(folder: URL) throws {
        let vocabURL = folder.appendingPathComponent("vocab.txt")
        let configURL = folder.appendingPathComponent("tokenizer_config.json")
        let fm = FileManager.default
        if !fm.fileExists(atPath: vocabURL.path) {
            let json = folder.appendingPathComponent("tokenizer.json")
            let bpeVocab = folder.appendingPathComponent("vocab.json"), merges = folder.appendingPathComponent("merges.txt")
            if fm.fileExists(atPath: json.path) {
                self = try TokenizerFiles.fromTokenizerJSON(json, config: fm.fileExists(atPath: configURL.path) ? configURL : nil)
                return
            }
            if fm.fileExists(atPath: bpeVocab.path) || fm.fileExists(atPath: merges.path) {
                self = try TokenizerFiles.fromVocabAndMerges(vocab: bpeVocab, merges: merges, config: fm.fileExists(atPath: configURL.path) ? configURL : nil)
                return
            }
            throw BertTokenizerError.fileNotFound(path: vocabURL.path + " (nor tokenizer.json, nor vocab.json + merges.txt)")
        }
        let vocabulary = try BertTokenizer.readVocabulary(vocabURL)
        var options = Options()
        if fm.fileExists(atPath: configURL.path) {
            options = try BertTokenizer.readOptions(configURL)
        }
        try self.init(vocabulary: vocabulary, options: options, path: vocabURL.path)
    }

    /// A WordPiece tokenizer from a vocabulary already read (`tokenizer.json`), errors naming `path`.
    init(wordPiece vocabulary: [String], options: Options, path: String) throws {
        try self.init(vocabulary: vocabulary, options: options, path: path)
    }

    /// A byte-level BPE tokenizer. `options` supplies the special tokens' spellings, which
    /// must be in `vocabulary`; `bpe` does the tokenizing.
    init(bpe: ByteLevelBPE, vocabulary: [String], table: ScalarTable, options: Options, path: String) throws {
        func id(_ token: String, _ role: String) throws -> Int32 {
            guard let id = table.lookup(token.unicodeScalars.map(\.value)) else {
                throw BertTokenizerError.unreadableFile(path: path, reason: "the vocabulary has no \(role) token \(token.debugDescription)")
            }
            return id
        }
        self.unknownID = try id(options.unknownToken, "unknown")
        self.classifierID = try id(options.classifierToken, "classifier")
        self.separatorID = try id(options.separatorToken, "separator")
        self.paddingID = try id(options.paddingToken, "padding")
        self.maskID = table.lookup(options.maskToken.unicodeScalars.map(\.value))
        self.options = options
        self.tokens = vocabulary
        self.tokenScalars = []
        self.wholeWords = table
        self.continuations = ScalarTable(entries: [])
        self.neverSplitAll = nil
        self.neverSplitUser = nil
        self.specialScalars = []
        self.specialFirst = []
        self.specialIDs = Set([unknownID, separatorID, paddingID, classifierID] + (maskID.map { [$0] } ?? []))
        self.bpe = bpe
    }

    private init(vocabulary: [String], options: Options, path: String?) throws {
        guard !vocabulary.isEmpty else { throw BertTokenizerError.invalidVocabulary(reason: "no tokens") }
        guard vocabulary.count < Int(Int32.max) else { throw BertTokenizerError.invalidVocabulary(reason: "too many tokens") }
        var scalars: [[UInt32]] = []
        scalars.reserveCapacity(vocabulary.count)
        var whole: [([UInt32], Int32)] = []
        var continued: [([UInt32], Int32)] = []
        whole.reserveCapacity(vocabulary.count)
        for token in vocabulary { scalars.append(token.unicodeScalars.map(\.value)) }
        // A token listed twice maps to its last line, as Hugging Face's loader does.
        var seen = Set<[UInt32]>()
        for index in scalars.indices.reversed() where seen.insert(scalars[index]).inserted {
            let s = scalars[index]
            whole.append((s, Int32(index)))
            if s.count >= 2 && s[0] == 0x23 && s[1] == 0x23 { continued.append((Array(s[2...]), Int32(index))) }
        }
        let wholeTable = ScalarTable(entries: whole)
        func id(_ token: String, _ role: String) throws -> Int32 {
            guard let id = wholeTable.lookup(token.unicodeScalars.map(\.value)) else {
                throw BertTokenizerError.missingSpecialToken(role: role, token: token)
            }
            return id
        }
        self.unknownID = try id(options.unknownToken, "unknown")
        self.classifierID = try id(options.classifierToken, "classifier")
        self.separatorID = try id(options.separatorToken, "separator")
        self.paddingID = try id(options.paddingToken, "padding")
        self.maskID = wholeTable.lookup(options.maskToken.unicodeScalars.map(\.value))
        self.options = options
        self.tokens = vocabulary
        self.tokenScalars = scalars
        self.wholeWords = wholeTable
        self.continuations = ScalarTable(entries: continued)

        var specials = [options.unknownToken, options.separatorToken, options.paddingToken, options.classifierToken]
        if maskID != nil { specials.append(options.maskToken) }
        self.specialScalars = specials.map { $0.unicodeScalars.map(\.value) }.filter { !$0.isEmpty }
            .sorted { $0.count > $1.count }
        self.specialFirst = Array(Set(specialScalars.map { $0[0] }))
        self.specialIDs = Set([unknownID, separatorID, paddingID, classifierID] + (maskID.map { [$0] } ?? []))
        let user = options.neverSplit.map { ($0.unicodeScalars.map(\.value), Int32(0)) }
        self.neverSplitUser = user.isEmpty ? nil : ScalarTable(entries: user)
        self.neverSplitAll = ScalarTable(entries: user + specialScalars.map { ($0, Int32(0)) })
        self.bpe = nil
    }

    // MARK: Files

    /// Reads a `vocab.txt` (one token per line; line n - 1 is id n) the way Python's
    /// `readlines()` does. Errors name the file, and the line for invalid UTF-8.
    public static func readVocabulary(_ url: URL) throws -> [String] {
        guard FileManager.default.fileExists(atPath: url.path) else {
            throw BertTokenizerError.fileNotFound(path: url.path)
        }
        let data: Data
        do { data = try Data(contentsOf: url) } catch {
            throw BertTokenizerError.unreadableFile(path: url.path, reason: error.localizedDescription)
        }
        // Python's text-mode readlines(): universal newlines ("\n", "\r\n", "\r"), one token per line.
        var lines: [String] = []
        let bytes = [UInt8](data)
        var start = 0
        var i = 0
        func line(_ end: Int) throws {
            guard let token = String(validating: bytes[start ..< end], as: UTF8.self) else {
                throw BertTokenizerError.unreadableFile(path: url.path, reason: "line \(lines.count + 1) is not valid UTF-8")
            }
            lines.append(token)
        }
        while i < bytes.count {
            if bytes[i] == 10 || bytes[i] == 13 {
                try line(i)
                if bytes[i] == 13 && i + 1 < bytes.count && bytes[i + 1] == 10 { i += 1 }
                start = i + 1
            }
            i += 1
        }
        if start < bytes.count { try line(bytes.count) }
        return lines
    }

    /// Reads the tokenizer settings of a Hugging Face `tokenizer_config.json`; absent keys keep
    /// their defaults. Errors name the file.
    public static func readOptions(_ url: URL) throws -> Options {
        let object: Any
        do {
            object = try JSONSerialization.jsonObject(with: Data(contentsOf: url))
        } catch {
            throw BertTokenizerError.unreadableFile(path: url.path, reason: "invalid JSON: \(error.localizedDescription)")
        }
        guard let config = object as? [String: Any] else {
            throw BertTokenizerError.unreadableFile(path: url.path, reason: "expected a JSON object")
        }
        func bool(_ key: String) throws -> Bool? {
            guard let v = config[key], !(v is NSNull) else { return nil }
            if let b = v as? Bool { return b }
            throw BertTokenizerError.unreadableFile(path: url.path, reason: "\"\(key)\" must be true, false or null")
        }
        // Tokens are strings or AddedToken objects {"content": "..."}.
        func token(_ key: String) throws -> String? {
            guard let v = config[key], !(v is NSNull) else { return nil }
            if let s = v as? String { return s }
            if let d = v as? [String: Any], let s = d["content"] as? String { return s }
            throw BertTokenizerError.unreadableFile(path: url.path, reason: "\"\(key)\" must be a token string")
        }
        var o = Options()
        if let v = try bool("do_lower_case") { o.lowercase = v }
        o.stripAccents = try bool("strip_accents")
        if let v = try bool("tokenize_chinese_chars") { o.tokenizeChineseChars = v }
        if let v = config["max_input_chars_per_word"] as? Int { o.maxInputCharsPerWord = v }
        if let v = try token("unk_token") { o.unknownToken = v }
        if let v = try token("cls_token") { o.classifierToken = v }
        if let v = try token("sep_token") { o.separatorToken = v }
        if let v = try token("pad_token") { o.paddingToken = v }
        if let v = try token("mask_token") { o.maskToken = v }
        if let v = config["never_split"], !(v is NSNull) {
            guard let list = v as? [String] else {
                throw BertTokenizerError.unreadableFile(path: url.path, reason: "\"never_split\" must be a list of strings or null")
            }
            o.neverSplit = list
        }
        return o
    }

    // MARK: Tokenizing

    /// Word pieces of `text`, without `[CLS]`/`[SEP]` (Hugging Face `tokenize`).
    public func tokenize(_ text: String) -> [String] {
        if let bpe { return bpe.encode(text).map { tokens[Int($0)] } }
        var out: [String] = []
        run(text) { id, raw in
            if let raw { out.append(String(String.UnicodeScalarView(raw.map { Unicode.Scalar($0)! }))) } else { out.append(tokens[Int(id)]) }
        }
        return out
    }

    /// Token ids of `text`, without `[CLS]`/`[SEP]`.
    public func tokenIDs(_ text: String) -> [Int32] {
        if let bpe { return bpe.encode(text) }
        var out: [Int32] = []
        out.reserveCapacity(text.utf8.count / 3 + 4)
        run(text) { id, _ in out.append(id) }
        return out
    }

    /// The pipeline. `emit(id, nil)` for vocabulary pieces; `emit(id, scalars)` for a user
    /// never-split word, whose token text is the word itself (id is `[UNK]` if not in vocabulary).
    private func run(_ text: String, _ emit: (Int32, [UInt32]?) -> Void) {
        var scalars: [UInt32] = []
        scalars.reserveCapacity(text.utf8.count)
        for s in text.unicodeScalars { scalars.append(s.value) }
        scalars.withUnsafeBufferPointer { all in
            // Special tokens are split out of the raw text first (Hugging Face's added-token trie).
            var start = 0
            var i = 0
            let n = all.count
            while i < n {
                if specialFirst.contains(all[i]),
                   let special = specialScalars.first(where: { matches($0, all, at: i) }) {
                    if start < i { basic(UnsafeBufferPointer(rebasing: all[start ..< i]), emit) }
                    emit(wholeWords.lookup(special)!, nil)
                    i += special.count
                    start = i
                } else {
                    i += 1
                }
            }
            if start < n { basic(UnsafeBufferPointer(rebasing: all[start ..< n]), emit) }
        }
    }

    @inline(__always)
    private func matches(_ token: [UInt32], _ text: UnsafeBufferPointer<UInt32>, at i: Int) -> Bool {
        guard i + token.count <= text.count else { return false }
        for k in 0 ..< token.count where text[i + k] != token[k] { return false }
        return true
    }

    /// BasicTokenizer.tokenize followed by WordPiece on each word.
    private func basic(_ text: UnsafeBufferPointer<UInt32>, _ emit: (Int32, [UInt32]?) -> Void) {
        // _clean_text and _tokenize_chinese_chars.
        var buffer: [UInt32] = []
        buffer.reserveCapacity(text.count + 8)
        var maxScalar: UInt32 = 0
        let cjk = options.tokenizeChineseChars
        for c in text {
            let f = UnicodeClass.flags(c)
            if f & UnicodeClass.drop != 0 { continue }
            if f & UnicodeClass.whitespace != 0 { buffer.append(0x20); continue }
            if cjk && c >= 0x3400 && UnicodeClass.isCJK(c) {
                buffer.append(0x20); buffer.append(c); buffer.append(0x20)
            } else {
                buffer.append(c)
            }
            maxScalar = max(maxScalar, c)
        }
        // NFC; nothing below U+0300 composes or changes.
        if maxScalar >= 0x300 {
            buffer = buffer.withUnsafeBufferPointer { UnicodeClass.normalize($0, decompose: false) }
        }
        let lower = options.lowercase
        let strip = options.effectiveStripAccents
        var work: [UInt32] = []
        buffer.withUnsafeBufferPointer { buf in
            var i = 0
            let n = buf.count
            while i < n {
                // whitespace_tokenize (Python str.split()).
                while i < n && UnicodeClass.flags(buf[i]) & UnicodeClass.pythonSpace != 0 { i += 1 }
                if i == n { break }
                let s = i
                while i < n && UnicodeClass.flags(buf[i]) & UnicodeClass.pythonSpace == 0 { i += 1 }
                let token = UnsafeBufferPointer(rebasing: buf[s ..< i])
                if let table = neverSplitAll, table.lookup(token) != nil {
                    word(token, emit)
                    continue
                }
                work.removeAll(keepingCapacity: true)
                if lower {
                    UnicodeClass.appendLowercased(token, to: &work)
                } else {
                    work.append(contentsOf: token)
                }
                if strip || (!lower && options.stripAccents == true) {
                    stripAccents(&work)
                }
                work.withUnsafeBufferPointer { w in
                    if let table = neverSplitAll, table.lookup(w) != nil {
                        word(w, emit)
                    } else {
                        splitOnPunctuation(w, emit)
                    }
                }
            }
        }
    }

    /// _run_strip_accents: NFD, then drop category Mn (not recomposed, as in Python).
    private func stripAccents(_ work: inout [UInt32]) {
        var needs = false
        for c in work where c >= 0xC0 { needs = true; break }
        guard needs else { return }
        let decomposed = work.withUnsafeBufferPointer { UnicodeClass.normalize($0, decompose: true) }
        work.removeAll(keepingCapacity: true)
        for c in decomposed where UnicodeClass.flags(c) & UnicodeClass.nonspacingMark == 0 { work.append(c) }
    }

    private func splitOnPunctuation(_ w: UnsafeBufferPointer<UInt32>, _ emit: (Int32, [UInt32]?) -> Void) {
        var start = 0
        for i in 0 ..< w.count where UnicodeClass.flags(w[i]) & UnicodeClass.punctuation != 0 {
            if start < i { word(UnsafeBufferPointer(rebasing: w[start ..< i]), emit) }
            word(UnsafeBufferPointer(rebasing: w[i ..< i + 1]), emit)
            start = i + 1
        }
        if start < w.count { word(UnsafeBufferPointer(rebasing: w[start ..< w.count]), emit) }
    }

    /// One basic-tokenizer word: user never-split words pass through; others go to WordPiece.
    @inline(__always)
    private func word(_ w: UnsafeBufferPointer<UInt32>, _ emit: (Int32, [UInt32]?) -> Void) {
        if let table = neverSplitUser, table.lookup(w) != nil {
            emit(wholeWords.lookup(w) ?? unknownID, Array(w))
            return
        }
        wordPiece(w, emit)
    }

    /// Greedy longest-match-first WordPiece with "##" continuations.
    private func wordPiece(_ w: UnsafeBufferPointer<UInt32>, _ emit: (Int32, [UInt32]?) -> Void) {
        let n = w.count
        if n > options.maxInputCharsPerWord { emit(unknownID, nil); return }
        // Fast path: the whole word is a vocabulary entry.
        if let id = wholeWords.lookup(w) { emit(id, nil); return }
        var ids: [Int32] = []
        var start = 0
        while start < n {
            let table = start == 0 ? wholeWords : continuations
            var end = min(n, start + table.maxKeyLength)
            var found: Int32? = nil
            while start < end {
                if let id = table.lookup(UnsafeBufferPointer(rebasing: w[start ..< end])) { found = id; break }
                end -= 1
            }
            guard let id = found else { emit(unknownID, nil); return }
            ids.append(id)
            start = end
        }
        for id in ids { emit(id, nil) }
    }

    // MARK: Encoding

    /// `[CLS] a [SEP]` or `[CLS] a [SEP] b [SEP]` with segment ids. If longer than
    /// `maxLength` (special tokens included), truncates like Hugging Face's slow tokenizer
    /// with `truncation="longest_first"` (tokens removed from the end).
    public func encode(_ text: String, pair: String? = nil, maxLength: Int = 512) -> Encoding {
        if bpe != nil { return encodeRoBERTa(text, pair: pair, maxLength: maxLength) }
        var a = tokenIDs(text)
        var b = pair.map(tokenIDs)
        let specials = b == nil ? 2 : 3
        let remove = a.count + (b?.count ?? 0) + specials - maxLength
        if remove > 0 {
            if var second = b {
                let lenA = a.count, lenB = second.count
                let first = min(abs(lenB - lenA), remove)
                let rest = remove - first
                let fromA, fromB: Int
                if lenA > lenB {
                    fromA = first + rest / 2; fromB = rest - rest / 2
                } else {
                    fromA = rest / 2; fromB = first + rest - rest / 2
                }
                a.removeLast(min(fromA, a.count))
                second.removeLast(min(fromB, second.count))
                b = second
            } else {
                a.removeLast(min(remove, a.count))
            }
        }
        var ids: [Int32] = [classifierID]
        ids.reserveCapacity(a.count + (b?.count ?? 0) + specials)
        ids.append(contentsOf: a)
        ids.append(separatorID)
        var types = [Int32](repeating: 0, count: ids.count)
        if let b {
            ids.append(contentsOf: b)
            ids.append(separatorID)
            types.append(contentsOf: repeatElement(1, count: b.count + 1))
        }
        return Encoding(ids: ids, typeIDs: types)
    }

    /// Encodes single texts and pads them into one batch. With `.fixed(n)` rows are truncated
    /// to `min(maxLength, n)` and padded to `n`; with `.longest` to the longest row.
    public func encodeBatch(_ texts: [String], maxLength: Int, padding: Padding) -> Batch {
        var limit = maxLength
        if case .fixed(let n) = padding { limit = min(maxLength, n) }
        let encodings = texts.map { encode($0, maxLength: limit) }
        let length: Int
        switch padding {
        case .longest: length = encodings.map(\.count).max() ?? 0
        case .fixed(let n): length = max(n, encodings.map(\.count).max() ?? 0)
        }
        var ids = [Int32](repeating: paddingID, count: texts.count * length)
        var types = [Int32](repeating: 0, count: texts.count * length)
        var mask = [Float](repeating: 0, count: texts.count * length)
        for (row, e) in encodings.enumerated() {
            let base = row * length
            for j in 0 ..< e.count {
                ids[base + j] = e.ids[j]
                types[base + j] = e.typeIDs[j]
                mask[base + j] = 1
            }
        }
        return Batch(size: texts.count, length: length, ids: ids, typeIDs: types, mask: mask, lengths: encodings.map(\.count))
    }

    // MARK: Decoding

    /// Text for `ids` as Hugging Face decodes it: tokens joined by spaces, "##" pieces merged,
    /// then `clean_up_tokenization_spaces` (" ." → "." and so on). Out-of-range ids read as `[UNK]`.
    public func decode(_ ids: [Int32], skipSpecialTokens: Bool = true) -> String {
        if bpe != nil { return decodeBytes(ids, skipSpecialTokens: skipSpecialTokens) }
        var pieces: [String] = []
        for id in ids {
            if skipSpecialTokens && specialIDs.contains(id) { continue }
            pieces.append(id >= 0 && Int(id) < tokens.count ? tokens[Int(id)] : options.unknownToken)
        }
        // Scalar-level replacements (Python str.replace), never Foundation's canonical matching.
        var text = Array(pieces.joined(separator: " ").unicodeScalars.map(\.value))
        text = BertTokenizer.replace(text, " ##", "")
        while let first = text.first, UnicodeClass.isPythonSpace(first) { text.removeFirst() }
        while let last = text.last, UnicodeClass.isPythonSpace(last) { text.removeLast() }
        for (from, to) in [(" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"),
                           (" 'm", "'m"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re")] {
            text = BertTokenizer.replace(text, from, to)
        }
        return String(String.UnicodeScalarView(text.map { Unicode.Scalar($0)! }))
    }

    private static func replace(_ text: [UInt32], _ from: String, _ to: String) -> [UInt32] {
        let f = from.unicodeScalars.map(\.value), t = to.unicodeScalars.map(\.value)
        var out: [UInt32] = []
        out.reserveCapacity(text.count)
        var i = 0
        while i < text.count {
            if i + f.count <= text.count && text[i] == f[0] && Array(text[i ..< i + f.count]) == f {
                out.append(contentsOf: t)
                i += f.count
            } else {
                out.append(text[i])
                i += 1
            }
        }
        return out
    }

    /// The vocabulary entry for `id`, or nil if out of range.
    public func token(for id: Int32) -> String? {
        id >= 0 && Int(id) < tokens.count ? tokens[Int(id)] : nil
    }

    /// The id of exactly this vocabulary entry (compared by Unicode scalars), or nil.
    public func id(for token: String) -> Int32? {
        wholeWords.lookup(token.unicodeScalars.map(\.value))
    }
}

extension BertTokenizer {
    /// RoBERTa's template: `<s> a </s>` or `<s> a </s></s> b </s>`, every segment id 0.
    /// Longer than `maxLength` (special tokens included), it truncates as Hugging Face's
    /// fast tokenizer does with `truncation="longest_first"`: a single text loses tokens
    /// from its end; of a pair, the shorter keeps what fits up to half the room and the
    /// longer the rest (an odd token goes to the second text when both are cut).
    fileprivate func encodeRoBERTa(_ text: String, pair: String?, maxLength: Int) -> Encoding {
        var a = tokenIDs(text)
        var b = pair.map(tokenIDs)
        let room = max(0, maxLength - (b == nil ? 2 : 4))
        if var second = b {
            if a.count + second.count > room {
                let firstIsLonger = a.count > second.count
                let short = firstIsLonger ? second.count : a.count
                var keepShort = short, keepLong: Int
                keepLong = short > room ? short : max(short, room - short)
                if keepShort + keepLong > room {
                    keepShort = room / 2
                    keepLong = room / 2 + room % 2
                }
                let (keepA, keepB) = firstIsLonger ? (keepLong, keepShort) : (keepShort, keepLong)
                a.removeLast(max(0, a.count - keepA))
                second.removeLast(max(0, second.count - keepB))
            }
            b = second
        } else if a.count > room {
            a.removeLast(a.count - room)
        }
        var ids: [Int32] = [classifierID]
        ids.reserveCapacity(a.count + (b?.count ?? 0) + 4)
        ids.append(contentsOf: a)
        ids.append(separatorID)
        if let b {
            ids.append(separatorID)
            ids.append(contentsOf: b)
            ids.append(separatorID)
        }
        return Encoding(ids: ids, typeIDs: [Int32](repeating: 0, count: ids.count))
    }

    /// Byte-level decoding: the tokens' stand-in scalars back to bytes, read as UTF-8 with
    /// invalid sequences replaced by U+FFFD (Hugging Face's `errors="replace"`). Special
    /// tokens are written as themselves when kept; out-of-range ids read as the unknown token.
    fileprivate func decodeBytes(_ ids: [Int32], skipSpecialTokens: Bool) -> String {
        var bytes: [UInt8] = []
        var text = ""
        func flush() {
            text += String(decoding: bytes, as: UTF8.self)
            bytes.removeAll(keepingCapacity: true)
        }
        for id in ids {
            if specialIDs.contains(id) {
                if skipSpecialTokens { continue }
                flush()
                text += tokens[Int(id)]
                continue
            }
            let token = id >= 0 && Int(id) < tokens.count ? tokens[Int(id)] : options.unknownToken
            for s in token.unicodeScalars {
                if let b = ByteLevelAlphabet.byte(of: s.value) { bytes.append(b) } else { UTF8Bytes.append(s.value, to: &bytes) }
            }
        }
        flush()
        return text
    }
}
