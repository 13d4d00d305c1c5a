"""PyTorch reference for the multi-label pair set (issue 3 protocol, by hand; not used by CI).

    python Tests/Benchmarks/pytorch_multilabel.py LR EPOCHS [DATA_PREFIX] [MODEL]

DATA_PREFIX defaults to /tmp/pando-accuracy/data/math_pairs (made by accuracy-runs /
make_multilabel.py); MODEL to models/default. Prints train loss, validation loss and
micro-F1 (threshold 0.5) per epoch.
"""
import csv, sys, time, torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer, get_linear_schedule_with_warmup
torch.manual_seed(42); torch.set_num_threads(2)
d = sys.argv[3] if len(sys.argv) > 3 else "/tmp/pando-accuracy/data/math_pairs"
model = sys.argv[4] if len(sys.argv) > 4 else "models/default"
def load(split):
    rows = list(csv.DictReader(open(f"{d}.{split}.csv", encoding="utf-8")))
    return [r["text"] for r in rows], [r["label"].split("|") for r in rows]
tr_x, tr_y = load("train"); va_x, va_y = load("val")
labels = sorted({l for ys in tr_y for l in ys}); idx = {l: i for i, l in enumerate(labels)}
def hot(ys):
    t = torch.zeros(len(ys), len(labels))
    for i, y in enumerate(ys):
        for l in y: t[i, idx[l]] = 1
    return t
tok = AutoTokenizer.from_pretrained(model)
m = AutoModelForSequenceClassification.from_pretrained(model, num_labels=len(labels), problem_type="multi_label_classification")
nd = [p for n, p in m.named_parameters() if not (n.endswith(".bias") or "LayerNorm" in n)]
de = [p for n, p in m.named_parameters() if n.endswith(".bias") or "LayerNorm" in n]
opt = torch.optim.AdamW([{"params": nd, "weight_decay": 0.01}, {"params": de, "weight_decay": 0.0}], lr=float(sys.argv[1]))
epochs = int(sys.argv[2]); bs = 32
steps = epochs * ((len(tr_x) + bs - 1) // bs)
sch = get_linear_schedule_with_warmup(opt, int(0.1 * steps + 0.999), steps)
Y = hot(tr_y); VY = hot(va_y)
for e in range(epochs):
    m.train(); perm = torch.randperm(len(tr_x)); tot = 0; n = 0; t0 = time.time()
    for i in range(0, len(tr_x), bs):
        b = perm[i:i + bs].tolist()
        x = tok([tr_x[j] for j in b], truncation=True, max_length=128, padding=True, return_tensors="pt")
        out = m(**x, labels=Y[b]); out.loss.backward()
        torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0); opt.step(); sch.step(); opt.zero_grad()
        tot += out.loss.item(); n += 1
    m.eval(); P = []
    with torch.no_grad():
        for i in range(0, len(va_x), 64):
            x = tok(va_x[i:i + 64], truncation=True, max_length=128, padding=True, return_tensors="pt")
            P.append(torch.sigmoid(m(**x).logits))
    P = torch.cat(P); pred = (P >= 0.5).float()
    tp = (pred * VY).sum().item(); fp = (pred * (1 - VY)).sum().item(); fn = ((1 - pred) * VY).sum().item()
    f1 = 2 * tp / max(2 * tp + fp + fn, 1)
    vl = torch.nn.functional.binary_cross_entropy(P.clamp(1e-7, 1 - 1e-7), VY).item()
    print(f"epoch {e+1}: train loss {tot/n:.4f}, val loss {vl:.4f}, micro-F1 {f1:.4f} ({time.time()-t0:.0f} s)", flush=True)
