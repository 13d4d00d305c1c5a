import Foundation

/// Readers for the tokenizer files of folders without `vocab.txt`: Hugging Face's
/// `tokenizer.json` (a WordPiece or byte-level BPE model) and RoBERTa's `vocab.json` +
/// `merges.txt`. Every error names the file and the field.
enum TokenizerFiles {
    static func fail(_ url: URL, _ field: String, _ reason: String) -> BertTokenizerError {
        .unreadableFile(path: url.path, reason: "field '\(field)': \(reason)")
    }

    /// A `{token: id}` object as a vocabulary array (index = id) and its lookup table.
    /// Ids must be distinct and non-negative; unused ids become empty entries.
    static func vocabulary(_ value: TokenizerJSON?, url: URL, field: String) throws -> ([String], ScalarTable) {
        guard case .object(let members)? = value else { throw fail(url, field, "expected an object of token → id") }
        guard !members.isEmpty else { throw fail(url, field, "the vocabulary is empty") }
        var maxID = -1
        var entries: [([UInt32], Int32)] = []
        entries.reserveCapacity(members.count)
        for (token, v) in members {
            guard let id = v.int, id >= 0, id < Int(Int32.max) else { throw fail(url, field, "token \(token.debugDescription) has id \(v), expected a non-negative integer") }
            entries.append((token.unicodeScalars.map(\.value), Int32(id)))
            maxID = max(maxID, id)
        }
        guard maxID < members.count * 4 + 1024 else { throw fail(url, field, "ids reach \(maxID) for \(members.count) tokens") }
        var tokens = [String](repeating: "", count: maxID + 1)
        var seen = [Bool](repeating: false, count: maxID + 1)
        for (token, v) in members {
            let id = v.int!
            guard !seen[id] else { throw fail(url, field, "id \(id) is given to two tokens (\(tokens[id].debugDescription) and \(token.debugDescription))") }
            seen[id] = true
            tokens[id] = token
        }
        return (tokens, ScalarTable(entries: entries))
    }

    /// The special-token spellings of a BPE tokenizer: `tokenizer_config.json`'s if given,
    /// else RoBERTa's.
    static func bpeOptions(config: URL?) throws -> BertTokenizer.Options {
        var o = BertTokenizer.Options()
        o.lowercase = false
        o.unknownToken = "<unk>"; o.classifierToken = "<s>"; o.separatorToken = "</s>"
        o.paddingToken = "<pad>"; o.maskToken = "<mask>"
        guard let config else { return o }
        let json = try TokenizerJSON.read(config)
        func token(_ key: String) throws -> String? {
            guard let v = json[key], !v.isNull else { return nil }
            if let s = v.string { return s }
            if let s = v["content"]?.string { return s }
            throw fail(config, key, "must be a token string or an object with \"content\"")
        }
        if let v = try token("unk_token") { o.unknownToken = v }
        if let v = try token("cls_token") ?? token("bos_token") { o.classifierToken = v }
        if let v = try token("sep_token") ?? token("eos_token") { o.separatorToken = v }
        if let v = try token("pad_token") { o.paddingToken = v }
        if let v = try token("mask_token") { o.maskToken = v }
        return o
    }

    /// Added tokens: `added_tokens` of tokenizer.json, or `added_tokens_decoder` of
    /// tokenizer_config.json, or the five special tokens (with `<mask>`'s `lstrip` if the
    /// config's `mask_token` says so). Only tokens in the vocabulary take part.
    static func addedTokens(_ list: TokenizerJSON?, url: URL, field: String, table: ScalarTable) throws -> [ByteLevelBPE.AddedToken]? {
        guard let list, !list.isNull else { return nil }
        var items: [TokenizerJSON] = []
        switch list {
        case .array(let a): items = a
        case .object(let members): items = members.map(\.1)
        default: throw fail(url, field, "expected a list of added tokens")
        }
        return try items.map { item in
            guard let content = item["content"]?.string else { throw fail(url, field, "an added token has no \"content\" string") }
            let scalars = content.unicodeScalars.map(\.value)
            guard let id = item["id"]?.int.map(Int32.init) ?? table.lookup(scalars) else {
                throw fail(url, field, "added token \(content.debugDescription) has no id and is not in the vocabulary")
            }
            return .init(scalars: scalars, id: id, lstrip: item["lstrip"]?.bool ?? false, rstrip: item["rstrip"]?.bool ?? false)
        }
    }

    static func defaultAdded(_ o: BertTokenizer.Options, config: URL?, table: ScalarTable) throws -> [ByteLevelBPE.AddedToken] {
        var maskLstrip = false
        if let config, let mask = try TokenizerJSON.read(config)["mask_token"], let l = mask["lstrip"]?.bool { maskLstrip = l }
        return [o.classifierToken, o.paddingToken, o.separatorToken, o.unknownToken, o.maskToken].compactMap { t in
            let s = t.unicodeScalars.map(\.value)
            return table.lookup(s).map { .init(scalars: s, id: $0, lstrip: t == o.maskToken && maskLstrip, rstrip: false) }
        }
    }

    /// `merges.txt`: an optional `#version` line, then one `left right` pair per line, best first.
    static func readMerges(_ url: URL) throws -> [(String, String)] {
        guard FileManager.default.fileExists(atPath: url.path) else { throw BertTokenizerError.fileNotFound(path: url.path) }
        let data: Data
        do { data = try Data(contentsOf: url) } catch {
            throw BertTokenizerError.unreadableFile(path: url.path, reason: error.localizedDescription)
        }
        guard let text = String(validating: [UInt8](data), as: UTF8.self) else {
            throw BertTokenizerError.unreadableFile(path: url.path, reason: "not valid UTF-8")
        }
        var merges: [(String, String)] = []
        for (n, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            var line = Substring(line)
            if line.unicodeScalars.last == "\r" { line = Substring(line.unicodeScalars.dropLast()) }
            if line.isEmpty || (n == 0 && line.hasPrefix("#version")) { continue }
            let parts = line.unicodeScalars.split(separator: " ", omittingEmptySubsequences: false)
            guard parts.count == 2, !parts[0].isEmpty, !parts[1].isEmpty else {
                throw BertTokenizerError.unreadableFile(path: url.path, reason: "line \(n + 1): expected two tokens separated by one space, found \(String(line).debugDescription)")
            }
            merges.append((String(String.UnicodeScalarView(parts[0])), String(String.UnicodeScalarView(parts[1]))))
        }
        return merges
    }

    /// RoBERTa's `vocab.json` + `merges.txt` (+ `tokenizer_config.json`).
    static func fromVocabAndMerges(vocab: URL, merges: URL, config: URL?) throws -> BertTokenizer {
        let (tokens, table) = try vocabulary(try TokenizerJSON.read(vocab), url: vocab, field: "(top level)")
        let pairs = try readMerges(merges)
        let options = try bpeOptions(config: config)
        var added = try config.flatMap { try addedTokens(try TokenizerJSON.read($0)["added_tokens_decoder"], url: $0, field: "added_tokens_decoder", table: table) }
        if added == nil { added = try defaultAdded(options, config: config, table: table) }
        var prefixSpace = false
        if let config, let v = try TokenizerJSON.read(config)["add_prefix_space"], !v.isNull {
            guard let b = v.bool else { throw fail(config, "add_prefix_space", "must be true or false") }
            prefixSpace = b
        }
        let bpe = try ByteLevelBPE(vocabulary: tokens, lookup: { table.lookup($0.unicodeScalars.map(\.value)) }, merges: pairs, added: added!,
                                   addPrefixSpace: prefixSpace, unknownID: table.lookup(options.unknownToken.unicodeScalars.map(\.value)), path: merges.path)
        return try BertTokenizer(bpe: bpe, vocabulary: tokens, table: table, options: options, path: vocab.path)
    }

    /// Hugging Face's `tokenizer.json`: a `WordPiece` model with a `BertNormalizer`, or a `BPE`
    /// model with the `ByteLevel` pre-tokenizer. Other pipelines are refused by name.
    static func fromTokenizerJSON(_ url: URL, config: URL?) throws -> BertTokenizer {
        let json = try TokenizerJSON.read(url)
        guard let model = json["model"], case .object = model else { throw fail(url, "model", "missing or not an object") }
        let type = model["type"]?.string ?? (model["merges"] != nil ? "BPE" : "")
        switch type {
        case "WordPiece":
            let (tokens, _) = try vocabulary(model["vocab"], url: url, field: "model.vocab")
            var o = BertTokenizer.Options()
            if let prefix = model["continuing_subword_prefix"]?.string, prefix != "##" {
                throw fail(url, "model.continuing_subword_prefix", "'\(prefix)' is not supported (only '##')")
            }
            if let unk = model["unk_token"]?.string { o.unknownToken = unk }
            if let n = model["max_input_chars_per_word"]?.int { o.maxInputCharsPerWord = n }
            if let n = json["normalizer"], !n.isNull {
                guard n["type"]?.string == "BertNormalizer" else {
                    throw fail(url, "normalizer.type", "'\(n["type"]?.string ?? "?")' is not supported with WordPiece (only BertNormalizer)")
                }
                if let v = n["lowercase"]?.bool { o.lowercase = v }
                if let v = n["handle_chinese_chars"]?.bool { o.tokenizeChineseChars = v }
                o.stripAccents = n["strip_accents"]?.bool
            }
            if let config {
                // tokenizer_config.json names the special tokens; the normalizer decides the text rules.
                let c = try BertTokenizer.readOptions(config)
                o.classifierToken = c.classifierToken; o.separatorToken = c.separatorToken
                o.paddingToken = c.paddingToken; o.maskToken = c.maskToken; o.neverSplit = c.neverSplit
                if c.unknownToken != BertTokenizer.Options().unknownToken { o.unknownToken = c.unknownToken }
            }
            return try BertTokenizer(wordPiece: tokens, options: o, path: url.path)
        case "BPE":
            let (tokens, table) = try vocabulary(model["vocab"], url: url, field: "model.vocab")
            if let n = json["normalizer"], !n.isNull {
                throw fail(url, "normalizer", "'\(n["type"]?.string ?? "?")' is not supported with BPE (byte-level BPE has none)")
            }
            var prefixSpace = false
            switch json["pre_tokenizer"] {
            case let p? where p["type"]?.string == "ByteLevel":
                prefixSpace = p["add_prefix_space"]?.bool ?? false
                if p["use_regex"]?.bool == false { throw fail(url, "pre_tokenizer.use_regex", "false is not supported") }
            case let p?:
                throw fail(url, "pre_tokenizer.type", "'\(p["type"]?.string ?? "?")' is not supported with BPE (only ByteLevel)")
            case nil:
                throw fail(url, "pre_tokenizer", "missing (byte-level BPE needs the ByteLevel pre-tokenizer)")
            }
            for key in ["continuing_subword_prefix", "end_of_word_suffix"] {
                if let v = model[key]?.string, !v.isEmpty { throw fail(url, "model." + key, "'\(v)' is not supported") }
            }
            if model["dropout"]?.isNull == false { throw fail(url, "model.dropout", "BPE dropout is not supported") }
            guard case .array(let list)? = model["merges"] else { throw fail(url, "model.merges", "missing or not a list") }
            var pairs: [(String, String)] = []
            pairs.reserveCapacity(list.count)
            for (n, m) in list.enumerated() {
                switch m {
                case .string(let s):
                    let parts = s.unicodeScalars.split(separator: " ", omittingEmptySubsequences: false)
                    guard parts.count == 2, !parts[0].isEmpty, !parts[1].isEmpty else {
                        throw fail(url, "model.merges[\(n)]", "expected \"left right\", found \(s.debugDescription)")
                    }
                    pairs.append((String(String.UnicodeScalarView(parts[0])), String(String.UnicodeScalarView(parts[1]))))
                case .array(let two) where two.count == 2 && two[0].string != nil && two[1].string != nil:
                    pairs.append((two[0].string!, two[1].string!))
                default:
                    throw fail(url, "model.merges[\(n)]", "expected \"left right\" or [left, right]")
                }
            }
            var options = try bpeOptions(config: config)
            if let cls = json["post_processor"]?["cls"], case .array(let c) = cls, let s = c.first?.string { options.classifierToken = s }
            if let sep = json["post_processor"]?["sep"], case .array(let c) = sep, let s = c.first?.string { options.separatorToken = s }
            let added = try addedTokens(json["added_tokens"], url: url, field: "added_tokens", table: table)
                ?? defaultAdded(options, config: config, table: table)
            let unknown = model["unk_token"]?.string.flatMap { table.lookup($0.unicodeScalars.map(\.value)) }
            let bpe = try ByteLevelBPE(vocabulary: tokens, lookup: { table.lookup($0.unicodeScalars.map(\.value)) }, merges: pairs, added: added,
                                       addPrefixSpace: prefixSpace, unknownID: unknown, path: url.path)
            return try BertTokenizer(bpe: bpe, vocabulary: tokens, table: table, options: options, path: url.path)
        default:
            throw fail(url, "model.type", "'\(type)' is not supported (WordPiece or BPE)")
        }
    }
}
