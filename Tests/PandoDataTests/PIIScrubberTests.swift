import Foundation
import XCTest
import PandoData

/// Tests for PIIScrubber: tricky cases, the policy choices, and recall/precision on the
/// generated fixture (Tests/Fixtures/pii/testset.json, made by make_pii_testset.py).
final class PIIScrubberTests: XCTestCase {
    typealias Kind = PIIScrubber.Kind

    private func scrubber() throws -> PIIScrubber { try PIIScrubber() }

    private func scrubbed(_ s: String) throws -> String { try scrubber().scrub(s).text }

    // MARK: Tricky cases

    func testEmailInsideParentheses() throws {
        let r = try scrubber().scrub("Ask me (jane.doe+hw@lincoln.k12.il.us) after class.")
        XCTAssertEqual(r.text, "Ask me ([EMAIL]) after class.")
        XCTAssertEqual(r.counts, [.email: 1])
        XCTAssertEqual(try scrubbed("Write to a@b.co."), "Write to [EMAIL].")
        XCTAssertEqual(try scrubbed("not an email: @home, x@y, a@b.c"), "not an email: @home, x@y, a@b.c")
    }

    func testPhoneFormats() throws {
        let cases = ["(555) 123-4567", "555-123-4567", "555.123.4567", "555 123 4567", "5551234567",
                     "+1 555 123 4567", "+1-555-123-4567", "1-800-555-0199", "+1 (555) 123-4567",
                     "+44 20 7946 0958", "+33 1 23 45 67 89", "+49 (0) 30 1234567", "555-1234"]
        for c in cases {
            XCTAssertEqual(try scrubbed("Call \(c) now."), "Call [PHONE] now.", c)
        }
    }

    func testPhoneWithExtension() throws {
        XCTAssertEqual(try scrubbed("Office: (555) 123-4567 ext. 204."), "Office: [PHONE].")
        XCTAssertEqual(try scrubbed("Office: 555-123-4567 x12, thanks"), "Office: [PHONE], thanks")
        XCTAssertEqual(try scrubbed("Office: 555-123-4567, extension 9"), "Office: [PHONE]")
    }

    func testNumbersThatAreNotPhones() throws {
        let keep = ["In 2019 we went to 12 museums.", "Pi is 3.14159 and e is 2.71828.",
                    "Lunch is at 3:45 or 11:30.", "The test is on 10/12/2023.", "Score 87/100, 2015-2018.",
                    "We raised $1,250 and 1,000,000 people came.", "Chapters 3-5, questions 10-15.",
                    "The code is 12 34 56.", "Version 2.0.1 crashed 3 times."]
        let s = try scrubber()
        for t in keep { XCTAssertEqual(s.scrub(t).text, t) }
    }

    func testURLs() throws {
        XCTAssertEqual(try scrubbed("See https://example.org/a/b?c=1."), "See [URL].")
        XCTAssertEqual(try scrubbed("(see http://x.org/wiki/Foo_(bar)) ok"), "(see [URL]) ok")
        XCTAssertEqual(try scrubbed("Go to www.lincoln-high.org, then log in."), "Go to [URL], then log in.")
        XCTAssertEqual(try scrubbed("Open quizlet.com/homework now"), "Open [URL] now")
        XCTAssertEqual(try scrubbed("I use khanacademy.org daily."), "I use [URL] daily.")
        XCTAssertEqual(try scrubbed("e.g. the file.txt is fine."), "e.g. the file.txt is fine.")
    }

    func testAddresses() throws {
        XCTAssertEqual(try scrubbed("I live at 42 Elm St."), "I live at [ADDRESS].")
        XCTAssertEqual(try scrubbed("Mail 1600 Martin Luther King Blvd, Apt 4B today"), "Mail [ADDRESS] today")
        XCTAssertEqual(try scrubbed("at 221B N. Baker Street #7."), "at [ADDRESS].")
        XCTAssertEqual(try scrubbed("at 350 5th Avenue Suite 300"), "at [ADDRESS]")
        XCTAssertEqual(try scrubbed("We saw 3 big dogs way over there."), "We saw 3 big dogs way over there.")
    }

    func testStudentIDs() throws {
        let r = try scrubber().scrub("Student S1234567 (ID: 20231234) and ID# 55512.")
        XCTAssertEqual(r.text, "Student [STUDENT_ID] ([STUDENT_ID]) and [STUDENT_ID].")
        XCTAssertEqual(r.counts, [.studentID: 3])
        var c = PIIScrubber.Configuration()
        c.studentIDPatterns = [#"\bLHS-\d{4}\b"#]
        XCTAssertEqual(try PIIScrubber(configuration: c).scrub("Badge LHS-0042 and S1234567").text,
                       "Badge [STUDENT_ID] and S1234567")
        c.studentIDPatterns = ["(unclosed"]
        XCTAssertThrowsError(try PIIScrubber(configuration: c))
    }

    /// Policy: ambiguous names ("May", "Will", "Grace", "Brown") alone are words; in a
    /// name pair or after a title they are names. Lowercase and all-caps tokens are words.
    func testAmbiguousNamePolicy() throws {
        let s = try scrubber()
        XCTAssertEqual(s.scrub("May I go? Will you come? Grace period ends.").text,
                       "May I go? Will you come? Grace period ends.")
        XCTAssertEqual(s.scrub("Will Smith and May Johnson came.").text, "[NAME] and [NAME] came.")
        XCTAssertEqual(s.scrub("Ms. Brown and Coach Young left.").text, "Ms. [NAME] and Coach [NAME] left.")
        XCTAssertEqual(s.scrub("The brown dog; emma and EMMA.").text, "The brown dog; emma and EMMA.")
        XCTAssertEqual(s.scrub("Emma said hi to Olivia O'Brien.").text, "[NAME] said hi to [NAME].")
        XCTAssertEqual(s.scrub("Emma's dog met Anna-Maria.").text, "[NAME]'s dog met [NAME].")
    }

    func testFirstNameTakesUnlistedSurname() throws {
        let s = try scrubber()
        XCTAssertEqual(s.scrub("Emma Kowalczyk won.").text, "[NAME] won.")
        XCTAssertEqual(s.scrub("I saw Emma Monday and Emma The Great.").text, "I saw [NAME] Monday and [NAME] The Great.")
    }

    func testExtraNamesFromFile() throws {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("pii-names-\(getpid()).txt")
        try "# extra names\nZebulon\n\nquillfeather\n".write(to: url, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(at: url) }
        var c = PIIScrubber.Configuration()
        try c.addNames(fromFile: url.path)
        let r = try PIIScrubber(configuration: c).scrub("Zebulon Quillfeather and zebulon.")
        XCTAssertEqual(r.text, "[NAME] and zebulon.")
        XCTAssertEqual(r.counts, [.name: 1])
    }

    func testCountsNeverContainMatchesAndNonASCIIIsKept() throws {
        let r = try scrubber().scrub("Zoë (zoe@x.org) lives at 9 Rue Way; café ☕ 555-123-4567")
        XCTAssertEqual(r.text, "Zoë ([EMAIL]) lives at [ADDRESS]; café ☕ [PHONE]")
        XCTAssertEqual(r.counts, [.email: 1, .address: 1, .phone: 1])
        XCTAssertEqual(try scrubbed(""), "")
    }

    func testDisabledKindsAndCustomPlaceholders() throws {
        var c = PIIScrubber.Configuration()
        c.kinds = [.email]
        c.placeholders[.email] = "email"
        XCTAssertEqual(try PIIScrubber(configuration: c).scrub("Emma: e@x.org, 555-123-4567").text,
                       "Emma: email, 555-123-4567")
    }

    // MARK: Fixture: recall and precision

    struct Fixture: Decodable {
        struct Gold: Decodable { var start: Int; var end: Int; var kind: String }
        struct Sentence: Decodable { var text: String; var spans: [Gold] }
        var sentences: [Sentence]
    }

    static func loadFixture() throws -> Fixture {
        let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
            .appendingPathComponent("../Fixtures/pii/testset.json").standardized
        return try JSONDecoder().decode(Fixture.self, from: Data(contentsOf: url))
    }

    /// A gold span is found if a predicted span of the same kind overlaps it; a
    /// predicted span is correct if it overlaps a gold span of the same kind.
    func testRecallAndPrecisionOnFixture() throws {
        let fx = try Self.loadFixture()
        let s = try scrubber()
        var gold: [Kind: Int] = [:], found: [Kind: Int] = [:], exact: [Kind: Int] = [:]
        var pred: [Kind: Int] = [:], correct: [Kind: Int] = [:]
        for sent in fx.sentences {
            let spans = s.spans(in: sent.text)
            let g = sent.spans.map { (start: $0.start, end: $0.end, kind: Kind(rawValue: $0.kind)!) }
            for x in g {
                gold[x.kind, default: 0] += 1
                if spans.contains(where: { $0.kind == x.kind && $0.start < x.end && x.start < $0.end }) {
                    found[x.kind, default: 0] += 1
                } else {
                    print("MISS \(x.kind): \(sent.text)")
                }
                if spans.contains(where: { $0.kind == x.kind && $0.start == x.start && $0.end == x.end }) {
                    exact[x.kind, default: 0] += 1
                }
            }
            for p in spans {
                pred[p.kind, default: 0] += 1
                if g.contains(where: { $0.kind == p.kind && p.start < $0.end && $0.start < p.end }) {
                    correct[p.kind, default: 0] += 1
                } else {
                    print("FALSE \(p.kind): \(sent.text)")
                }
            }
        }
        var tp = 0, np = 0
        for k in Kind.allCases {
            let r = Double(found[k, default: 0]) / Double(max(gold[k, default: 0], 1))
            let p = Double(correct[k, default: 0]) / Double(max(pred[k, default: 0], 1))
            let ex = Double(exact[k, default: 0]) / Double(max(gold[k, default: 0], 1))
            print(String(format: "PII %-10@ gold %4d  recall %.3f  precision %.3f  exact-span %.3f",
                         k.rawValue as NSString, gold[k, default: 0], r, p, ex))
            XCTAssertGreaterThan(gold[k, default: 0], 20, "fixture has too few \(k)")
            XCTAssertGreaterThanOrEqual(r, k == .name ? 0.9 : 0.99, "recall \(k)")
            tp += correct[k, default: 0]; np += pred[k, default: 0]
        }
        let precision = Double(tp) / Double(max(np, 1))
        print(String(format: "PII overall precision %.3f", precision))
        XCTAssertGreaterThanOrEqual(precision, 0.95)
    }

    // MARK: Throughput (`swift test -c release --filter Throughput`)

    func testThroughput() throws {
        let fx = try Self.loadFixture()
        let s = try scrubber()
        // Two corpora: the fixture itself (PII in most sentences: the worst case) and
        // ordinary prose with one fixture sentence in ten.
        let dense = fx.sentences.map(\.text).joined(separator: "\n") + "\n"
        let prose = """
            The students measured the height of the plants every morning and wrote the results \
            in their notebooks. After three weeks, the plants near the window had grown taller \
            than the ones in the corner, which surprised nobody except the teacher.
            We discussed why light matters for photosynthesis and how water moves through the stem.

            """
        var mixed = ""
        for (i, t) in fx.sentences.map(\.text).enumerated() { mixed += prose; if i % 10 == 0 { mixed += t + "\n" } }
        #if DEBUG
        let target = 1 << 20
        #else
        let target = 32 << 20
        #endif
        for (label, unit) in [("pii-dense", dense), ("prose", mixed)] {
            let reps = max(1, target / unit.utf8.count)
            let corpus = String(repeating: unit, count: reps)
            let mb = Double(corpus.utf8.count) / 1e6
            _ = s.scrub(String(corpus.prefix(100_000)))  // warm-up
            var best = Double.infinity
            var counts: [Kind: Int] = [:]
            for _ in 0..<3 {
                let t0 = DispatchTime.now().uptimeNanoseconds
                counts = s.scrub(corpus).counts
                best = min(best, Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9)
            }
            let rate = mb / best
            print(String(format: "PII throughput %@: %.1f MB in %.3f s = %.1f MB/s (%d spans)",
                         label as NSString, mb, best, rate, counts.values.reduce(0, +)))
            #if !DEBUG
            XCTAssertGreaterThanOrEqual(rate, 10, "\(label) throughput")
            #endif
        }
    }
}
