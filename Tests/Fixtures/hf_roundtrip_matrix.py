"""By hand, where torch is installed: check_hf_roundtrip.py over every family × head, on folders
from `pando train` and from `pando versions export` of a federated version (`pando simulate`,
2 schools, 1 round), trained on data made from deploy/demo/questions.train.csv. Prints a
Markdown table (the README's "Model families" figures).

    swift build -c release
    $VENV/bin/python Tests/Fixtures/hf_roundtrip_matrix.py [--families bert,distilbert,roberta] [--rows 240]

bert is models/default (all-MiniLM-L6-v2, deploy/bootstrap); distilbert and roberta are the tiny
random encoders of Tests/Fixtures/families. Multi-label, regression and ordinal targets are made
from each question (its TREC class plus "long" past ten words and "wh" for a wh-word start; the
word count / 10; levels 1, 2, 3 by length), so only the plumbing is tested, not accuracy.
"""
import argparse, csv, os, subprocess, sys, tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import check_hf_roundtrip as check  # noqa: E402  (torch and transformers, imported once)

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
PANDO = os.environ.get("PANDO", os.path.join(ROOT, ".build", "release", "pando"))
ENCODERS = {"bert": os.path.join(ROOT, "models", "default"),
            "distilbert": os.path.join(HERE, "families", "distilbert_encoder"),
            "roberta": os.path.join(HERE, "families", "roberta_encoder")}
HEADS = [("classification", "classification", "pooler"), ("multi-label", "multi-label", "pooler"),
         ("regression", "regression", "pooler"), ("ordinal", "ordinal", "pooler"),
         ("classification-mean", "classification", "mean"), ("classification-cls", "classification", "cls")]


def datasets(work, rows):
    questions = list(csv.DictReader(open(os.path.join(ROOT, "deploy", "demo", "questions.train.csv"), encoding="utf-8")))[:rows]
    out = {}
    for task in ("classification", "multi-label", "regression", "ordinal"):
        path = os.path.join(work, f"{task}.csv")
        with open(path, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["text", "label"])
            for q in questions:
                n = len(q["text"].split())
                if task == "classification":
                    label = q["label"]
                elif task == "multi-label":
                    label = "|".join([q["label"]] + (["long"] if n > 10 else []) + (["wh"] if q["text"].split()[0].lower().startswith("wh") else []))
                elif task == "regression":
                    label = f"{n / 10:.1f}"
                else:
                    label = "1" if n <= 7 else "2" if n <= 11 else "3"  # numeric level names: ordered by value
                w.writerow([q["text"], label])
        out[task] = path
    texts = os.path.join(work, "texts.txt")
    test = list(csv.DictReader(open(os.path.join(ROOT, "deploy", "demo", "questions.test.csv"), encoding="utf-8")))[:60]
    with open(texts, "w", encoding="utf-8") as f:
        f.write("\n".join([q["text"] for q in test] + [" ".join(q["text"] for q in test[:12])]) + "\n")  # one text past max length
    return out, texts


def pando(*args):
    r = subprocess.run([PANDO, *args], capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"pando {' '.join(args[:3])} …: {r.stderr[-2000:]}")
    return r.stdout


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--families", default="bert,distilbert,roberta")
    ap.add_argument("--rows", type=int, default=240)
    ap.add_argument("--all-sources", action="store_true", help="also export federated versions of the heads transformers cannot express")
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="pando-hf-matrix-")
    data, texts = datasets(work, args.rows)
    print("| family | head | source | transformers | max difference |")
    print("|---|---|---|---|---|")
    failures = 0
    for family in args.families.split(","):
        for name, task, pooling in HEADS:
            folders = {}
            out = os.path.join(work, f"{family}-{name}-train")
            pando("train", "--model", ENCODERS[family], "--train", data[task], "--task", task, "--pooling", pooling, "--epochs", "1",
                  "--max-length", "48", "--batch-size", "16", "--learning-rate", "1e-3" if family != "bert" else "1e-4", "--output", out)
            folders["pando train"] = out
            if (task != "ordinal" and pooling == "pooler") or args.all_sources:
                state = os.path.join(work, f"{family}-{name}-state")
                pando("simulate", "--model", ENCODERS[family], "--data", data[task], "--task", task, "--pooling", pooling, "--schools", "2",
                      "--rounds", "1", "--max-length", "48", "--batch-size", "16", "--learning-rate", "1e-3" if family != "bert" else "1e-4",
                      "--centralized-epochs", "0", "--state", state, "--csv", os.path.join(work, "sim.csv"), "--plot", os.path.join(work, "sim.svg"))
                export = os.path.join(work, f"{family}-{name}-export")
                pando("versions", "export", "--store", state, "head", "--to", export)
                folders["pando versions export"] = export
            for source, folder in folders.items():
                predictions = os.path.join(folder + ".jsonl")
                with open(predictions, "w") as f:
                    f.write(pando("predict", "--model", folder, "--file", texts))
                ok, res = check.check(folder, texts, predictions)
                failures += not ok
                if res["expressible"]:
                    verdict = f"{res['model']}, {res['decisions_differing']} decisions differ" + (f"; {'; '.join(res['problems'])}" if res["problems"] else "")
                    diff = f"{res['max_difference']:.1e} ({res['measure']})"
                else:
                    m = res["transformers"]
                    verdict = ("refuses: RuntimeError, " if res["refused"] else "LOADS SILENTLY: ") + (m[m.index("(mismatched"):] if "(mismatched" in m else m[:110])
                    diff = "HF cannot express this head"
                print(f"| {family} | {name} | {source} | {verdict} | {diff} |", flush=True)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
