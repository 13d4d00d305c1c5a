"""The README's DP-SGD accuracy recipe run through Opacus, as the anchor Pando's figure is
compared with (issue 16): MiniLM, embeddings and encoder layers 0-3 frozen, a mean-pooling
head (masked mean of the last hidden states, dropout, one linear layer, as Pando's `--pooling
mean`), Poisson batches of expected size 256, per-example clipping at C = 1, σ calibrated by
Opacus's RDP accountant to (ε, δ) over all epochs, AdamW (decay 0.01, none on biases and
LayerNorm) with 10% warm-up then linear decay, max length 128. Test metrics at the best
validation epoch (accuracy), as `pando train` reports them.

    python Tests/Benchmarks/opacus_recipe.py --model models/default \
        --data ../shared/data/splits/trec_coarse [--epsilon 8] [--epochs 15] [--lr 2e-3]

Prints one line per epoch and a final JSON object. Needs torch, transformers and opacus
(not in CI).
"""
import argparse, csv, json, math, os, resource, time, warnings

import opacus
import torch
from opacus import PrivacyEngine
from opacus.utils.batch_memory_manager import BatchMemoryManager
from transformers import AutoModel, AutoTokenizer

warnings.filterwarnings("ignore")
p = argparse.ArgumentParser()
p.add_argument("--model", required=True)
p.add_argument("--data", required=True, help="path prefix: PREFIX.train.csv, PREFIX.val.csv, PREFIX.test.csv (text,label)")
p.add_argument("--epsilon", type=float, default=8)
p.add_argument("--delta", type=float, default=1e-5)
p.add_argument("--epochs", type=int, default=15)
p.add_argument("--batch-size", type=int, default=256)
p.add_argument("--lr", type=float, default=2e-3)
p.add_argument("--freeze-layers", type=int, default=4)
p.add_argument("--max-length", type=int, default=128)
p.add_argument("--threads", type=int, default=os.cpu_count())
p.add_argument("--seed", type=int, default=42)
a = p.parse_args()
torch.set_num_threads(a.threads)
torch.manual_seed(a.seed)


def read(split):
    with open(f"{a.data}.{split}.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return [r["text"] for r in rows], [r["label"] for r in rows]


train_x, train_y = read("train")
val_x, val_y = read("val")
test_x, test_y = read("test")
labels = sorted(set(train_y))
index = {l: i for i, l in enumerate(labels)}
tokenizer = AutoTokenizer.from_pretrained(a.model)


def encode(texts):
    return [tokenizer(t, truncation=True, max_length=a.max_length)["input_ids"] for t in texts]


class MeanPooled(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = AutoModel.from_pretrained(a.model, add_pooling_layer=False, attn_implementation="eager")
        hidden = self.encoder.config.hidden_size
        self.dropout = torch.nn.Dropout(self.encoder.config.hidden_dropout_prob)
        self.classifier = torch.nn.Linear(hidden, len(labels))
        torch.nn.init.normal_(self.classifier.weight, std=self.encoder.config.initializer_range)
        torch.nn.init.zeros_(self.classifier.bias)

    def forward(self, ids, mask):
        h = self.encoder(input_ids=ids, attention_mask=mask).last_hidden_state
        m = mask.unsqueeze(-1).to(h.dtype)
        return self.classifier(self.dropout((h * m).sum(1) / m.sum(1).clamp(min=1)))


model = MeanPooled()
for name, param in model.named_parameters():
    layer = int(name.split("encoder.layer.")[1].split(".")[0]) if "encoder.layer." in name else None
    param.requires_grad = not (name.startswith("encoder.embeddings.") or (layer is not None and layer < a.freeze_layers))
trained = [(n, q) for n, q in model.named_parameters() if q.requires_grad]
decay = [q for n, q in trained if not (n.endswith(".bias") or "LayerNorm" in n)]
no_decay = [q for n, q in trained if n.endswith(".bias") or "LayerNorm" in n]
optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}], lr=a.lr)

train_ids = encode(train_x)
train_set = torch.utils.data.TensorDataset(torch.arange(len(train_ids)), torch.tensor([index[y] for y in train_y]))
loader = torch.utils.data.DataLoader(train_set, batch_size=a.batch_size, shuffle=True)


def pad(rows):
    width = max(len(r) for r in rows)
    ids = torch.tensor([r + [tokenizer.pad_token_id] * (width - len(r)) for r in rows])
    return ids, torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])


engine = PrivacyEngine(accountant="rdp")
model.train()
model, optimizer, loader = engine.make_private_with_epsilon(
    module=model, optimizer=optimizer, data_loader=loader, target_epsilon=a.epsilon, target_delta=a.delta,
    epochs=a.epochs, max_grad_norm=1.0, poisson_sampling=True)
sigma = optimizer.noise_multiplier
steps_per_epoch = len(loader)
total = steps_per_epoch * a.epochs
warmup = math.ceil(0.1 * total)
schedule = torch.optim.lr_scheduler.LambdaLR(
    optimizer.original_optimizer, lambda s: s / max(1, warmup) if s < warmup else max(0.0, (total - s) / max(1, total - warmup)))


def evaluate(texts, ys):
    model.eval()
    ids_all, right = encode(texts), 0
    with torch.no_grad():
        for s in range(0, len(ids_all), 128):
            ids, mask = pad(ids_all[s:s + 128])
            right += (model(ids, mask).argmax(-1) == torch.tensor([index[y] for y in ys[s:s + 128]])).sum().item()
    model.train()
    return right / len(texts)


print(f"opacus {opacus.__version__}: {len(train_x)} train, sampling rate {1 / steps_per_epoch:.4f}, sigma {sigma:.4f} for "
      f"epsilon {a.epsilon} delta {a.delta} over {total} steps", flush=True)
start, history = time.perf_counter(), []
for epoch in range(1, a.epochs + 1):
    with BatchMemoryManager(data_loader=loader, max_physical_batch_size=64, optimizer=optimizer) as physical:
        for positions, y in physical:
            if len(positions) == 0:
                continue
            ids, mask = pad([train_ids[i] for i in positions.tolist()])
            torch.nn.functional.cross_entropy(model(ids, mask), y).backward()
            optimizer.step()
            if not optimizer._is_last_step_skipped:
                schedule.step()
            optimizer.zero_grad()
    val, test = evaluate(val_x, val_y), evaluate(test_x, test_y)
    history.append({"epoch": epoch, "validation_accuracy": val, "test_accuracy": test, "seconds": time.perf_counter() - start})
    print(json.dumps(history[-1]), flush=True)
best = max(history, key=lambda h: h["validation_accuracy"])
print(json.dumps({"opacus": opacus.__version__, "epsilon_target": a.epsilon, "epsilon_spent": engine.get_epsilon(a.delta),
                  "sigma": sigma, "steps": total, "best_epoch": best["epoch"], "test_accuracy_at_best_validation": best["test_accuracy"],
                  "seconds": time.perf_counter() - start, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
