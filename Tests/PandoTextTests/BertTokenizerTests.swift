import Foundation
import XCTest
@testable import PandoText

/// Fixtures made by Tests/Fixtures/make_tokenizer_fixtures.py from Hugging Face's slow BertTokenizer.
let fixtureDirectory = URL(fileURLWithPath: #filePath)
    .deletingLastPathComponent().deletingLastPathComponent()
    .appendingPathComponent("Fixtures/tokenizer")

private struct Fixture: Decodable {
    struct Result: Decodable { var tokens: [String]; var ids: [Int32] }
    struct Case: Decodable { var text: String; var results: [String: Result] }
    struct Encode: Decodable {
        var config: String; var text: String; var pair: String?; var maxLength: Int
        var ids: [Int32]; var typeIDs: [Int32]
    }
    struct Decode: Decodable { var ids: [Int32]; var skip: String; var keep: String }
    var python_unicode: String
    var configs: [String: BertTokenizer.Options]
    var cases: [Case]
    var encodes: [Encode]
    var decodes: [Decode]

    static let shared: Fixture = {
        let data = try! Data(contentsOf: fixtureDirectory.appendingPathComponent("cases.json"))
        return try! JSONDecoder().decode(Fixture.self, from: data)
    }()
}

private func tokenizer(_ config: String) throws -> BertTokenizer {
    let vocabulary = try BertTokenizer.readVocabulary(fixtureDirectory.appendingPathComponent("vocab.txt"))
    return try BertTokenizer(vocabulary: vocabulary, options: Fixture.shared.configs[config]!)
}

private func show(_ s: String) -> String {
    s.unicodeScalars.map { $0.isASCII && $0.value >= 0x20 && $0.value < 0x7F ? String($0) : String(format: "\\u{%X}", $0.value) }.joined()
}

final class HuggingFaceParityTests: XCTestCase {
    func testFixtureIsLargeEnough() {
        XCTAssertGreaterThanOrEqual(Fixture.shared.cases.count, 250)
        XCTAssertGreaterThanOrEqual(Fixture.shared.configs.count, 3)
        let v = UnicodeClass.referenceUnicodeVersion
        XCTAssertEqual(Fixture.shared.python_unicode, "\(v.major).\(v.minor).0",
                       "fixtures were made with another Python Unicode version; update UnicodeClass.referenceUnicodeVersion")
    }

    func testTokensAndIDsMatchHuggingFace() throws {
        var failures: [String] = []
        var checked = 0
        for (name, _) in Fixture.shared.configs.sorted(by: { $0.key < $1.key }) {
            let tok = try tokenizer(name)
            for c in Fixture.shared.cases {
                guard let expected = c.results[name] else { continue }
                checked += 1
                let tokens = tok.tokenize(c.text)
                let ids = tok.tokenIDs(c.text)
                if tokens != expected.tokens || ids != expected.ids {
                    failures.append("[\(name)] \"\(show(c.text))\"\n  expected \(expected.tokens.map(show)) \(expected.ids)\n  got      \(tokens.map(show)) \(ids)")
                }
            }
        }
        print("HF parity: \(checked - failures.count)/\(checked) (case, config) pairs match")
        XCTAssert(failures.isEmpty, "\(failures.count) mismatches; first ones:\n" + failures.prefix(15).joined(separator: "\n"))
    }

    func testFolderLoadsMiniLMSettings() throws {
        let tok = try BertTokenizer(folder: fixtureDirectory)
        XCTAssertEqual(tok.options, Fixture.shared.configs["folder"])
        XCTAssertEqual(tok.vocabularySize, 30522)
        XCTAssertEqual([tok.paddingID, tok.unknownID, tok.classifierID, tok.separatorID], [0, 100, 101, 102])
        for c in Fixture.shared.cases.prefix(50) {
            XCTAssertEqual(tok.tokenIDs(c.text), c.results["folder"]!.ids, show(c.text))
        }
    }

    func testEncodeAndTruncationMatchHuggingFace() throws {
        var failures: [String] = []
        let toks = try Dictionary(uniqueKeysWithValues: ["folder", "cased"].map { ($0, try tokenizer($0)) })
        for e in Fixture.shared.encodes {
            let got = toks[e.config]!.encode(e.text, pair: e.pair, maxLength: e.maxLength)
            if got.ids != e.ids || got.typeIDs != e.typeIDs || got.count != e.ids.count {
                failures.append("[\(e.config) max \(e.maxLength)] \"\(show(e.text))\" / \(e.pair.map(show) ?? "nil")\n  expected \(e.ids) \(e.typeIDs)\n  got      \(got.ids) \(got.typeIDs)")
            }
        }
        print("HF encode parity: \(Fixture.shared.encodes.count - failures.count)/\(Fixture.shared.encodes.count)")
        XCTAssert(failures.isEmpty, failures.prefix(10).joined(separator: "\n"))
    }

    func testDecodeMatchesHuggingFace() throws {
        let tok = try tokenizer("folder")
        for d in Fixture.shared.decodes {
            XCTAssertEqual(tok.decode(d.ids), d.skip)
            XCTAssertEqual(tok.decode(d.ids, skipSpecialTokens: false), d.keep)
        }
    }
}

final class BertTokenizerUnitTests: XCTestCase {
    let specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]

    func testMissingVocabularyNamesThePath() {
        let folder = URL(fileURLWithPath: "/nonexistent/model-folder")
        XCTAssertThrowsError(try BertTokenizer(folder: folder)) { error in
            // The folder has none of the tokenizer files; the error names vocab.txt and the alternatives.
            XCTAssertEqual(error as? BertTokenizerError, .fileNotFound(path: "/nonexistent/model-folder/vocab.txt (nor tokenizer.json, nor vocab.json + merges.txt)"))
            XCTAssertTrue("\(error)".contains("/nonexistent/model-folder/vocab.txt"))
        }
    }

    func testMissingSpecialTokens() {
        XCTAssertThrowsError(try BertTokenizer(vocabulary: ["[PAD]", "[CLS]", "[SEP]", "hello"])) { error in
            XCTAssertEqual(error as? BertTokenizerError, .missingSpecialToken(role: "unknown", token: "[UNK]"))
            XCTAssertTrue("\(error)".contains("[UNK]"))
        }
        XCTAssertThrowsError(try BertTokenizer(vocabulary: ["[PAD]", "[UNK]", "[SEP]"])) { error in
            XCTAssertEqual(error as? BertTokenizerError, .missingSpecialToken(role: "classifier", token: "[CLS]"))
        }
        XCTAssertThrowsError(try BertTokenizer(vocabulary: [])) { error in
            XCTAssertEqual(error as? BertTokenizerError, .invalidVocabulary(reason: "no tokens"))
        }
        // [MASK] is optional.
        XCTAssertNoThrow(try BertTokenizer(vocabulary: ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]))
    }

    func testDuplicateTokenMapsToItsLastLineLikeHuggingFace() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("pando-dup-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        try (specials + ["hello", "world", "hello"]).joined(separator: "\n").appending("\n")
            .write(to: dir.appendingPathComponent("vocab.txt"), atomically: true, encoding: .utf8)
        let tokenizer = try BertTokenizer(folder: dir)
        XCTAssertEqual(tokenizer.tokenIDs("hello world"), [Int32(specials.count + 2), Int32(specials.count + 1)])
    }

    func testBadConfigNamesTheFile() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("pando-cfg-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        try specials.joined(separator: "\n").write(to: dir.appendingPathComponent("vocab.txt"), atomically: true, encoding: .utf8)
        // No config: defaults.
        XCTAssertEqual(try BertTokenizer(folder: dir).options, BertTokenizer.Options())
        try "{ not json".write(to: dir.appendingPathComponent("tokenizer_config.json"), atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try BertTokenizer(folder: dir)) { error in
            XCTAssertTrue("\(error)".contains("tokenizer_config.json"), "\(error)")
        }
        try #"{"do_lower_case": false, "unk_token": {"content": "[UNK]"}, "never_split": ["a-b"]}"#
            .write(to: dir.appendingPathComponent("tokenizer_config.json"), atomically: true, encoding: .utf8)
        let o = try BertTokenizer(folder: dir).options
        XCTAssertFalse(o.lowercase)
        XCTAssertEqual(o.neverSplit, ["a-b"])
    }

    func testVocabularyFileLineEndings() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("pando-crlf-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let url = dir.appendingPathComponent("vocab.txt")
        try Data("[PAD]\r\n[UNK]\r\n[CLS]\n[SEP]\rhello".utf8).write(to: url)
        XCTAssertEqual(try BertTokenizer.readVocabulary(url), ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "hello"])
        try Data([0x61, 0x0A, 0xFF, 0x0A]).write(to: url)
        XCTAssertThrowsError(try BertTokenizer.readVocabulary(url)) { error in
            XCTAssertTrue("\(error)".contains("line 2"), "\(error)")
        }
    }

    /// Swift `String` equality treats "é" and "e\u{301}" as equal; Python's dict does not.
    func testCanonicallyEquivalentTokensStayDistinct() throws {
        var cased = BertTokenizer.Options()
        cased.lowercase = false
        let precomposed = try BertTokenizer(vocabulary: specials + ["caf", "##\u{E9}", "\u{E9}", "e\u{301}"], options: cased)
        XCTAssertEqual(precomposed.id(for: "\u{E9}"), 7)
        XCTAssertEqual(precomposed.id(for: "e\u{301}"), 8)
        // Input is NFC-normalized first (as HF does), so both spellings find the precomposed piece.
        XCTAssertEqual(precomposed.tokenize("caf\u{E9}"), ["caf", "##\u{E9}"])
        XCTAssertEqual(precomposed.tokenize("cafe\u{301}"), ["caf", "##\u{E9}"])
        XCTAssertEqual(precomposed.tokenIDs("\u{E9}"), [7])
        // A decomposed-only vocabulary entry must not match the precomposed text.
        let decomposed = try BertTokenizer(vocabulary: specials + ["caf", "##e\u{301}"], options: cased)
        XCTAssertEqual(decomposed.tokenize("caf\u{E9}"), ["[UNK]"])
        XCTAssertEqual(decomposed.tokenize("cafe\u{301}"), ["[UNK]"])
    }

    func testWordLengthCountsScalars() throws {
        var options = BertTokenizer.Options()
        options.lowercase = false
        options.maxInputCharsPerWord = 4
        let tok = try BertTokenizer(vocabulary: specials + ["a", "##a", "\u{1F44D}", "##\u{1F3FD}"], options: options)
        XCTAssertEqual(tok.tokenize("aaaa aaaaa"), ["a", "##a", "##a", "##a", "[UNK]"])
        // 👍🏽 is one Character but two scalars.
        XCTAssertEqual(tok.tokenize("\u{1F44D}\u{1F3FD}"), ["\u{1F44D}", "##\u{1F3FD}"])
    }

    func testNeverSplitAndSpecialTokensInText() throws {
        var options = BertTokenizer.Options()
        options.neverSplit = ["hello-world"]
        let tok = try BertTokenizer(vocabulary: specials + ["hello", "world", "-", "x"], options: options)
        XCTAssertEqual(tok.tokenize("Hello-World x"), ["hello-world", "x"])
        XCTAssertEqual(tok.tokenIDs("hello-world"), [tok.unknownID])
        XCTAssertEqual(tok.tokenize("x[SEP]x [CLS]"), ["x", "[SEP]", "x", "[CLS]"])
    }

    func testEncodeSingleAndPair() throws {
        let tok = try tokenizer("folder")
        let single = tok.encode("hello world")
        XCTAssertEqual(single.ids, [101, 7592, 2088, 102])
        XCTAssertEqual(single.typeIDs, [0, 0, 0, 0])
        XCTAssertEqual(single.count, 4)
        let pair = tok.encode("hello", pair: "world")
        XCTAssertEqual(pair.ids, [101, 7592, 102, 2088, 102])
        XCTAssertEqual(pair.typeIDs, [0, 0, 0, 1, 1])
        let truncated = tok.encode("one two three four five six seven", maxLength: 5)
        XCTAssertEqual(truncated.count, 5)
        XCTAssertEqual(truncated.ids.first, 101)
        XCTAssertEqual(truncated.ids.last, 102)
        XCTAssertEqual(truncated.ids[1...3], tok.encode("one two three").ids[1...3])
    }

    func testBatchPaddingAndMask() throws {
        let tok = try tokenizer("folder")
        let texts = ["hello", "hello world, how are you?", ""]
        let longest = tok.encodeBatch(texts, maxLength: 512, padding: .longest)
        XCTAssertEqual(longest.size, 3)
        XCTAssertEqual(longest.lengths, [3, 9, 2])
        XCTAssertEqual(longest.length, 9)
        XCTAssertEqual(longest.ids.count, 27)
        XCTAssertEqual(longest.typeIDs.count, 27)
        XCTAssertEqual(longest.mask.count, 27)
        XCTAssertEqual(Array(longest.ids[0 ..< 9]), [101, 7592, 102, 0, 0, 0, 0, 0, 0])
        XCTAssertEqual(Array(longest.mask[0 ..< 9]), [1, 1, 1, 0, 0, 0, 0, 0, 0])
        XCTAssertEqual(Array(longest.mask[9 ..< 18]), Array(repeating: 1, count: 9))
        XCTAssertEqual(Array(longest.ids[18 ..< 20]), [101, 102])
        XCTAssertEqual(longest.mask.reduce(0, +), 14)

        let fixed = tok.encodeBatch(texts, maxLength: 512, padding: .fixed(6))
        XCTAssertEqual(fixed.length, 6)
        XCTAssertEqual(fixed.lengths, [3, 6, 2])
        XCTAssertEqual(fixed.ids.count, 18)
        XCTAssertEqual(fixed.ids[11], 102)  // truncated row still ends in [SEP]
        XCTAssertEqual(Array(fixed.mask[12 ..< 18]), [1, 1, 0, 0, 0, 0])

        let short = tok.encodeBatch(texts, maxLength: 4, padding: .longest)
        XCTAssertEqual(short.length, 4)
        XCTAssertEqual(short.lengths, [3, 4, 2])

        let empty = tok.encodeBatch([], maxLength: 8, padding: .longest)
        XCTAssertEqual(empty.size, 0)
        XCTAssertEqual(empty.ids, [])
    }

    func testDecodeRoundTrip() throws {
        let tok = try tokenizer("folder")
        for text in ["hello, world!", "unaffable tokenization is fun", "the quick brown fox jumps over the lazy dog."] {
            XCTAssertEqual(tok.decode(tok.encode(text).ids), text)
        }
        XCTAssertEqual(tok.decode(tok.encode("hello").ids, skipSpecialTokens: false), "[CLS] hello [SEP]")
        XCTAssertEqual(tok.token(for: 7592), "hello")
        XCTAssertEqual(tok.id(for: "hello"), 7592)
    }

    func testOptionsCodable() throws {
        var o = BertTokenizer.Options()
        o.stripAccents = false
        o.neverSplit = ["x"]
        let back = try JSONDecoder().decode(BertTokenizer.Options.self, from: JSONEncoder().encode(o))
        XCTAssertEqual(back, o)
        let partial = try JSONDecoder().decode(BertTokenizer.Options.self, from: Data(#"{"lowercase": false}"#.utf8))
        XCTAssertFalse(partial.lowercase)
        XCTAssertEqual(partial.unknownToken, "[UNK]")
    }
}
