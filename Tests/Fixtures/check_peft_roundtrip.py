"""By-hand check that PEFT loads a Pando LoRA adapter and predicts what Pando predicts.

    .build/release/pando train --train DATA.csv --output /tmp/lora --epochs 1 --lora-rank 8
    .build/release/pando predict --model /tmp/lora --file texts.txt > /tmp/pando.jsonl
    python Tests/Fixtures/check_peft_roundtrip.py /tmp/lora texts.txt /tmp/pando.jsonl

The LoRA output folder is the merged model (config.json, model.safetensors) with the
adapter in adapter/ (adapter_config.json, adapter_model.safetensors; a subfolder because
transformers, seeing adapter_config.json in a folder, loads base + adapter instead of the
folder's own weights). This script:
  1. loads the base model named by adapter_config.json's base_model_name_or_path as
     AutoModelForSequenceClassification with the folder's labels, then
     peft.PeftModel.from_pretrained(base, folder/adapter): every adapter and head tensor must load
     (no missing adapter keys, no unexpected keys);
  2. loads the merged folder with AutoModelForSequenceClassification (nothing missing or
     unexpected);
  3. compares the softmax probabilities of both with Pando's JSON Lines output (which
     `pando predict` computed from the merged folder) and with each other.
Prints the largest differences and fails above 1e-4. Needs the pooler head (Pando's
default, what BertForSequenceClassification computes).
"""
import json
import sys

import torch
from peft import PeftModel
from transformers import AutoModelForSequenceClassification, AutoTokenizer

folder, texts_file, pando_file = sys.argv[1:4]
adapter_dir = f"{folder}/adapter"
adapter = json.load(open(f"{adapter_dir}/adapter_config.json"))
merged, info = AutoModelForSequenceClassification.from_pretrained(folder, output_loading_info=True)
assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
labels = [merged.config.id2label[i] for i in range(merged.config.num_labels)]

base = AutoModelForSequenceClassification.from_pretrained(
    adapter["base_model_name_or_path"], num_labels=len(labels), id2label=dict(enumerate(labels)),
    label2id={l: i for i, l in enumerate(labels)})
peft_model = PeftModel.from_pretrained(base, adapter_dir)
# Every tensor in the adapter file went somewhere: compare against the loaded state.
from safetensors.torch import load_file  # noqa: E402
saved = load_file(f"{adapter_dir}/adapter_model.safetensors")
state = {k.replace(".default", "").replace(".modules_to_save", ""): v for k, v in peft_model.state_dict().items()}
missing = [k for k in saved if k not in state]
assert not missing, f"adapter tensors PEFT did not place: {missing[:5]}"
worst_load = max((saved[k] - state[k]).abs().max().item() for k in saved)
assert worst_load == 0, f"PEFT holds other values than the file: {worst_load}"

tokenizer = AutoTokenizer.from_pretrained(folder)
texts = [l.rstrip("\n") for l in open(texts_file, encoding="utf-8") if l.strip()]
rows = [json.loads(l) for l in open(pando_file, encoding="utf-8")]
merged.eval()
peft_model.eval()
with torch.no_grad():
    batch = tokenizer(texts, padding=True, truncation=True, max_length=128, return_tensors="pt")
    p_peft = peft_model(**batch).logits.softmax(-1)
    p_merged = merged(**batch).logits.softmax(-1)
pando = torch.tensor([[r["probabilities"][name] for name in labels] for r in rows])
d_peft = (p_peft - pando).abs().max().item()
d_merged = (p_merged - pando).abs().max().item()
d_both = (p_peft - p_merged).abs().max().item()
print(f"{len(saved)} adapter/head tensors loaded by PEFT (r={adapter['r']}, alpha={adapter['lora_alpha']}, targets {adapter['target_modules']}); "
      f"{len(texts)} texts, labels {labels}")
print(f"max |p_peft - p_pando| = {d_peft:.2e}, max |p_merged_hf - p_pando| = {d_merged:.2e}, max |p_peft - p_merged_hf| = {d_both:.2e}")
sys.exit(0 if max(d_peft, d_merged, d_both) < 1e-4 else 1)
