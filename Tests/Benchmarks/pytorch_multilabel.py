"""PyTorch reference for the multi-label pair set (issue 3 protocol, by hand; not used by CI).

    python Tests/Benchmarks/pytorch_multilabel.py LR EPOCHS [DATA_PREFIX] [MODEL]
        [--pos-weight auto|none] [--head-lr LR] [--tune-thresholds]

DATA_PREFIX defaults to /tmp/pando-accuracy/data/math_pairs (made by accuracy-runs /
make_multilabel.py); MODEL to models/default. Prints train loss, validation loss and
micro-F1 per epoch, and the test metrics of the best validation epoch (by micro-F1).

The options mirror `pando train`'s:
  --pos-weight auto   BCEWithLogitsLoss(pos_weight = negatives / positives per label from
                      the training counts; 1 for a label with no positive or no negative), as
                      `pando train --task multi-label --class-weights auto`.
  --head-lr LR        the classifier (classifier.weight/bias) in its own AdamW group at
                      this learning rate, same warm-up and decay, as `--head-learning-rate`.
  --tune-thresholds   each label's threshold chosen on validation from 0.05, 0.10, ... 0.95
                      to maximise its F1 (ties nearest 0.5; 0.5 for a label with no
                      positive in validation), as `--tune-thresholds`; else 0.5.
"""
import argparse, csv, time, torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer, get_linear_schedule_with_warmup
ap = argparse.ArgumentParser()
ap.add_argument("lr", type=float); ap.add_argument("epochs", type=int)
ap.add_argument("data", nargs="?", default="/tmp/pando-accuracy/data/math_pairs")
ap.add_argument("model", nargs="?", default="models/default")
ap.add_argument("--pos-weight", choices=["auto", "none"], default="none")
ap.add_argument("--head-lr", type=float)
ap.add_argument("--tune-thresholds", action="store_true")
ap.add_argument("--seed", type=int, default=42)
a = ap.parse_args()
torch.manual_seed(a.seed); torch.set_num_threads(2)
d = a.data
def load(split):
    rows = list(csv.DictReader(open(f"{d}.{split}.csv", encoding="utf-8")))
    return [r["text"] for r in rows], [r["label"].split("|") for r in rows]
tr_x, tr_y = load("train"); va_x, va_y = load("val"); te_x, te_y = load("test")
labels = sorted({l for ys in tr_y for l in ys}); idx = {l: i for i, l in enumerate(labels)}
def hot(ys):
    t = torch.zeros(len(ys), len(labels))
    for i, y in enumerate(ys):
        for l in y: t[i, idx[l]] = 1
    return t
tok = AutoTokenizer.from_pretrained(a.model)
m = AutoModelForSequenceClassification.from_pretrained(a.model, num_labels=len(labels), problem_type="multi_label_classification")
Y = hot(tr_y); VY = hot(va_y); TY = hot(te_y)
pos = Y.sum(0)
n = len(tr_y)
pos_weight = torch.where((pos > 0) & (pos < n), (n - pos) / pos.clamp(min=1), torch.ones_like(pos)) if a.pos_weight == "auto" else None
if pos_weight is not None:
    print(f"pos_weight: min {pos_weight.min():.2f}, max {pos_weight.max():.2f}, mean {pos_weight.mean():.2f}")
loss_fn = torch.nn.BCEWithLogitsLoss(pos_weight=pos_weight)
head = lambda n: n.startswith("classifier.")
decays = lambda n: not (n.endswith(".bias") or "LayerNorm" in n)
groups = []
for is_head in (False, True):
    for dec in (True, False):
        ps = [p for n, p in m.named_parameters() if head(n) == is_head and decays(n) == dec]
        lr = a.head_lr if (is_head and a.head_lr) else a.lr
        groups.append({"params": ps, "weight_decay": 0.01 if dec else 0.0, "lr": lr})
opt = torch.optim.AdamW(groups, lr=a.lr)
epochs = a.epochs; bs = 32
steps = epochs * ((len(tr_x) + bs - 1) // bs)
sch = get_linear_schedule_with_warmup(opt, int(0.1 * steps + 0.999), steps)

def probabilities(xs):
    m.eval(); P = []
    with torch.no_grad():
        for i in range(0, len(xs), 64):
            x = tok(xs[i:i + 64], truncation=True, max_length=128, padding=True, return_tensors="pt")
            P.append(torch.sigmoid(m(**x).logits))
    return torch.cat(P)

def tune(P, T):
    th = torch.full((len(labels),), 0.5)
    grid = [0.05 * k for k in range(1, 20)]
    for j in range(len(labels)):
        if T[:, j].sum() == 0: continue
        best, bf = 0.5, -1.0
        for t in grid:
            p = P[:, j] >= t; y = T[:, j] > 0
            tp = (p & y).sum().item(); fp = (p & ~y).sum().item(); fn = (~p & y).sum().item()
            f = 0.0 if 2 * tp + fp + fn == 0 else 2 * tp / (2 * tp + fp + fn)
            if f > bf + 1e-12 or (abs(f - bf) <= 1e-12 and abs(t - 0.5) < abs(best - 0.5)): best, bf = t, f
        th[j] = best
    return th

def scores(P, T, th):
    pred = (P >= th).float()
    tp = (pred * T).sum().item(); fp = (pred * (1 - T)).sum().item(); fn = ((1 - pred) * T).sum().item()
    micro = 2 * tp / max(2 * tp + fp + fn, 1)
    tpl = (pred * T).sum(0); fpl = (pred * (1 - T)).sum(0); fnl = ((1 - pred) * T).sum(0)
    den = 2 * tpl + fpl + fnl
    macro = torch.where(den > 0, 2 * tpl / den.clamp(min=1), torch.zeros_like(den)).mean().item()
    subset = (pred == T).all(1).float().mean().item()
    loss = torch.nn.functional.binary_cross_entropy(P.clamp(1e-7, 1 - 1e-7), T).item()
    return micro, macro, subset, loss

best = None
for e in range(epochs):
    m.train(); perm = torch.randperm(len(tr_x)); tot = 0; n = 0; t0 = time.time()
    for i in range(0, len(tr_x), bs):
        b = perm[i:i + bs].tolist()
        x = tok([tr_x[j] for j in b], truncation=True, max_length=128, padding=True, return_tensors="pt")
        loss = loss_fn(m(**x).logits, Y[b]); loss.backward()
        torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0); opt.step(); sch.step(); opt.zero_grad()
        tot += loss.item(); n += 1
    P = probabilities(va_x)
    th = tune(P, VY) if a.tune_thresholds else torch.full((len(labels),), 0.5)
    f1, macro, _, vl = scores(P, VY, th)
    print(f"epoch {e+1}: train loss {tot/n:.4f}, val loss {vl:.4f}, micro-F1 {f1:.4f}, macro-F1 {macro:.4f} ({time.time()-t0:.0f} s)", flush=True)
    if best is None or f1 > best[0]:
        best = (f1, e + 1, th)
        PT = probabilities(te_x)
        test = scores(PT, TY, th)
f1, epoch, th = best
print(f"test (best epoch {epoch}): micro-F1 {test[0]:.4f}, macro-F1 {test[1]:.4f}, subset accuracy {test[2]:.4f}, loss {test[3]:.4f}", flush=True)
