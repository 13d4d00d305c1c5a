"""Makes Tests/Fixtures/hf_predictions.json: what transformers reads from and predicts with the
folders Pando writes, for the CI test HuggingFaceRoundTripTests (CI has no torch).

For each family (bert: the tiny BERT of TestFixtures.tinyModelFolder(), tiny/softmax's weights
with a tok0…tok93 vocabulary; distilbert: families/distilbert_encoder; roberta:
families/roberta_encoder) and each head, it runs the product's own path,

    pando versions create --store S --model ENCODER --task T --labels … --seed 7 --max-length 32 [--pooling P]
    pando versions export --store S head --to OUT
    pando predict --model OUT --file texts.txt

and records, for a head transformers can express (pooler pooling; single-label, multi-label,
regression; the encoder with a drawn pooler and classifier, stored here as "head", as the base
model): the sha256 of the exported model.safetensors (the test rebuilds the same version
and stops with "regenerate" if its bytes differ), the config values transformers read
(architectures, the class it built, problem_type, num_labels, id2label, label2id),
transformers' softmax / sigmoid probabilities or raw scores for the family's texts, and the
largest difference from `pando predict` at generation. For a head it cannot express (ordinal,
cls and mean pooling) it records transformers' refusal (check_hf_roundtrip.py's check).

Run from the repo root after `swift build -c release`, with a venv holding torch and transformers:
    $VENV/bin/python Tests/Fixtures/make_hf_prediction_fixtures.py
"""
import hashlib, json, os, shutil, subprocess, sys, tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
import torch  # noqa: E402
import transformers  # noqa: E402
from transformers import AutoTokenizer  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import check_hf_roundtrip as check  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
PANDO = os.environ.get("PANDO", os.path.join(HERE, "..", "..", ".build", "release", "pando"))
SEED, MAX_LENGTH = 7, 32
torch.set_num_threads(1)
transformers.logging.set_verbosity_error()

WORDS = ["the", "school", "test", "results", "were", "better", "than", "last", "year", "and", "students", "liked", "new",
         "math", "class", "what", "is", "capital", "of", "France", "?", "I", "love", "this", "!", "not", "good", "at", "all"]
TEXTS = {
    "bert": ["tok5 tok17 tok3", "tok42", "tok1 tok2 tok3 tok4 tok5 tok6 tok7 tok8", "hello tok9 world tok10",
             " ".join(f"tok{i % 94}" for i in range(60)), "tok93 tok0 tok50 tok50 tok50"],
    "natural": ["The school test results were better than last year.", "What is the capital of France?",
                "I love this class!", "not good at all", "Students liked the new math class, and the test.",
                " ".join(WORDS * 4), "Ünïcödé àccents — and emoji 🙂"],
}
HEADS = [  # (name, task, labels, pooling)
    ("classification", "classification", ["negative", "neutral", "positive"], "pooler"),
    ("multi-label", "multi-label", ["sports", "science", "art", "music"], "pooler"),
    ("regression", "regression", [], "pooler"),
    ("ordinal", "ordinal", ["low", "mid", "high"], "pooler"),
    ("classification-mean", "classification", ["negative", "positive"], "mean"),
    ("classification-cls", "classification", ["negative", "positive"], "cls"),
]


def bert_tiny(work):
    """TestFixtures.tinyModelFolder(), byte for byte."""
    folder = os.path.join(work, "tiny")
    os.makedirs(folder)
    for name in ("config.json", "model.safetensors"):
        shutil.copy(os.path.join(HERE, "tiny", "softmax", name), folder)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"tok{i}" for i in range(94)]
    with open(os.path.join(folder, "vocab.txt"), "w") as f:
        f.write("\n".join(vocab) + "\n")
    return folder


HEAD_NAMES = {"bert": ("bert.pooler.dense.", "classifier."), "distilbert": ("pre_classifier.", "classifier."),
              "roberta": ("classifier.dense.", "classifier.out_proj.")}


def head_tensors(family, hidden, outputs, seed):
    """A drawn pooler head (4 decimals, so JSON carries it exactly) large enough that the
    probabilities are far from uniform: dense N(0, 1/H), classifier N(0, 4/H), biases N(0, 0.01)."""
    g = torch.Generator().manual_seed(seed)
    dense, last = HEAD_NAMES[family]
    def draw(shape, std):
        return [round(v, 4) for v in (torch.randn(shape, generator=g, dtype=torch.float64) * std).flatten().tolist()]
    return {dense + "weight": {"shape": [hidden, hidden], "values": draw((hidden, hidden), hidden ** -0.5)},
            dense + "bias": {"shape": [hidden], "values": draw((hidden,), 0.1)},
            last + "weight": {"shape": [outputs, hidden], "values": draw((outputs, hidden), 2 * hidden ** -0.5)},
            last + "bias": {"shape": [outputs], "values": draw((outputs,), 0.1)}}


def base_with_head(encoder, head, folder):
    """The encoder folder with `head`'s tensors added (the test builds the same values with Pando)."""
    from safetensors.torch import load_file, save_file
    shutil.copytree(encoder, folder)
    tensors = load_file(os.path.join(encoder, "model.safetensors"))
    for name, t in head.items():
        tensors[name] = torch.tensor(t["values"], dtype=torch.float64).to(torch.float32).reshape(t["shape"])
    save_file(tensors, os.path.join(folder, "model.safetensors"), metadata={"format": "pt"})
    return folder


def run(*args):
    out = subprocess.run([PANDO, *args], capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"pando {' '.join(args)} failed:\n{out.stderr}")
    return out.stdout


def sha256(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def main():
    work = tempfile.mkdtemp(prefix="pando-hf-fixtures-")
    encoders = {"bert": (bert_tiny(work), "Tests/Fixtures/tiny/softmax + TestFixtures.tinyModelFolder's vocab.txt"),
                "distilbert": (os.path.join(HERE, "families", "distilbert_encoder"), "Tests/Fixtures/families/distilbert_encoder"),
                "roberta": (os.path.join(HERE, "families", "roberta_encoder"), "Tests/Fixtures/families/roberta_encoder")}
    cases = []
    for family, (encoder, source) in encoders.items():
        texts = TEXTS["bert" if family == "bert" else "natural"]
        texts_file = os.path.join(work, f"{family}-texts.txt")
        with open(texts_file, "w", encoding="utf-8") as f:
            f.write("\n".join(texts) + "\n")
        for name, task, labels, pooling in HEADS:
            state, out = os.path.join(work, f"{family}-{name}-state"), os.path.join(work, f"{family}-{name}")
            # A head transformers can express gets drawn weights, so the probabilities are far from
            # uniform; the others keep the head `pando versions create` draws (only refusal is checked).
            expressible = task != "ordinal" and pooling == "pooler"
            config = json.load(open(os.path.join(encoder, "config.json")))
            hidden = config.get("hidden_size", config.get("dim"))
            head = head_tensors(family, hidden, max(len(labels), 1), seed=len(cases)) if expressible else None
            base = base_with_head(encoder, head, os.path.join(work, f"{family}-{name}-base")) if head else encoder
            run("versions", "create", "--store", state, "--model", base, "--federation", "hf-fixture", "--task", task,
                *(["--labels", *labels] if labels else []), "--seed", str(SEED), "--max-length", str(MAX_LENGTH), "--pooling", pooling)
            run("versions", "export", "--store", state, "head", "--to", out)
            pando_file = os.path.join(work, f"{family}-{name}.jsonl")
            with open(pando_file, "w") as f:
                f.write(run("predict", "--model", out, "--file", texts_file))
            rows = [json.loads(l) for l in open(pando_file)]
            config = json.load(open(os.path.join(out, "config.json")))
            case = {"family": family, "encoder": source, "name": name, "task": task, "labels": labels, "pooling": pooling,
                    "seed": SEED, "max_length": MAX_LENGTH, "weights_sha256": sha256(os.path.join(out, "model.safetensors")),
                    "texts": texts, "head": head}
            if task == "ordinal" or pooling != "pooler":
                refused, message, encoder_note = check.hf_refuses(out, family)
                assert refused, f"{family} {name}: transformers loaded a head it cannot express: {message}"
                case.update(expressible=False, transformers_refusal=message, encoder_load=encoder_note,
                            architectures=config["architectures"], pando_transformers=config.get("pando_transformers"))
            else:
                model, logits = check.compare(out, texts, rows, MAX_LENGTH)
                cfg = model.config
                if task == "classification":
                    hf = logits.softmax(-1)
                    pando = torch.tensor([[r["probabilities"][cfg.id2label[j]] for j in range(cfg.num_labels)] for r in rows], dtype=torch.float64)
                elif task == "multi-label":
                    hf = logits.sigmoid()
                    pando = torch.tensor([[r["probabilities"][cfg.id2label[j]] for j in range(cfg.num_labels)] for r in rows], dtype=torch.float64)
                else:
                    hf = logits[:, :1]
                    pando = torch.tensor([[r["score"]] for r in rows], dtype=torch.float64)
                tokenizer = AutoTokenizer.from_pretrained(out)
                ids = tokenizer(texts, truncation=True, max_length=MAX_LENGTH)["input_ids"]
                case.update(expressible=True, hf_class=type(model).__name__, architectures=cfg.architectures,
                            problem_type=cfg.problem_type, num_labels=cfg.num_labels,
                            id2label={str(k): v for k, v in cfg.id2label.items()}, label2id=dict(cfg.label2id),
                            hf_input_ids=ids, hf_outputs=[[round(float(v), 9) for v in row] for row in hf.tolist()],
                            max_difference_at_generation=float((hf - pando).abs().max()))
            cases.append(case)
            print(f"{family:10} {name:20} " + (f"max |hf − pando| {case['max_difference_at_generation']:.2e}" if case["expressible"]
                                               else f"refused: {case['transformers_refusal'][:90]}"))
    with open(os.path.join(HERE, "hf_predictions.json"), "w") as f:
        json.dump({"transformers": transformers.__version__, "torch": torch.__version__,
                   "made_by": "Tests/Fixtures/make_hf_prediction_fixtures.py", "cases": cases}, f, indent=1, ensure_ascii=False)
        f.write("\n")
    shutil.rmtree(work)


if __name__ == "__main__":
    main()
