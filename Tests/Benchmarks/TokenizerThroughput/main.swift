// Tokenizer throughput, single thread: the byte-level BPE fixture tokenizer and MiniLM's WordPiece
// over the data sets' texts, first pass (empty BPE cache) and second pass. From the repo root:
//
//   swiftc -O -module-name TokenizerThroughput Sources/PandoText/*.swift Tests/Benchmarks/TokenizerThroughput/main.swift -o /tmp/tokbench
//   /tmp/tokbench [DATA_DIR]        # DATA_DIR defaults to ../shared/data
//
// Not part of any target: PandoText needs only Foundation, so it compiles on its own.
import Foundation

let data = CommandLine.arguments.count > 1 ? CommandLine.arguments[1] : "../shared/data"
func lines(_ name: String) -> [String] {
    guard let s = try? String(contentsOfFile: "\(data)/\(name)", encoding: .utf8) else { return [] }
    return Array(s.components(separatedBy: .newlines).dropFirst().filter { !$0.isEmpty })
}
let texts = ["trec_coarse.csv", "vader_tweets.csv", "math_questions_train.csv"].flatMap(lines)
let bytes = texts.reduce(0) { $0 + $1.utf8.count }
guard !texts.isEmpty else { fatalError("no texts under \(data)") }

func measure(_ name: String, _ tokenizer: BertTokenizer) {
    for pass in ["first pass", "second pass"] {
        let start = DispatchTime.now().uptimeNanoseconds
        var tokens = 0
        for t in texts { tokens += tokenizer.tokenIDs(t).count }
        let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
        print(String(format: "%@, %@: %d texts (%.1f MB) → %d tokens in %.3f s: %.0f k tokens/s, %.1f MB/s",
                     name, pass, texts.count, Double(bytes) / 1e6, tokens, seconds, Double(tokens) / seconds / 1e3, Double(bytes) / seconds / 1e6))
    }
}
measure("byte-level BPE (Tests/Fixtures/bpe)", try BertTokenizer(folder: URL(fileURLWithPath: "Tests/Fixtures/bpe")))
if let wordPiece = try? BertTokenizer(folder: URL(fileURLWithPath: "models/default")) { measure("WordPiece (models/default)", wordPiece) }
