"""Generate PyTorch/transformers reference fixtures for Pando's Swift engine tests.

What it makes (all under Tests/Fixtures/):
  minilm/   inputs.json (5 sentences, HF-tokenized, padded to the longest) and
            outputs.safetensors (last_hidden_state [B,T,384], pooler_output [B,384],
            mean_pooled [B,384]) from models/default (all-MiniLM-L6-v2), float32, eval mode.
  tiny/     inputs.json shared by all cases (B=4, T=11, lengths 11,7,9,3) and one folder
            per case (softmax, softmax_weighted, multilabel, regression, softmax_meanpool,
            multilabel_weighted: BCEWithLogitsLoss(pos_weight=class_weights)),
            each with config.json + model.safetensors (BertForSequenceClassification
            save_pretrained), case.json (labels, loss, logits) and grads.safetensors
            (d loss / d every parameter, computed in float64, stored float32).
  adamw/    config.json + model.safetensors (initial weights), trajectory.json (300 steps
            of clip_grad_norm_(1.0) + AdamW + linear warmup schedule; losses, grad norms,
            lrs), after_step_2.safetensors and final.safetensors (parameters, float32).
  README.md short description + library versions.

Run from the repo root (venv is gitignored):
  python3 -m venv .venv-fixtures
  .venv-fixtures/bin/pip install torch transformers safetensors numpy   # torch CPU wheel
  .venv-fixtures/bin/python Tests/Fixtures/make_fixtures.py

Deterministic: every random draw comes from torch.manual_seed / torch.Generator seeds.
"""

import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402
import transformers  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from transformers import (  # noqa: E402
    AutoTokenizer,
    BertConfig,
    BertForSequenceClassification,
    BertModel,
    get_linear_schedule_with_warmup,
)

torch.set_num_threads(1)

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIX = os.path.join(REPO, "Tests", "Fixtures")
MODEL_DIR = os.path.join(REPO, "models", "default")


def write_json(path, obj):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(obj, f, indent=1)
        f.write("\n")


def save_tensors(path, tensors):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    save_file({k: v.detach().to(torch.float32).contiguous() for k, v in tensors.items()}, path)


def mean_pool(hidden, mask):
    m = mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * m).sum(dim=1) / m.sum(dim=1).clamp(min=1e-9)


# ---------------------------------------------------------------------------
# 1. MiniLM forward reference
# ---------------------------------------------------------------------------
def make_minilm():
    sentences = [
        "The quick brown fox jumps over the lazy dog.",
        "Hi.",
        "On 12 March 2024, the rocket reached 3,500 km/h -- faster than expected!",
        "Federated learning trains a shared model without moving anyone's data off their device.",
        "I love reading books about history",
    ]
    tok = AutoTokenizer.from_pretrained(MODEL_DIR)
    enc = tok(sentences, padding=True, return_tensors="pt")
    ids = enc["input_ids"]
    unk = tok.convert_tokens_to_ids("[UNK]")
    assert unk == 100, unk
    assert (ids != unk).all(), "tokenizer produced [UNK]: vocab not loaded?"
    assert tok.convert_tokens_to_ids(["the", "quick", "fox"]) == tok(["the quick fox"])["input_ids"][0][1:-1]
    assert ids[:, 0].eq(101).all(), "expected [CLS]=101 first"

    model = BertModel.from_pretrained(MODEL_DIR, attn_implementation="eager").eval()
    with torch.no_grad():
        out = model(**enc)
        out64 = model.double()(**enc)
    lhs, pool = out.last_hidden_state, out.pooler_output
    mp = mean_pool(lhs, enc["attention_mask"])
    mp64 = mean_pool(out64.last_hidden_state, enc["attention_mask"])
    dev = {
        "last_hidden_state": (lhs.double() - out64.last_hidden_state).abs().max().item(),
        "pooler_output": (pool.double() - out64.pooler_output).abs().max().item(),
        "mean_pooled": (mp.double() - mp64).abs().max().item(),
    }
    print("minilm float32 vs float64 max abs deviation:", dev)
    assert max(dev.values()) < 1e-4, dev

    write_json(
        os.path.join(FIX, "minilm", "inputs.json"),
        {
            "sentences": sentences,
            "input_ids": enc["input_ids"].tolist(),
            "attention_mask": enc["attention_mask"].tolist(),
            "token_type_ids": enc["token_type_ids"].tolist(),
        },
    )
    save_tensors(
        os.path.join(FIX, "minilm", "outputs.safetensors"),
        {"last_hidden_state": lhs, "pooler_output": pool, "mean_pooled": mp},
    )
    print("minilm shapes:", tuple(lhs.shape), "max dev", max(dev.values()))
    return dev


# ---------------------------------------------------------------------------
# 2. Tiny random BERT: gradient parity
# ---------------------------------------------------------------------------
def tiny_config(num_labels):
    return BertConfig(
        vocab_size=99,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=37,
        max_position_embeddings=40,
        type_vocab_size=2,
        hidden_act="gelu",
        layer_norm_eps=1e-12,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        initializer_range=0.2,
        pad_token_id=0,
        num_labels=num_labels,
        attn_implementation="eager",
    )


def make_tiny_model(num_labels, seed):
    """Seeded HF init, then perturb the constant-initialised tensors (biases = 0,
    LayerNorm weight = 1 / bias = 0) so bias/LayerNorm handling is actually tested."""
    torch.manual_seed(seed)
    model = BertForSequenceClassification(tiny_config(num_labels))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(".bias"):
                p.add_(0.1 * torch.randn_like(p))
            elif "LayerNorm" in name and name.endswith(".weight"):
                p.add_(0.1 * torch.randn_like(p))
    return model.eval()


def make_tiny_inputs():
    B, T = 4, 11
    lengths = [11, 7, 9, 3]
    g = torch.Generator().manual_seed(1234)
    ids = torch.zeros(B, T, dtype=torch.long)
    mask = torch.zeros(B, T, dtype=torch.long)
    tt = torch.zeros(B, T, dtype=torch.long)
    for b, L in enumerate(lengths):
        ids[b, 0] = 2
        ids[b, 1 : L - 1] = torch.randint(5, 99, (L - 2,), generator=g)
        ids[b, L - 1] = 3
        mask[b, :L] = 1
    # segment B (token type 1) for the second half of the real tokens of rows 0 and 2
    for b in (0, 2):
        L = lengths[b]
        tt[b, L // 2 : L] = 1
    return {
        "lengths": lengths,
        "input_ids": ids.tolist(),
        "attention_mask": mask.tolist(),
        "token_type_ids": tt.tolist(),
    }


def forward_logits(model, inp, pooling):
    if pooling == "pooler":
        return model(**inp).logits
    hidden = model.bert(**inp).last_hidden_state
    return model.classifier(model.dropout(mean_pool(hidden, inp["attention_mask"])))


def compute_loss(logits, head, labels, class_weights):
    if head == "softmax":
        y = torch.tensor(labels, dtype=torch.long)
        w = None if class_weights is None else torch.tensor(class_weights, dtype=logits.dtype)
        return torch.nn.CrossEntropyLoss(weight=w)(logits, y)
    if head == "multilabel":
        y = torch.tensor(labels, dtype=logits.dtype)
        pw = None if class_weights is None else torch.tensor(class_weights, dtype=logits.dtype)
        return torch.nn.BCEWithLogitsLoss(pos_weight=pw)(logits, y)
    if head == "regression":
        y = torch.tensor(labels, dtype=logits.dtype)
        return torch.nn.MSELoss()(logits.squeeze(-1), y)
    raise ValueError(head)


def tensor_inputs(inputs):
    return {k: torch.tensor(inputs[k], dtype=torch.long) for k in ("input_ids", "attention_mask", "token_type_ids")}


def make_tiny(inputs):
    write_json(os.path.join(FIX, "tiny", "inputs.json"), inputs)
    inp = tensor_inputs(inputs)
    cases = [
        ("softmax", "softmax", "pooler", 3, [0, 2, 1, 2], None),
        ("softmax_weighted", "softmax", "pooler", 3, [0, 2, 1, 2], [0.5, 2.0, 1.0]),
        ("multilabel", "multilabel", "pooler", 5,
         [[1, 0, 0, 1, 0], [0, 1, 0, 0, 0], [1, 1, 0, 0, 1], [0, 0, 1, 0, 0]], None),
        ("regression", "regression", "pooler", 1, [-1.5, 0.25, 2.0, 3.5], None),
        ("softmax_meanpool", "softmax", "mean", 3, [0, 2, 1, 2], None),
        # class_weights of a multi-label case are per-label positive weights (pos_weight).
        ("multilabel_weighted", "multilabel", "pooler", 5,
         [[1, 0, 0, 1, 0], [0, 1, 0, 0, 0], [1, 1, 0, 0, 1], [0, 0, 1, 0, 0]], [3.0, 0.5, 7.0, 1.0, 2.5]),
    ]
    summary = {}
    for i, (case, head, pooling, n, labels, cw) in enumerate(cases):
        d = os.path.join(FIX, "tiny", case)
        model = make_tiny_model(n, seed=100 + i)
        model.save_pretrained(d, safe_serialization=True)

        model.double()
        model.zero_grad(set_to_none=False)
        logits = forward_logits(model, inp, pooling)
        loss = compute_loss(logits, head, labels, cw)
        loss.backward()
        grads = {}
        for name, p in model.named_parameters():
            grads[name] = p.grad if p.grad is not None else torch.zeros_like(p)
        if pooling == "mean":
            assert all(grads[k].abs().max() == 0 for k in grads if "pooler" in k)
        save_tensors(os.path.join(d, "grads.safetensors"), grads)
        write_json(
            os.path.join(d, "case.json"),
            {
                "head": head,
                "pooling": pooling,
                "num_labels": n,
                "labels": labels,
                "class_weights": cw,
                "loss": loss.item(),
                "logits": logits.detach().tolist(),
            },
        )
        summary[case] = loss.item()
        print(f"tiny/{case}: loss={loss.item():.6f} grad-norm="
              f"{torch.sqrt(sum((g ** 2).sum() for g in grads.values())).item():.4f}")
    return summary


# ---------------------------------------------------------------------------
# 3. AdamW trajectory
# ---------------------------------------------------------------------------
def make_adamw(inputs):
    d = os.path.join(FIX, "adamw")
    labels = [0, 3, 1, 2]
    lr, warmup, steps, wd, clip = 1e-3, 30, 300, 0.01, 1.0
    model = make_tiny_model(4, seed=200)
    model.save_pretrained(d, safe_serialization=True)
    model.double().train()  # dropout probs are 0, so train() == eval() numerically

    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if name.endswith(".bias") or "LayerNorm" in name else decay).append(p)
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": wd}, {"params": no_decay, "weight_decay": 0.0}],
        lr=lr, betas=(0.9, 0.999), eps=1e-8,
    )
    sched = get_linear_schedule_with_warmup(opt, num_warmup_steps=warmup, num_training_steps=steps)
    params = [p for p in model.parameters()]
    inp = tensor_inputs(inputs)
    losses, norms, lrs = [], [], []
    snap2 = None
    for step in range(steps):
        opt.zero_grad(set_to_none=True)
        logits = model(**inp).logits
        loss = compute_loss(logits, "softmax", labels, None)
        loss.backward()
        total = torch.nn.utils.clip_grad_norm_(params, clip)
        losses.append(loss.item())
        norms.append(total.item())
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
        if step == 1:
            snap2 = {n: p.detach().clone() for n, p in model.named_parameters()}
    final = {n: p.detach() for n, p in model.named_parameters()}
    write_json(
        os.path.join(d, "trajectory.json"),
        {
            "labels": labels,
            "lr": lr,
            "warmup": warmup,
            "steps": steps,
            "weight_decay": wd,
            "clip": clip,
            "betas": [0.9, 0.999],
            "eps": 1e-8,
            "no_decay_rule": "name ends with .bias or contains LayerNorm",
            "losses": losses,
            "grad_norms": norms,
            "lrs": lrs,
        },
    )
    save_tensors(os.path.join(d, "after_step_2.safetensors"), snap2)
    save_tensors(os.path.join(d, "final.safetensors"), final)
    print(f"adamw: loss {losses[0]:.5f} -> {losses[-1]:.5f}; lrs[:3]={lrs[:3]} lrs[29:32]={lrs[29:32]} "
          f"lrs[-1]={lrs[-1]}")
    return losses


def write_readme():
    text = f"""# Test fixtures (generated — do not edit by hand)

- `minilm/`: 5 sentences tokenized by models/default (all-MiniLM-L6-v2) tokenizer.json (`inputs.json`) and float32 BertModel eval outputs `last_hidden_state`, `pooler_output`, `mean_pooled` (`outputs.safetensors`).
- `tiny/inputs.json`: shared batch (B=4, T=11, lengths 11,7,9,3; [CLS]=2, [SEP]=3, pad=0) for the tiny random BERT (hidden 32, 2 layers, 4 heads, ffn 37, vocab 99).
- `tiny/<case>/`: `config.json` + `model.safetensors` (BertForSequenceClassification, float32), `case.json` (head, pooling, labels, loss, logits) and `grads.safetensors` (d loss / d every parameter, same names, float64 compute stored float32). Cases: softmax, softmax_weighted, multilabel, regression, softmax_meanpool (pooler grads are zero), multilabel_weighted (`BCEWithLogitsLoss(pos_weight=class_weights)`).
- `adamw/`: initial tiny model (4 labels), `trajectory.json` (300 steps: clip_grad_norm_ 1.0, AdamW lr 1e-3 wd 0.01 except bias/LayerNorm, linear warmup 30; loss, pre-clip grad norm and lr per step — step 1 has lr 0), `after_step_2.safetensors`, `final.safetensors`.
- Regenerate from the repo root: `.venv-fixtures/bin/python Tests/Fixtures/make_fixtures.py` (venv: torch CPU wheel, transformers, safetensors, numpy).
- Versions used: torch {torch.__version__}, transformers {transformers.__version__}, safetensors {__import__('safetensors').__version__}, numpy {__import__('numpy').__version__}.
- Tiny models: HF init (initializer_range 0.2) with biases and LayerNorm weights perturbed by N(0, 0.1) so they are non-trivial; eager attention; exact erf GELU; dropout 0.
"""
    with open(os.path.join(FIX, "README.md"), "w") as f:
        f.write(text)


def main():
    print("torch", torch.__version__, "transformers", transformers.__version__)
    make_minilm()
    inputs = make_tiny_inputs()
    make_tiny(inputs)
    make_adamw(inputs)
    write_readme()


if __name__ == "__main__":
    main()
