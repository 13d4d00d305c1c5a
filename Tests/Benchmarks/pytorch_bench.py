"""PyTorch + transformers reference for `pando bench`, same model and shapes.

Usage: python pytorch_bench.py train|infer --model DIR [--batch-size N] [--length L]
       [--batches N] [--warmup N] [--data CSV --text-column text]
Prints one JSON object: tokens_per_second (real tokens), padded_tokens_per_second,
sequences_per_second, peak_rss_mb, seconds, threads. Fine-tuning uses AdamW
(weight decay 0.01, none on bias/LayerNorm), gradient clipping 1.0, dropout on, as
Hugging Face's Trainer does. With --data, batches use dynamic padding (pad to the
longest in the batch) in file order, PyTorch's usual best setting without grouping.
"""
import argparse, csv, json, os, resource, time

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

p = argparse.ArgumentParser()
p.add_argument("mode", choices=["train", "infer"])
p.add_argument("--model", required=True)
p.add_argument("--batch-size", type=int)
p.add_argument("--length", type=int, default=128)
p.add_argument("--batches", type=int)
p.add_argument("--warmup", type=int, default=1)
p.add_argument("--data", action="append", default=[])
p.add_argument("--text-column", default="text")
p.add_argument("--threads", type=int, default=os.cpu_count())
a = p.parse_args()
torch.set_num_threads(a.threads)
torch.manual_seed(0)
batch_size = a.batch_size or (32 if a.mode == "train" else 64)

model = AutoModelForSequenceClassification.from_pretrained(a.model, num_labels=3)
if a.data:
    tok = AutoTokenizer.from_pretrained(a.model)
    texts = []
    for f in a.data:
        with open(f, newline="", encoding="utf-8") as fh:
            texts += [row[a.text_column] for row in csv.DictReader(fh)]
    batches = [tok(texts[i:i + batch_size], truncation=True, max_length=a.length, padding=True, return_tensors="pt")
               for i in range(0, len(texts), batch_size)]
    batches = [(b["input_ids"], b["attention_mask"]) for b in batches]
else:
    g = torch.Generator().manual_seed(7)
    batches = [(torch.randint(1000, model.config.vocab_size, (batch_size, a.length), generator=g),
                torch.ones(batch_size, a.length, dtype=torch.long)) for _ in range(a.batches or 5)]
if a.batches:
    batches = batches[:a.batches]

def run(ids, mask):
    labels = torch.arange(ids.shape[0]) % 3
    if a.mode == "train":
        out = model(input_ids=ids, attention_mask=mask, labels=labels)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad()
    else:
        with torch.inference_mode():
            model(input_ids=ids, attention_mask=mask)

if a.mode == "train":
    model.train()
    decay = [p for n, p in model.named_parameters() if not (n.endswith(".bias") or "LayerNorm" in n)]
    rest = [p for n, p in model.named_parameters() if n.endswith(".bias") or "LayerNorm" in n]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": rest, "weight_decay": 0.0}], lr=1e-5)
else:
    model.eval()
for i in range(a.warmup):
    run(*batches[i % len(batches)])
start = time.perf_counter()
for ids, mask in batches:
    run(ids, mask)
seconds = time.perf_counter() - start
real = sum(int(m.sum()) for _, m in batches)
padded = sum(m.numel() for _, m in batches)
print(json.dumps({
    "kind": a.mode, "tokens_per_second": real / seconds, "padded_tokens_per_second": padded / seconds,
    "sequences_per_second": sum(m.shape[0] for _, m in batches) / seconds, "seconds": seconds,
    "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "threads": torch.get_num_threads(),
    "torch": torch.__version__}))
