"""By-hand check that Hugging Face loads a Pando checkpoint and predicts what Pando predicts.

    .build/release/pando train --train DATA.csv --output /tmp/out --epochs 1
    .build/release/pando predict --model /tmp/out --file texts.txt > /tmp/pando.jsonl
    .venv-fixtures/bin/python Tests/Fixtures/check_hf_roundtrip.py /tmp/out texts.txt /tmp/pando.jsonl

Loads the folder with AutoModelForSequenceClassification and AutoTokenizer (no
missing or unexpected weights allowed) and compares the probabilities with Pando's
JSON Lines output; prints the largest difference and fails above 1e-4.
"""
import json, sys
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

folder, texts_file, pando_file = sys.argv[1:4]
model, info = AutoModelForSequenceClassification.from_pretrained(folder, output_loading_info=True)
assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
tokenizer = AutoTokenizer.from_pretrained(folder)
texts = [l.rstrip("\n") for l in open(texts_file, encoding="utf-8") if l.strip()]
rows = [json.loads(l) for l in open(pando_file, encoding="utf-8")]
labels = [model.config.id2label[i] for i in range(model.config.num_labels)]
model.eval()
with torch.no_grad():
    batch = tokenizer(texts, padding=True, truncation=True, max_length=128, return_tensors="pt")
    probs = model(**batch).logits.softmax(-1)
worst = max(abs(probs[i, j].item() - rows[i]["probabilities"][name]) for i in range(len(texts)) for j, name in enumerate(labels))
print(f"{type(model).__name__}: {len(texts)} texts, labels {labels}, max |p_hf - p_pando| = {worst:.2e}")
sys.exit(0 if worst < 1e-4 else 1)
