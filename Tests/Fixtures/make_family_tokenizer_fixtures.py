#!/usr/bin/env python3
"""Generate the tokenizer references for the model families beyond MiniLM's WordPiece.

What it makes:
  Tests/Fixtures/bpe/            vocab.json + merges.txt of a small byte-level BPE trained here
                                 (RoBERTa's special tokens at RoBERTa's ids), tokenizer_config.json,
                                 and cases.json: the tokens and ids Hugging Face's RobertaTokenizer
                                 gives for the 419 strings of tokenizer/cases.json plus the new
                                 cases below (leading spaces, byte fallback, emoji, CJK, accents,
                                 whitespace runs, very long words, special tokens in text), and
                                 encode/pair/truncation cases with <s> and </s>.
  Tests/Fixtures/bpe_json/       the same tokenizer as tokenizer.json only (no vocab.json/merges.txt).
  Tests/Fixtures/wordpiece_cased/ vocab.txt of a small *cased* multilingual WordPiece vocabulary
                                 trained here, and cases.json: the pure-Python BertTokenizer's output
                                 under several settings (cased, cased + strip_accents, no Chinese
                                 splitting, uncased) for the same strings.
  Tests/Fixtures/wordpiece_json/ that vocabulary as a BERT tokenizer.json only (no vocab.txt).

The vocabularies are trained (not downloaded: no hub here) with the `tokenizers` library on the
project's data sets and the test strings; a tiny vocabulary exercises the algorithms, which are
what must agree with Hugging Face. In transformers 5.x RobertaTokenizer is backed by the Rust
`tokenizers` library, so that is the BPE reference.

Run from the repo root with a venv holding transformers and tokenizers:
  HF_HUB_OFFLINE=1 .venv-tok/bin/python Tests/Fixtures/make_family_tokenizer_fixtures.py
"""
import csv
import json
import os
import shutil

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import tokenizers  # noqa: E402
import transformers  # noqa: E402
from tokenizers import ByteLevelBPETokenizer, BertWordPieceTokenizer  # noqa: E402
from transformers import RobertaTokenizer  # noqa: E402

try:
    from transformers.models.bert.tokenization_bert_legacy import BertTokenizerLegacy as SlowBert
except ImportError:  # transformers 4.x
    from transformers import BertTokenizer as SlowBert

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
DATA_DIR = os.environ.get("PANDO_DATA", "/work/shared/data")
if not os.path.isdir(DATA_DIR):
    DATA_DIR = os.path.join(os.path.dirname(REPO), "shared", "data")

with open(os.path.join(HERE, "tokenizer", "cases.json"), encoding="utf-8") as f:
    BASE = [c["text"] for c in json.load(f)["cases"]]

NEW = [
    # leading and repeated spaces (RoBERTa's "Ġ" marks a preceding space)
    " Hello", "  Hello", "Hello ", "Hello  ", " ", "  ", "   a", "a   b", "a \t b", "a\n\nb", " \n ", "\n Hello",
    "hello world", " hello world", "Hello World", "HELLO", "hello  world  ", "\tindented", "x \u00a0y", "a\u3000b",
    # contractions: the pattern's 's 't 're 've 'm 'll 'd, and what is not one
    "it's", "It'S", "we're they've I'm you'll he'd", "'s", "''s", "rock'n'roll", "O'Neill's", "can't", "dogs'", "’s",
    # byte fallback: scalars the tiny vocabulary never saw are single-byte tokens
    "\u0d9a\u0dca\u0dc2", "𓀀𓀁", "\U0010fffd", "\u0e01\u0e32\u0e23", "ᚦᚨᚱ", "Ꙃ", "\u2603", "\ufffd\ufffd",
    "control\x00chars\x07here", "\x1c\x1d\x1e\x1f", "a\x85b", "a\u2028b",
    # emoji, sequences, flags, skin tones
    "😀", "I ❤️ NY", "👨‍👩‍👧‍👦", "👍🏽👍🏿", "🇫🇷🇯🇵", "🏳️‍🌈 pride", " 😀", "😀😀😀😀😀",
    # CJK and other scripts
    "中文分词测试", " 中文", "日本語とEnglish", "한국어 텍스트", "混合mixed文本text", "\U00020000\U0002a6df",
    "Привет мир", "مرحبا بالعالم", "नमस्ते", "ไทย", "Ελληνικά",
    # accents composed and decomposed
    "café", "cafe\u0301", " naïve", "Ångström", "e\u0301\u0301", "\u0301start", "Zoë's", "résumé résumé",
    # numbers and punctuation runs
    "1234567890", " 42", "3.14", "1,000,000", "$100", "!!!???", "...", " ...", "--", "a--b", "(a)", "<b>bold</b>",
    "http://example.com/a?b=c", "e-mail@example.org", "#hashtag @user", "tab\tsep", "snake_case", "CamelCase",
    # very long words (the cache and the merge loop), one repeated and one varied
    "a" * 300, "ab" * 400, "x" * 5000, "pneumonoultramicroscopicsilicovolcanoconiosis" * 20,
    "".join(chr(0x4e00 + (i * 37) % 2000) for i in range(600)),
    "".join("abcdefghijklmnopqrstuvwxyz"[(i * 7) % 26] for i in range(3000)),
    # special tokens written in the text (added tokens; <mask> strips the space before it)
    "<s>", "</s>", "<pad>", "<unk>", "<mask>", "Hello <mask> world", "Hello<mask>world", "a  <mask>", "<s>hi</s>",
    "x</s></s>y", "<S>", "< s >", "<mask><mask>",
]

CORPUS_EXTRA = [
    "Les élèves étudient les mathématiques à l'école.", "Los estudiantes aprenden historia y ciencias.",
    "Die Schüler lesen ein Buch über Straßenbahnen.", "学生们在学校学习数学和科学。", "生徒は学校で数学を勉強します。",
    "학생들은 학교에서 수학을 공부합니다.", "Ученики читают книги в библиотеке.", "Os alunos gostam de música e português.",
    "Öğrenciler okulda İngilizce öğreniyor.", "Học sinh học tiếng Việt ở trường.",
]


def corpus():
    out = []
    for name in ("trec_coarse.csv", "vader_tweets.csv"):
        with open(os.path.join(DATA_DIR, name), newline="", encoding="utf-8") as f:
            out += [r["text"] for r in csv.DictReader(f)]
    return out + CORPUS_EXTRA * 20


def write_json(path, obj):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, ensure_ascii=False, indent=0)
        f.write("\n")


def unique(texts):
    seen, out = set(), []
    for t in texts:
        if t not in seen:
            seen.add(t)
            out.append(t)
    return out


TEXTS = unique(BASE + NEW)
PAIRS = [("How are you?", "I am fine."), (" leading", "trailing "), ("中文", "English"), ("", "only second"),
         ("a " * 40, "b " * 10), ("short", "x " * 60)]
LENGTHS = [5, 8, 16, 512]


def make_bpe():
    out = os.path.join(HERE, "bpe")
    os.makedirs(out, exist_ok=True)
    trainer = ByteLevelBPETokenizer(add_prefix_space=False)
    trainer.train_from_iterator(corpus() + BASE, vocab_size=1800, min_frequency=2,
                                special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    trainer.save_model(out)  # vocab.json, merges.txt
    tok = RobertaTokenizer.from_pretrained(out)
    tok.save_pretrained(out)
    # The folder the Swift tests read as "vocab.json + merges.txt"; the tokenizer.json copy goes alone.
    js = os.path.join(HERE, "bpe_json")
    os.makedirs(js, exist_ok=True)
    shutil.move(os.path.join(out, "tokenizer.json"), os.path.join(js, "tokenizer.json"))
    shutil.copyfile(os.path.join(out, "tokenizer_config.json"), os.path.join(js, "tokenizer_config.json"))
    for extra in ("special_tokens_map.json",):
        if os.path.exists(os.path.join(out, extra)):
            os.remove(os.path.join(out, extra))
    assert tok.convert_tokens_to_ids(["<s>", "<pad>", "</s>", "<unk>", "<mask>"]) == [0, 1, 2, 3, 4]
    from_json = RobertaTokenizer.from_pretrained(js)

    cases = []
    for t in TEXTS:
        enc = tok(t, add_special_tokens=False)
        ids = enc["input_ids"]
        assert from_json(t, add_special_tokens=False)["input_ids"] == ids, t
        cases.append({"text": t, "tokens": tok.convert_ids_to_tokens(ids), "ids": ids})
    encodes = []
    for t in TEXTS[:60] + [NEW[-4]]:
        for n in LENGTHS:
            encodes.append({"text": t, "max_length": n, "ids": tok(t, truncation=True, max_length=n)["input_ids"]})
    for a, b in PAIRS:
        for n in LENGTHS + [12, 20]:
            r = tok(a, b, truncation="longest_first", max_length=n)
            encodes.append({"text": a, "pair": b, "max_length": n, "ids": r["input_ids"]})
    decodes = [{"ids": c["ids"], "text": tok.decode(c["ids"], skip_special_tokens=True)} for c in cases[:200] + cases[-40:]]
    write_json(os.path.join(out, "cases.json"), {
        "generator": "Tests/Fixtures/make_family_tokenizer_fixtures.py",
        "reference": f"transformers {transformers.__version__} RobertaTokenizer (tokenizers {tokenizers.__version__})",
        "cases": cases, "encodes": encodes, "decodes": decodes,
    })
    print(f"bpe: {len(cases)} strings, {len(encodes)} encodes, vocab {len(tok)}")


WP_CONFIGS = {
    "cased": dict(do_lower_case=False, strip_accents=None, tokenize_chinese_chars=True),
    "cased_strip_accents": dict(do_lower_case=False, strip_accents=True, tokenize_chinese_chars=True),
    "cased_no_chinese": dict(do_lower_case=False, strip_accents=None, tokenize_chinese_chars=False),
    "uncased": dict(do_lower_case=True, strip_accents=None, tokenize_chinese_chars=True),
}


def make_wordpiece():
    out = os.path.join(HERE, "wordpiece_cased")
    os.makedirs(out, exist_ok=True)
    trainer = BertWordPieceTokenizer(clean_text=True, handle_chinese_chars=True, strip_accents=False, lowercase=False)
    trainer.train_from_iterator(corpus() + BASE, vocab_size=2500, min_frequency=2,
                                special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])
    trainer.save_model(out)  # vocab.txt
    vocab = os.path.join(out, "vocab.txt")
    cfg = {"do_lower_case": False, "strip_accents": None, "tokenize_chinese_chars": True,
           "tokenizer_class": "BertTokenizer"}
    write_json(os.path.join(out, "tokenizer_config.json"), cfg)
    js = os.path.join(HERE, "wordpiece_json")
    os.makedirs(js, exist_ok=True)
    trainer.save(os.path.join(js, "tokenizer.json"))
    write_json(os.path.join(js, "tokenizer_config.json"), cfg)

    slow = {n: SlowBert(vocab, **o) for n, o in WP_CONFIGS.items()}
    fast = tokenizers.Tokenizer.from_file(os.path.join(js, "tokenizer.json"))
    cases, fast_diffs = [], 0
    for t in TEXTS:
        res = {}
        for n, s in slow.items():
            toks = s.tokenize(t)
            res[n] = {"tokens": toks, "ids": s.convert_tokens_to_ids(toks)}
        entry = {"text": t, "results": res}
        ft = fast.encode(t, add_special_tokens=False).tokens
        if ft != res["cased"]["tokens"]:
            entry["fast_cased"] = ft
            fast_diffs += 1
        cases.append(entry)
    write_json(os.path.join(out, "cases.json"), {
        "generator": "Tests/Fixtures/make_family_tokenizer_fixtures.py",
        "reference": f"transformers {transformers.__version__} {SlowBert.__name__} (pure Python)",
        "configs": WP_CONFIGS, "cases": cases,
    })
    print(f"wordpiece_cased: {len(cases)} strings x {len(WP_CONFIGS)} configs; fast differs on {fast_diffs}")


if __name__ == "__main__":
    make_bpe()
    make_wordpiece()
