#!/usr/bin/env python3
"""Generate Tests/Fixtures/tokenizer/cases.json: reference WordPiece output from Hugging Face.

The reference is the pure-Python ("slow") BertTokenizer: in transformers 5.x that is
`transformers.models.bert.tokenization_bert_legacy.BertTokenizerLegacy` (BasicTokenizer +
WordpieceTokenizer); in 4.x it is `transformers.BertTokenizer`. The Rust ("fast") tokenizer
from the `tokenizers` library is run too; where it disagrees with the slow one, its tokens
are recorded under "fast" so the differences are visible, but the Swift tests match the
slow tokenizer.

Setup (once):
    python3 -m venv .venv-tok && .venv-tok/bin/pip install transformers tokenizers
    HF_HUB_OFFLINE=1 .venv-tok/bin/python Tests/Fixtures/make_tokenizer_fixtures.py [MODEL_DIR]

MODEL_DIR defaults to models/default (all-MiniLM-L6-v2). Its vocab.txt and
tokenizer_config.json are copied next to cases.json so the Swift tests need no model.
"""
import csv
import json
import os
import random
import shutil
import sys
import unicodedata

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import tokenizers  # noqa: E402
import transformers  # noqa: E402
from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors  # noqa: E402
from tokenizers.models import WordPiece  # noqa: E402

try:
    from transformers.models.bert.tokenization_bert_legacy import BertTokenizerLegacy as SlowBert
except ImportError:  # transformers 4.x
    from transformers import BertTokenizer as SlowBert

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
OUT_DIR = os.path.join(HERE, "tokenizer")
MODEL_DIR = sys.argv[1] if len(sys.argv) > 1 else os.path.join(REPO, "models", "default")
DATA_DIR = os.environ.get("PANDO_DATA", os.path.join(os.path.dirname(REPO), "shared", "data"))

os.makedirs(OUT_DIR, exist_ok=True)
VOCAB = os.path.join(OUT_DIR, "vocab.txt")
shutil.copyfile(os.path.join(MODEL_DIR, "vocab.txt"), VOCAB)
shutil.copyfile(os.path.join(MODEL_DIR, "tokenizer_config.json"), os.path.join(OUT_DIR, "tokenizer_config.json"))
with open(os.path.join(MODEL_DIR, "tokenizer_config.json"), encoding="utf-8") as f:
    folder_cfg = json.load(f)

# name -> (options as the Swift BertTokenizer.Options spells them, slow kwargs, fast normalizer kwargs or None)
CONFIGS = {
    "folder": dict(
        lowercase=folder_cfg.get("do_lower_case", True),
        stripAccents=folder_cfg.get("strip_accents"),
        tokenizeChineseChars=folder_cfg.get("tokenize_chinese_chars", True),
        neverSplit=[],
    ),
    "cased": dict(lowercase=False, stripAccents=None, tokenizeChineseChars=True, neverSplit=[]),
    "lower_keep_accents": dict(lowercase=True, stripAccents=False, tokenizeChineseChars=True, neverSplit=[]),
    "custom": dict(
        lowercase=True, stripAccents=None, tokenizeChineseChars=False,
        neverSplit=["hello-world", "[foo]", "Don't", "zzzqqq"],
    ),
}


def slow_for(o):
    return SlowBert(
        VOCAB, do_lower_case=o["lowercase"], strip_accents=o["stripAccents"],
        tokenize_chinese_chars=o["tokenizeChineseChars"], never_split=o["neverSplit"] or None,
    )


def fast_for(name, o):
    if name == "folder":
        t = Tokenizer.from_file(os.path.join(MODEL_DIR, "tokenizer.json"))
        t.no_truncation()
        t.no_padding()
        return t
    if o["neverSplit"]:
        return None  # the Rust pipeline has no never_split
    vocab = {}
    with open(VOCAB, encoding="utf-8") as f:
        for i, line in enumerate(f.read().split("\n")[:-1]):
            vocab[line] = i
    t = Tokenizer(WordPiece(vocab=vocab, unk_token="[UNK]", max_input_chars_per_word=100))
    t.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=o["tokenizeChineseChars"],
        strip_accents=o["stripAccents"], lowercase=o["lowercase"],
    )
    t.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    t.add_special_tokens(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])
    t.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
    )
    return t


# ---------------------------------------------------------------- inputs
HAND = [
    "", " ", "   ", "\t", "\n", "\r\n", " \t\n\r ", "\u3000", "\u00a0", "\u2028", "a\u2028b", "a\u2029b",
    "Hello, world!", "hello world", "HELLO WORLD", "Hello World", "The quick brown fox jumps over the lazy dog.",
    "I can't believe it's not butter!", "don't won't shouldn't y'all", "Mr. Smith went to Washington D.C. in 1999.",
    "unaffable", "UNAFFABLE", "tokenization", "Tokenizer's tokenizing tokens", "supercalifragilisticexpialidocious",
    "café", "naïve", "Ångström", "Zoë", "résumé", "CAFÉ", "NAÏVE RÉSUMÉ", "Crème Brûlée", "façade", "über straße",
    "cafe\u0301", "e\u0301", "\u0301", "\u0301\u0302\u0303", "a\u0308\u0301", "Ame\u0301lie", "\u212b", "\u2126",
    "\u0041\u030a", "\u00c5", "ﬁnance ﬂow", "ǅemal", "ŉ", "ǰ", "ΐ", "\u1e9e", "ẞ", "ß", "STRASSE Straße",
    "İstanbul", "İ", "ı", "DİYARBAKIR", "ΟΔΟΣ", "ΟΔΟΣ.", "Σ", "ΑΣ", "ΑΣΑ", "ΑΣ'Α", "σς", "Ὀδυσσεύς", "ΌΣΟΣ ΣΟΣ",
    "Привет, мир!", "ПРИВЕТ", "Ёлка", "Ǆ ǅ ǆ", "Ⅻ", "ⓐⓑ ⒶⒷ", "ＡＢＣ ｆｕｌｌｗｉｄｔｈ", "１２３",
    "中文", "我爱北京天安门", "日本語のテキスト", "ひらがな カタカナ", "한국어", "안녕하세요 세계", "漢字かな混じり文",
    "mixed中文and English", "\uf900\uf901", "\U00020000\U0002a6df", "\u4e00\u9fff\u3400", "\u2f800",
    "😀", "😀😃😄", "I ❤️ NY", "👨‍👩‍👧‍👦", "👩🏽‍💻 coding", "🏳️‍🌈", "🇺🇸🇬🇧", "❤", "✨magic✨", "🤖🤖🤖 robots",
    "https://www.example.com/path?query=1&b=2#frag", "http://foo.bar/baz_qux-quux.html", "www.google.com",
    "john.doe@example.com", "e-mail: a.b+c@d-e.org", "@user #hashtag", "$100.00", "€50,00", "£1,234.56", "¥1000",
    "1,000,000", "3.14159", "1.2e-10", "12:30pm", "2024-01-15", "+1 (555) 123-4567", "50%", "#1", "4th", "1st 2nd 3rd",
    "a" * 100, "a" * 101, "b" * 150, "x" * 99 + "é", "é" * 101, "ab" * 60, "pneumonoultramicroscopicsilicovolcanoconiosis" * 3,
    "\x00", "a\x00b", "\x07bell", "a\x07b", "zero\u200bwidth", "\ufeffBOM", "soft\u00adhyphen", "a\u200db", "a\u200cb",
    "\ufffd", "a\ufffdb", "\x1b[31mred\x1b[0m", "\x1c\x1d\x1e\x1f", "a\x85b", "a\x0bb\x0cc", "\x7f", "l\u200eft\u200f",
    "\u00e9\u0301", "\u1100\u1161\u11a8", "\uac00", "\u0915\u094d\u0937", "नमस्ते दुनिया", "हिन्दी", "संस्कृतम्",
    "مرحبا بالعالم", "العَرَبِيَّة", "שלום עולם", "עִבְרִית", "ไทย ภาษา", "Tiếng Việt", "ქართული", "Հայերեն", "ᚠᚢᚦ",
    "∑∫∂√∞ ≤ ≥ ≠ ±", "x² + y² = z²", "α+β=γ", "f(x) = 2x + 1", "∀x∃y", "½ ¼ ¾", "→ ← ↑ ↓", "© ® ™", "°C",
    "₹100 ₽200 ₩300 ₿1", "“smart quotes” and ‘single’", "«guillemets»", "„German“", "em—dash en–dash", "…",
    "!!!", "???", "?!?!", "...", "---", "Wow!!! Really???", "(((nested)))", "[brackets] {braces} <angles>",
    "\"quoted\"", "'single'", "`backtick`", "~tilde~", "a/b\\c|d", "^_^", ":-) ;-) :D", "<3", "&amp; &lt;",
    "C++ C# F#", "node.js", "snake_case_name", "camelCaseName", "kebab-case-name", "##", "##abc", "a##b", "#",
    "[CLS]", "[SEP]", "[PAD] [MASK] [UNK]", "hello[SEP]world", "[CLS]hello[SEP]", "[cls] [sep]", "[[CLS]]", "[CLS",
    "[C\u200bLS]", "[MASK]ed", "Hello-World", "hello-world", "HELLO-WORLD", "[foo] [FOO]", "Don't DON'T don't",
    "zzzqqq", "ZZZQQQ",
    "Line one.\nLine two.\n\nLine four.", "tab\tseparated\tvalues", "  leading and trailing  ", "multiple     spaces",
    "ALL CAPS SENTENCE WITH NUMBERS 123", "MiXeD CaSe TeXt", "O'Neill McDonald's", "naïveté coöperate",
    "Δ δ Ω ω", "µ μ", "K \u212a", "ﬀ ﬃ", "Ｈｅｌｌｏ", "ｶﾀｶﾅ", "㍿", "①②③", "𝐀𝐁𝐂 𝒶𝒷𝒸", "𝟘𝟙𝟚", "\U0001d11e",
    "\U00010400\U00010428", "\U0001e900", "Ꭰ ꭰ", "ᲀ", "ǈ",
    # Assigned after Unicode 14 (Python 3.11): unassigned (dropped) for the reference.
    "new\U0001fae8emoji \u2ffc \ua7cb", "Ab\U0001171eΣΣ",
]

POOL = (
    list("abcXYZ019 .,!?'-_#[]()$%&") + ["  ", "\t", "\n", "\r", "\x00", "\x07", "\u200b", "\ufeff", "\u00a0",
    "\u3000", "\u2028", "é", "E\u0301", "\u0301", "\u0308", "\u0327", "İ", "ı", "ß", "ẞ", "Σ", "σ", "ς", "Ω", "\u2126",
    "\u212b", "ﬁ", "中", "文", "\uf900", "한", "\u1100", "\u1161", "ア", "ん", "ا", "ب", "\u064e", "ש", "\u05bc",
    "न", "\u094d", "ह", "😀", "👍🏽", "\u200d", "❤️", "€", "½", "²", "∑", "“", "”", "—", "…", "[CLS]", "[SEP]",
    "[MASK]", "##", "hello", "world", "un", "aff", "able", "Don't", "hello-world", "\U00020001", "𝐀", "Ǆ", "ǅ"]
)


def fuzz(n):
    rng = random.Random(20240601)
    out = []
    for _ in range(n):
        k = rng.randint(1, 24)
        out.append("".join(rng.choice(POOL) for _ in range(k)))
    return out


def data_rows():
    rows = []
    for name, step, count in (("trec_coarse.csv", 173, 30), ("vader_tweets.csv", 131, 30)):
        path = os.path.join(DATA_DIR, name)
        with open(path, newline="", encoding="utf-8") as f:
            texts = [r["text"] for r in csv.DictReader(f)]
        rows += [texts[i * step % len(texts)] for i in range(count)]
    return rows


texts = []
seen = set()
for t in HAND + data_rows() + fuzz(120):
    if t not in seen:
        seen.add(t)
        texts.append(t)

# ---------------------------------------------------------------- run
slow = {n: slow_for(o) for n, o in CONFIGS.items()}
fast = {n: fast_for(n, o) for n, o in CONFIGS.items()}

# Guard against the transformers 5.x trap where a tokenizer silently maps everything to [UNK].
for n, tok in slow.items():
    assert tok.tokenize("hello world, this is a test") == ["hello", "world", ",", "this", "is", "a", "test"] or not CONFIGS[n]["lowercase"], n
    assert "[UNK]" not in tok.tokenize("the quick brown fox"), n
for n, tok in fast.items():
    if tok is not None:
        assert "[UNK]" not in tok.encode("the quick brown fox", add_special_tokens=False).tokens, n

cases = []
fast_diffs = 0
for t in texts:
    res = {}
    fres = {}
    for n in CONFIGS:
        toks = slow[n].tokenize(t)
        ids = slow[n].convert_tokens_to_ids(toks)
        assert len(ids) == len(toks)
        res[n] = {"tokens": toks, "ids": ids}
        if fast[n] is not None:
            ft = fast[n].encode(t, add_special_tokens=False).tokens
            if ft != toks:
                fres[n] = ft
                fast_diffs += 1
    c = {"text": t, "results": res}
    if fres:
        c["fast"] = fres
    cases.append(c)

# ---------------------------------------------------------------- encode / truncation
pairs = [
    ("Hello, world!", None), ("Hello, world!", "How are you?"),
    ("The quick brown fox jumps over the lazy dog.", None),
    ("The quick brown fox jumps over the lazy dog.", "A short one."),
    ("Short.", "The quick brown fox jumps over the lazy dog again and again."),
    ("one two three four five", "six seven eight nine ten"),
    ("one two three four five six", "seven eight nine ten eleven"),
    ("a b c d e f g h i j k l m n o p q r s t", "u v w x y z"),
    ("", ""), ("", "nonempty text here"), ("unaffable tokenization", "supercalifragilisticexpialidocious"),
    ("café naïve", "Ångström Zoë"), ("中文日本語", "한국어"),
] + [(texts[i], texts[i + 1]) for i in range(len(HAND), len(HAND) + 20, 2)]
encodes = []
enc_fast_diffs = []
for a, b in pairs:
    for L in (8, 16, 512):
        for n in ("folder", "cased"):
            e = slow[n](a, text_pair=b, truncation=True, max_length=L, return_token_type_ids=True)
            ids, tt = list(e["input_ids"]), list(e["token_type_ids"])
            assert len(ids) <= L
            encodes.append({"config": n, "text": a, "pair": b, "maxLength": L, "ids": ids, "typeIDs": tt})
            ft = fast[n]
            ft.enable_truncation(max_length=L, strategy="longest_first")
            fe = ft.encode(a, b) if b is not None else ft.encode(a)
            ft.no_truncation()
            if fe.ids != ids:
                enc_fast_diffs.append({"config": n, "text": a, "pair": b, "maxLength": L, "slow": ids, "fast": fe.ids})

decodes = []
for t in ["Hello, world!", "unaffable tokenization is fun", "café [SEP] naïve", "I can't do 3.14!"]:
    ids = slow["folder"](t)["input_ids"]
    decodes.append({"ids": ids, "skip": slow["folder"].decode(ids, skip_special_tokens=True),
                    "keep": slow["folder"].decode(ids, skip_special_tokens=False)})

out = {
    "generator": "Tests/Fixtures/make_tokenizer_fixtures.py",
    "reference": f"{SlowBert.__module__}.{SlowBert.__name__}",
    "transformers": transformers.__version__,
    "tokenizers": tokenizers.__version__,
    "python_unicode": unicodedata.unidata_version,
    "vocab": "vocab.txt",
    "configs": CONFIGS,
    "cases": cases,
    "encodes": encodes,
    "encodeFastDifferences": enc_fast_diffs,
    "decodes": decodes,
}
with open(os.path.join(OUT_DIR, "cases.json"), "w", encoding="utf-8") as f:
    json.dump(out, f, ensure_ascii=True, indent=1)
print(f"{len(cases)} strings x {len(CONFIGS)} configs, {len(encodes)} encodes; "
      f"slow/fast token differences: {fast_diffs} (string,config) pairs; encode differences: {len(enc_fast_diffs)}")
