"""By-hand check that Hugging Face loads a Pando folder and predicts what `pando predict` predicts.

    .build/release/pando train --train DATA.csv --output /tmp/out --epochs 1      # or: pando versions export … --to /tmp/out
    .build/release/pando predict --model /tmp/out --file texts.txt > /tmp/pando.jsonl
    $VENV/bin/python Tests/Fixtures/check_hf_roundtrip.py /tmp/out texts.txt /tmp/pando.jsonl

Needs torch and transformers (CI has neither; the committed fixtures of
make_hf_prediction_fixtures.py carry the same comparison into CI). The head is read from
config.json the way Pando reads it (`pando_objective`, else `problem_type`; `pando_pooling`):

* A head transformers can express (the family's own pooler head with single-label softmax,
  multi-label sigmoid or a regression score): loads the folder with
  AutoModelForSequenceClassification and AutoTokenizer (no missing, unexpected or mismatched
  weights allowed; `architectures` must name the class transformers built; `problem_type` must
  be the objective's), tokenizes with the max length of pando-training.json, and compares
  softmax probabilities (single-label), sigmoid probabilities and the labels at
  pando-training.json's thresholds (multi-label) or the raw output (regression) with Pando's
  JSON Lines. Prints the largest difference; exit status 1 above --tolerance (1e-4) or when a
  decision differs.
* A head transformers cannot express (cls or mean pooling, ordinal): compares nothing, prints
  "HF cannot express this head" with the reason, and checks that transformers refuses the
  folder as a sequence classifier (so no one is silently handed other predictions) while
  AutoModel still loads the encoder. Exit status 0 when transformers refused, 1 when it loaded
  the folder into a head that computes something else.

--json prints one JSON object instead of the sentences (hf_roundtrip_matrix.py and
make_hf_prediction_fixtures.py import check() instead).
"""
import argparse, json, math, os, sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
import torch  # noqa: E402
import transformers  # noqa: E402
from transformers import AutoModel, AutoModelForSequenceClassification, AutoTokenizer  # noqa: E402

PROBLEM = {"classification": "single_label_classification", "multi-label": "multi_label_classification", "regression": "regression"}


def pando_head(config):
    """(task, pooling) as Pando's BertModel.savedHead reads config.json."""
    pooling = config.get("pando_pooling", "pooler")
    if config.get("pando_objective") == "ordinal":
        return "ordinal", pooling
    task = {v: k for k, v in PROBLEM.items()}.get(config.get("problem_type"), "classification")
    return task, pooling


def hf_refuses(folder, family):
    """(refused, message): whether AutoModelForSequenceClassification refuses the folder."""
    transformers.logging.set_verbosity_error()
    try:
        AutoModelForSequenceClassification.from_pretrained(folder)
    except Exception as e:  # noqa: BLE001 — any refusal counts, its text is reported
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        refused, message = True, f"{type(e).__name__}: {first}"
        try:  # which tensors it refused, from the load transformers does when told to ignore them
            _, info = AutoModelForSequenceClassification.from_pretrained(folder, ignore_mismatched_sizes=True, output_loading_info=True)
            shapes = [f"{k[0]} {tuple(k[1])} vs {tuple(k[2])}" if isinstance(k, (tuple, list)) else str(k) for k in info["mismatched_keys"]]
            message += f" (mismatched: {', '.join(sorted(shapes))})"
        except Exception:  # noqa: BLE001
            pass
    else:
        refused, message = False, "AutoModelForSequenceClassification loaded it without complaint"
    extra = {"add_pooling_layer": False} if family == "bert" else {}
    encoder, info = AutoModel.from_pretrained(folder, output_loading_info=True, **extra)
    missing = info["missing_keys"]
    return refused, message, f"AutoModel loads the encoder ({type(encoder).__name__}{', add_pooling_layer=False' if extra else ''}; missing {sorted(missing) or 'none'})"


def compare(folder, texts, rows, max_length):
    model, info = AutoModelForSequenceClassification.from_pretrained(folder, output_loading_info=True)
    bad = {k: info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys") if info[k]}
    if bad:
        raise SystemExit(f"{folder}: transformers did not load every weight by name and shape: {bad}")
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model.eval()
    with torch.no_grad():
        batch = tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
        logits = model(**batch).logits.double()
    return model, logits


def check(folder, texts_file, pando_file, tolerance=1e-4):
    """(ok, result): the comparison (or the refusal check) for one folder, as a dict."""
    config = json.load(open(os.path.join(folder, "config.json")))
    record_path = os.path.join(folder, "pando-training.json")
    record = json.load(open(record_path)) if os.path.exists(record_path) else {}
    family = config["model_type"]
    task, pooling = pando_head(config)
    texts = [l.rstrip("\n") for l in open(texts_file, encoding="utf-8") if l.strip()]
    rows = [json.loads(l) for l in open(pando_file, encoding="utf-8") if l.strip()]
    if len(rows) != len(texts):
        raise SystemExit(f"{pando_file}: {len(rows)} predictions for {len(texts)} texts")
    result = {"folder": folder, "family": family, "task": task, "pooling": pooling, "texts": len(texts)}

    if task == "ordinal" or pooling != "pooler":
        reason = config.get("pando_transformers") or f"{task} head with {pooling} pooling"
        refused, message, encoder = hf_refuses(folder, family)
        result.update(expressible=False, refused=refused, transformers=message, encoder=encoder, reason=reason)
        return refused, result

    max_length = int(record.get("maxLength", 128))
    model, logits = compare(folder, texts, rows, max_length)
    cfg = model.config
    labels = [cfg.id2label[i] for i in range(cfg.num_labels)]
    problems = []
    if cfg.problem_type != PROBLEM[task]:
        problems.append(f"problem_type {cfg.problem_type!r}, expected {PROBLEM[task]!r}")
    if (cfg.architectures or [None])[0] != type(model).__name__:
        problems.append(f"architectures {cfg.architectures} but transformers built {type(model).__name__}")
    worst, decisions = 0.0, 0
    if task == "classification":
        probs = logits.softmax(-1)
        for i, row in enumerate(rows):
            worst = max([worst] + [abs(probs[i, j].item() - row["probabilities"][name]) for j, name in enumerate(labels)])
            decisions += labels[int(probs[i].argmax())] != row["label"]
    elif task == "multi-label":
        probs = logits.sigmoid()
        thresholds = record.get("thresholds") or [0.5] * len(labels)
        for i, row in enumerate(rows):
            worst = max([worst] + [abs(probs[i, j].item() - row["probabilities"][name]) for j, name in enumerate(labels)])
            # A probability within the tolerance of its threshold may fall either side.
            hf = {name for j, name in enumerate(labels) if probs[i, j].item() >= thresholds[j]}
            near = {name for j, name in enumerate(labels) if abs(probs[i, j].item() - thresholds[j]) < tolerance}
            decisions += (hf - near != set(row["labels"]) - near)
        result["thresholds"] = thresholds
    else:
        for i, row in enumerate(rows):
            worst = max(worst, abs(logits[i, 0].item() - row["score"]))
    if decisions:
        problems.append(f"{decisions} texts decided differently")
    what = {"classification": "|p_hf - p_pando| (softmax)", "multi-label": "|p_hf - p_pando| (sigmoid)", "regression": "|score_hf - score_pando|"}[task]
    result.update(expressible=True, model=type(model).__name__, labels=labels, max_length=max_length, max_difference=worst,
                  measure=what, decisions_differing=decisions, problems=problems)
    return (not problems and worst < tolerance and not math.isnan(worst)), result


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("folder")
    ap.add_argument("texts", help="one text per line (the file pando predict read)")
    ap.add_argument("pando", help="pando predict's JSON Lines for those texts")
    ap.add_argument("--tolerance", type=float, default=1e-4)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    ok, r = check(args.folder, args.texts, args.pando, args.tolerance)
    if args.json:
        print(json.dumps(r))
    elif not r["expressible"]:
        print(f"HF cannot express this head ({r['family']}, {r['task']}, {r['pooling']} pooling): {r['reason']}")
        print(f"  transformers {'refuses it' if r['refused'] else 'DOES NOT refuse it'}: {r['transformers']}")
        print(f"  {r['encoder']}")
    else:
        print(f"{r['model']} ({r['task']}): {r['texts']} texts, labels {r['labels']}, max length {r['max_length']}, "
              f"max {r['measure']} = {r['max_difference']:.2e}, decisions differing {r['decisions_differing']}"
              + (f"; PROBLEMS: {'; '.join(r['problems'])}" if r["problems"] else ""))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
