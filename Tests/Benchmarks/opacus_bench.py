"""Opacus reference for `pando bench train --dp --freeze-embeddings`: DP-SGD on the same
model and shapes (embeddings frozen, per-example clipping at 1, noise multiplier 1, AdamW),
Opacus's per-sample gradient hooks (`--grad-sample-mode hooks`, its default) or its ghost
clipping (`ghost`: norms from activations and output gradients, then a second backward, as
Pando's `--dp-second-backward`). Fixed-size batches (no Poisson sampling), so both sides
time the same work per step.

Usage: python opacus_bench.py --model DIR [--batch-size 32] [--length 128] [--batches 4] [--warmup 1]
                              [--grad-sample-mode hooks|ghost]
Prints one JSON object: tokens_per_second, peak_rss_mb, seconds, threads, opacus.
"""
import argparse, json, os, resource, time, warnings

import opacus
import torch
from opacus import PrivacyEngine
from transformers import AutoModelForSequenceClassification

warnings.filterwarnings("ignore")
p = argparse.ArgumentParser()
p.add_argument("--model", required=True)
p.add_argument("--batch-size", type=int, default=32)
p.add_argument("--length", type=int, default=128)
p.add_argument("--batches", type=int, default=4)
p.add_argument("--warmup", type=int, default=1)
p.add_argument("--threads", type=int, default=os.cpu_count())
p.add_argument("--grad-sample-mode", choices=["hooks", "ghost"], default="hooks")
a = p.parse_args()
torch.set_num_threads(a.threads)
torch.manual_seed(0)

model = AutoModelForSequenceClassification.from_pretrained(a.model, num_labels=3)
for n, param in model.named_parameters():
    param.requires_grad = not n.startswith("bert.embeddings.")
model.train()
opt = torch.optim.AdamW([q for q in model.parameters() if q.requires_grad], lr=1e-5, weight_decay=0.01)
g = torch.Generator().manual_seed(7)
n = a.batch_size * (a.batches + a.warmup)
ids = torch.randint(1000, model.config.vocab_size, (n, a.length), generator=g)
labels = torch.arange(n) % 3
data = torch.utils.data.TensorDataset(ids, labels)
loader = torch.utils.data.DataLoader(data, batch_size=a.batch_size)
engine = PrivacyEngine()
loss_fn = torch.nn.CrossEntropyLoss()
if a.grad_sample_mode == "ghost":
    model, opt, loss_fn, loader = engine.make_private(module=model, optimizer=opt, data_loader=loader, criterion=loss_fn,
                                                      noise_multiplier=1.0, max_grad_norm=1.0, poisson_sampling=False,
                                                      grad_sample_mode="ghost")
else:
    model, opt, loader = engine.make_private(module=model, optimizer=opt, data_loader=loader, noise_multiplier=1.0,
                                             max_grad_norm=1.0, poisson_sampling=False)
start = None
for i, (x, y) in enumerate(loader):
    if i == a.warmup:
        start = time.perf_counter()
    out = model(input_ids=x, attention_mask=torch.ones_like(x))
    loss_fn(out.logits, y).backward()
    opt.step()
    opt.zero_grad()
seconds = time.perf_counter() - start
print(json.dumps({"tokens_per_second": a.batches * a.batch_size * a.length / seconds, "seconds": seconds,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "threads": a.threads,
                  "opacus": opacus.__version__, "grad_sample_mode": a.grad_sample_mode, "torch": torch.__version__}))
