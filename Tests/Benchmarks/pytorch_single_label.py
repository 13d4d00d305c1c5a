"""PyTorch reference for a single-label split (issue 3 protocol, by hand; not used by CI):
lr 5e-5, batch 32, max length 128, 3 epochs, AdamW (no decay on bias/LayerNorm), 10% warm-up
then linear decay, clipping 1.0; test metrics at the best validation accuracy.

    python Tests/Benchmarks/pytorch_single_label.py [DATA_PREFIX] [LABEL_COLUMN] [MODEL]

Defaults: ../shared/data/splits/math_modules, module, models/default.
"""
import csv, sys, time, torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer, get_linear_schedule_with_warmup
torch.manual_seed(42); torch.set_num_threads(2)
d = sys.argv[1] if len(sys.argv) > 1 else "../shared/data/splits/math_modules"
col = sys.argv[2] if len(sys.argv) > 2 else "module"
model = sys.argv[3] if len(sys.argv) > 3 else "models/default"
def load(split):
    rows = list(csv.DictReader(open(f"{d}.{split}.csv", encoding="utf-8")))
    return [r["text"] for r in rows], [r[col] for r in rows]
tr_x, tr_y = load("train"); va_x, va_y = load("val"); te_x, te_y = load("test")
labels = sorted(set(tr_y)); idx = {l: i for i, l in enumerate(labels)}
tok = AutoTokenizer.from_pretrained(model)
m = AutoModelForSequenceClassification.from_pretrained(model, num_labels=len(labels))
nd = [p for n, p in m.named_parameters() if not (n.endswith(".bias") or "LayerNorm" in n)]
de = [p for n, p in m.named_parameters() if n.endswith(".bias") or "LayerNorm" in n]
opt = torch.optim.AdamW([{"params": nd, "weight_decay": 0.01}, {"params": de, "weight_decay": 0.0}], lr=5e-5)
epochs, bs = 3, 32
steps = epochs * ((len(tr_x) + bs - 1) // bs)
sch = get_linear_schedule_with_warmup(opt, int(0.1 * steps + 0.999), steps)
Y = torch.tensor([idx[y] for y in tr_y])
def predict(xs):
    m.eval(); out = []
    with torch.no_grad():
        for i in range(0, len(xs), 64):
            x = tok(xs[i:i + 64], truncation=True, max_length=128, padding=True, return_tensors="pt")
            out.append(m(**x).logits.argmax(-1))
    return torch.cat(out)
def scores(xs, ys):
    p = predict(xs); t = torch.tensor([idx[y] for y in ys])
    acc = (p == t).float().mean().item(); f1s = []
    for c in range(len(labels)):
        tp = ((p == c) & (t == c)).sum().item(); fp = ((p == c) & (t != c)).sum().item(); fn = ((p != c) & (t == c)).sum().item()
        if tp + fp + fn: f1s.append(2 * tp / (2 * tp + fp + fn))
    return acc, sum(f1s) / len(f1s)
best = -1; best_state = None
for e in range(epochs):
    m.train(); perm = torch.randperm(len(tr_x)); t0 = time.time()
    for i in range(0, len(tr_x), bs):
        b = perm[i:i + bs].tolist()
        x = tok([tr_x[j] for j in b], truncation=True, max_length=128, padding=True, return_tensors="pt")
        m(**x, labels=Y[b]).loss.backward()
        torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0); opt.step(); sch.step(); opt.zero_grad()
    acc, f1 = scores(va_x, va_y)
    print(f"epoch {e+1}: val accuracy {acc:.4f} macro-F1 {f1:.4f} ({time.time()-t0:.0f} s)", flush=True)
    if acc > best: best = acc; best_state = {k: v.clone() for k, v in m.state_dict().items()}
m.load_state_dict(best_state)
acc, f1 = scores(te_x, te_y)
print(f"test (best val epoch): accuracy {acc:.4f} macro-F1 {f1:.4f}", flush=True)
