import Foundation
import XCTest
@testable import PandoText

/// Fixtures made by Tests/Fixtures/make_family_tokenizer_fixtures.py from Hugging Face's
/// RobertaTokenizer (byte-level BPE) and pure-Python BertTokenizer (a cased multilingual vocabulary).
private let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .appendingPathComponent("Fixtures")

private struct BPEFixture: Decodable {
    struct Case: Decodable { var text: String; var tokens: [String]; var ids: [Int32] }
    struct Encode: Decodable { var text: String; var pair: String?; var max_length: Int; var ids: [Int32] }
    struct Decode: Decodable { var ids: [Int32]; var text: String }
    var cases: [Case]
    var encodes: [Encode]
    var decodes: [Decode]

    static let shared: BPEFixture = {
        let data = try! Data(contentsOf: fixtures.appendingPathComponent("bpe/cases.json"))
        return try! JSONDecoder().decode(BPEFixture.self, from: data)
    }()
}

private struct WordPieceFixture: Decodable {
    struct Config: Decodable { var do_lower_case: Bool; var strip_accents: Bool?; var tokenize_chinese_chars: Bool }
    struct Result: Decodable { var tokens: [String]; var ids: [Int32] }
    struct Case: Decodable { var text: String; var results: [String: Result] }
    var configs: [String: Config]
    var cases: [Case]

    static let shared: WordPieceFixture = {
        let data = try! Data(contentsOf: fixtures.appendingPathComponent("wordpiece_cased/cases.json"))
        return try! JSONDecoder().decode(WordPieceFixture.self, from: data)
    }()
}

private func show(_ s: String) -> String {
    s.unicodeScalars.map { $0.isASCII && $0.value >= 0x20 && $0.value < 0x7F ? String($0) : String(format: "\\u{%X}", $0.value) }.joined()
}

final class ByteLevelBPETests: XCTestCase {
    /// Every fixture string, from vocab.json + merges.txt and from tokenizer.json alone.
    func testTokensAndIDsMatchRobertaTokenizer() throws {
        let cases = BPEFixture.shared.cases
        XCTAssertGreaterThan(cases.count, 500, "the 419 WordPiece strings plus the BPE cases")
        for folder in ["bpe", "bpe_json"] {
            let tok = try BertTokenizer(folder: fixtures.appendingPathComponent(folder))
            XCTAssertEqual(tok.kind, .byteLevelBPE, folder)
            var failures: [String] = []
            for c in cases {
                let ids = tok.tokenIDs(c.text), tokens = tok.tokenize(c.text)
                if ids != c.ids || tokens != c.tokens {
                    failures.append("\"\(show(c.text).prefix(80))\"\n  expected \(c.tokens.map(show).prefix(20)) \(c.ids.prefix(20))\n  got      \(tokens.map(show).prefix(20)) \(ids.prefix(20))")
                }
            }
            XCTAssert(failures.isEmpty, "[\(folder)] \(failures.count) of \(cases.count) differ:\n" + failures.prefix(15).joined(separator: "\n"))
        }
    }

    /// The same strings again: the per-piece cache must give what the first pass computed.
    func testCachedPiecesGiveTheSameIDs() throws {
        let tok = try BertTokenizer(folder: fixtures.appendingPathComponent("bpe"))
        let first = BPEFixture.shared.cases.map { tok.tokenIDs($0.text) }
        let second = BPEFixture.shared.cases.map { tok.tokenIDs($0.text) }
        XCTAssertEqual(first, second)
        XCTAssertEqual(first, BPEFixture.shared.cases.map(\.ids))
    }

    /// `<s> a </s>` and `<s> a </s></s> b </s>` with Hugging Face's longest-first truncation.
    func testEncodeTemplatesAndTruncationMatch() throws {
        let tok = try BertTokenizer(folder: fixtures.appendingPathComponent("bpe"))
        var failures: [String] = []
        for e in BPEFixture.shared.encodes {
            let got = tok.encode(e.text, pair: e.pair, maxLength: e.max_length)
            if got.ids != e.ids { failures.append("\"\(show(e.text).prefix(40))\" + \(e.pair.map { "\"\(show($0).prefix(40))\"" } ?? "nil") max \(e.max_length): expected \(e.ids) got \(got.ids)") }
            XCTAssertEqual(got.typeIDs, [Int32](repeating: 0, count: got.ids.count))
        }
        XCTAssertGreaterThan(BPEFixture.shared.encodes.filter { $0.pair != nil }.count, 20)
        XCTAssert(failures.isEmpty, "\(failures.count) differ:\n" + failures.prefix(10).joined(separator: "\n"))
        XCTAssertEqual(tok.classifierID, 0)
        XCTAssertEqual(tok.paddingID, 1)
        XCTAssertEqual(tok.separatorID, 2)
    }

    func testDecodeMatches() throws {
        let tok = try BertTokenizer(folder: fixtures.appendingPathComponent("bpe"))
        var failures: [String] = []
        for d in BPEFixture.shared.decodes where tok.decode(d.ids) != d.text {
            failures.append("\(d.ids.prefix(12)): expected \"\(show(d.text))\" got \"\(show(tok.decode(d.ids)))\"")
        }
        XCTAssert(failures.isEmpty, "\(failures.count) differ:\n" + failures.prefix(10).joined(separator: "\n"))
    }

    /// A piece of 21 000 letters (the fixtures' longest is 5 000) is merged and decodes back.
    func testLongPieceMergesAndRoundTrips() throws {
        let tok = try BertTokenizer(folder: fixtures.appendingPathComponent("bpe"))
        let text = String(repeating: "the", count: 7000)
        let ids = tok.tokenIDs(text)
        XCTAssertLessThanOrEqual(ids.count, 7000, "merges applied: at most one token per 'the'")
        XCTAssertEqual(tok.decode(ids), text)
    }

    func testMalformedFilesAreNamed() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("bpe-bad-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let vocab = dir.appendingPathComponent("vocab.json"), merges = dir.appendingPathComponent("merges.txt")
        func expectError(_ contains: [String], _ line: UInt = #line) {
            XCTAssertThrowsError(try BertTokenizer(folder: dir), line: line) { error in
                let text = "\(error)"
                for c in contains { XCTAssert(text.contains(c), "\(text) lacks \(c)", line: line) }
            }
        }
        try #"{"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3, "a": 4, "b": 5, "ab": 6"#.write(to: vocab, atomically: true, encoding: .utf8)
        try "#version: 0.2\na b\n".write(to: merges, atomically: true, encoding: .utf8)
        expectError(["vocab.json", "invalid JSON"])
        try #"{"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3, "a": 4, "b": "five"}"#.write(to: vocab, atomically: true, encoding: .utf8)
        expectError(["vocab.json", "\"b\"", "non-negative integer"])
        try #"{"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3, "a": 4, "b": 5, "ab": 6}"#.write(to: vocab, atomically: true, encoding: .utf8)
        try "#version: 0.2\na b c\n".write(to: merges, atomically: true, encoding: .utf8)
        expectError(["merges.txt", "line 2"])
        try "a z\n".write(to: merges, atomically: true, encoding: .utf8)
        expectError(["merges.txt", "merge 1", "z"])
        try FileManager.default.removeItem(at: merges)
        expectError(["merges.txt"])
        try "a b\n".write(to: merges, atomically: true, encoding: .utf8)
        try #"{"<s>": 0, "</s>": 2, "<unk>": 3, "a": 4, "b": 5, "ab": 6}"#.write(to: vocab, atomically: true, encoding: .utf8)
        expectError(["vocab.json", "padding", "<pad>"])
        try #"{"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3, "a": 4, "b": 5, "ab": 6}"#.write(to: vocab, atomically: true, encoding: .utf8)
        let ok = try BertTokenizer(folder: dir)
        XCTAssertEqual(ok.tokenIDs("ab"), [6])

        let json = dir.appendingPathComponent("tokenizer.json")
        try #"{"model": {"type": "Unigram", "vocab": []}}"#.write(to: json, atomically: true, encoding: .utf8)
        expectError(["tokenizer.json", "model.type", "Unigram"])
        try #"{"pre_tokenizer": {"type": "Metaspace"}, "model": {"type": "BPE", "vocab": {"a": 0}, "merges": []}}"#.write(to: json, atomically: true, encoding: .utf8)
        expectError(["tokenizer.json", "pre_tokenizer.type", "Metaspace"])
        try #"{"pre_tokenizer": {"type": "ByteLevel"}, "model": {"type": "BPE", "vocab": {"a": 0}, "merges": [7]}}"#.write(to: json, atomically: true, encoding: .utf8)
        expectError(["tokenizer.json", "model.merges[0]"])
        try #"{"model": {"type": "WordPiece", "vocab": {"[UNK]": 0, "a": 0}}}"#.write(to: json, atomically: true, encoding: .utf8)
        expectError(["tokenizer.json", "model.vocab", "id 0"])
    }
}

final class CasedMultilingualWordPieceTests: XCTestCase {
    private func options(_ c: WordPieceFixture.Config) -> BertTokenizer.Options {
        var o = BertTokenizer.Options()
        o.lowercase = c.do_lower_case
        o.stripAccents = c.strip_accents
        o.tokenizeChineseChars = c.tokenize_chinese_chars
        return o
    }

    /// Cased, cased with accents stripped, cased without CJK splitting, and uncased, on a
    /// cased multilingual vocabulary, against the pure-Python BertTokenizer.
    func testSettingsMatchHuggingFace() throws {
        let f = WordPieceFixture.shared
        XCTAssertEqual(Set(f.configs.keys), ["cased", "cased_strip_accents", "cased_no_chinese", "uncased"])
        let vocabulary = try BertTokenizer.readVocabulary(fixtures.appendingPathComponent("wordpiece_cased/vocab.txt"))
        var failures: [String] = []
        var differing = Set<String>()
        for (name, config) in f.configs.sorted(by: { $0.key < $1.key }) {
            let tok = try BertTokenizer(vocabulary: vocabulary, options: options(config))
            for c in f.cases {
                let expected = c.results[name]!
                let tokens = tok.tokenize(c.text), ids = tok.tokenIDs(c.text)
                if tokens != expected.tokens || ids != expected.ids {
                    failures.append("[\(name)] \"\(show(c.text).prefix(60))\" expected \(expected.tokens.map(show).prefix(12)) got \(tokens.map(show).prefix(12))")
                }
            }
        }
        // The settings must matter on these strings, or the test would not tell them apart.
        for c in f.cases {
            let r = c.results
            if r["cased"]!.ids != r["cased_strip_accents"]!.ids { differing.insert("strip_accents") }
            if r["cased"]!.ids != r["cased_no_chinese"]!.ids { differing.insert("tokenize_chinese_chars") }
            if r["cased"]!.ids != r["uncased"]!.ids { differing.insert("do_lower_case") }
        }
        XCTAssertEqual(differing, ["strip_accents", "tokenize_chinese_chars", "do_lower_case"])
        XCTAssert(failures.isEmpty, "\(failures.count) differ:\n" + failures.prefix(15).joined(separator: "\n"))
    }

    /// A folder with tokenizer.json and no vocab.txt: the same vocabulary and the same tokens.
    func testTokenizerJSONWithoutVocabTxt() throws {
        let folder = fixtures.appendingPathComponent("wordpiece_json")
        XCTAssertFalse(FileManager.default.fileExists(atPath: folder.appendingPathComponent("vocab.txt").path))
        let tok = try BertTokenizer(folder: folder)
        XCTAssertEqual(tok.kind, .wordPiece)
        XCTAssertFalse(tok.options.lowercase)
        let vocabulary = try BertTokenizer.readVocabulary(fixtures.appendingPathComponent("wordpiece_cased/vocab.txt"))
        XCTAssertEqual(tok.vocabularySize, vocabulary.count)
        for (i, t) in vocabulary.enumerated() { XCTAssertEqual(tok.token(for: Int32(i)), t) }
        var failures = 0
        for c in WordPieceFixture.shared.cases where tok.tokenIDs(c.text) != c.results["cased"]!.ids { failures += 1 }
        XCTAssertEqual(failures, 0)
    }
}
