"""Generate PyTorch/transformers references for the DistilBERT and RoBERTa families.

What it makes (under Tests/Fixtures/families/):
  inputs.json   the batch of tiny/inputs.json (B=4, lengths 11,7,9,3) with RoBERTa's
                padding id 1 in the padded cells and every token type 0 (neither family
                uses segments: DistilBERT has no token-type table, RoBERTa has one row).
  <case>/       config.json + model.safetensors (save_pretrained of
                DistilBertForSequenceClassification or RobertaForSequenceClassification),
                case.json (head, pooling, labels, loss, logits) and grads.safetensors
                (d loss / d every parameter, computed in float64, stored float32).

  roberta_encoder/, distilbert_encoder/
                pretrained-style folders (RobertaModel / DistilBertModel save_pretrained,
                no task head, bare tensor names) of tiny random encoders whose vocabularies
                are the tokenizer fixtures' (bpe/: byte-level BPE; wordpiece_cased/: cased
                WordPiece), with those tokenizer files beside them, for end-to-end training,
                prediction and embedding tests and for the by-hand check that transformers
                loads what Pando trains (check_hf_roundtrip.py).

Cases: distilbert_softmax, distilbert_regression, distilbert_meanpool, roberta_softmax,
roberta_multilabel, roberta_meanpool. "pooler" is each family's own head (DistilBERT:
pre_classifier + ReLU + classifier on the first token; RoBERTa: dense + tanh + out_proj
on <s>); "mean" is the mean of the last hidden state over real tokens followed by the
family's last linear layer (classifier / classifier.out_proj), as Pando's mean pooling.
RoBERTa's position ids come from transformers itself (padding_idx + 1 onwards), so the
fixtures also check the offset.

Run from the repo root with a venv holding torch (CPU) and transformers:
  .venv-fixtures/bin/python Tests/Fixtures/make_family_fixtures.py
"""

import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
import transformers  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from transformers import (  # noqa: E402
    DistilBertConfig,
    DistilBertForSequenceClassification,
    DistilBertModel,
    RobertaConfig,
    RobertaForSequenceClassification,
    RobertaModel,
)

torch.set_num_threads(1)

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "families")
ROBERTA_PAD = 1


def write_json(path, obj):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(obj, f, indent=1)
        f.write("\n")


def distilbert_config(n):
    return DistilBertConfig(
        vocab_size=99, dim=32, n_layers=2, n_heads=4, hidden_dim=37, max_position_embeddings=40,
        dropout=0.0, attention_dropout=0.0, seq_classif_dropout=0.0, activation="gelu",
        initializer_range=0.2, pad_token_id=0, num_labels=n, attn_implementation="eager",
    )


def roberta_config(n):
    return RobertaConfig(
        vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
        max_position_embeddings=40 + ROBERTA_PAD + 1, type_vocab_size=1, hidden_act="gelu",
        layer_norm_eps=1e-5, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
        initializer_range=0.2, pad_token_id=ROBERTA_PAD, bos_token_id=0, eos_token_id=2,
        num_labels=n, attn_implementation="eager",
    )


def perturb(model):
    """Biases and LayerNorm weights moved off their constant init by N(0, 0.1), in place."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(".bias") or ("norm" in name.lower() and name.endswith(".weight")):
                p.add_(0.1 * torch.randn_like(p))
    return model


def make_model(family, n, seed):
    """Seeded HF init, then biases and LayerNorm weights perturbed so they are tested."""
    torch.manual_seed(seed)
    if family == "distilbert":
        model = DistilBertForSequenceClassification(distilbert_config(n))
    else:
        model = RobertaForSequenceClassification(roberta_config(n))
    return perturb(model).eval()


def mean_pool(hidden, mask):
    m = mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * m).sum(dim=1) / m.sum(dim=1)


def logits_of(model, family, inp, pooling):
    if pooling == "pooler":
        return model(**inp).logits
    if family == "distilbert":
        hidden = model.distilbert(**inp).last_hidden_state
        return model.classifier(model.dropout(mean_pool(hidden, inp["attention_mask"])))
    hidden = model.roberta(**inp).last_hidden_state
    head = model.classifier
    return head.out_proj(head.dropout(mean_pool(hidden, inp["attention_mask"])))


def loss_of(logits, head, labels):
    if head == "softmax":
        return torch.nn.CrossEntropyLoss()(logits, torch.tensor(labels, dtype=torch.long))
    if head == "multilabel":
        return torch.nn.BCEWithLogitsLoss()(logits, torch.tensor(labels, dtype=logits.dtype))
    return torch.nn.MSELoss()(logits.squeeze(-1), torch.tensor(labels, dtype=logits.dtype))


def main():
    with open(os.path.join(HERE, "tiny", "inputs.json")) as f:
        base = json.load(f)
    lengths = base["lengths"]
    ids = [[t if j < lengths[b] else ROBERTA_PAD for j, t in enumerate(row)] for b, row in enumerate(base["input_ids"])]
    assert all(t not in (0, ROBERTA_PAD) for b, row in enumerate(ids) for t in row[:lengths[b]])
    inputs = {"lengths": lengths, "input_ids": ids, "attention_mask": base["attention_mask"],
              "token_type_ids": [[0] * len(row) for row in ids]}
    write_json(os.path.join(OUT, "inputs.json"), inputs)
    ids_t = torch.tensor(ids, dtype=torch.long)
    mask_t = torch.tensor(inputs["attention_mask"], dtype=torch.long)

    cases = [
        ("distilbert_softmax", "distilbert", "softmax", "pooler", 3, [0, 2, 1, 2]),
        ("distilbert_regression", "distilbert", "regression", "pooler", 1, [-1.5, 0.25, 2.0, 3.5]),
        ("distilbert_meanpool", "distilbert", "softmax", "mean", 3, [0, 2, 1, 2]),
        ("roberta_softmax", "roberta", "softmax", "pooler", 3, [0, 2, 1, 2]),
        ("roberta_multilabel", "roberta", "multilabel", "pooler", 5,
         [[1, 0, 0, 1, 0], [0, 1, 0, 0, 0], [1, 1, 0, 0, 1], [0, 0, 1, 0, 0]]),
        ("roberta_meanpool", "roberta", "softmax", "mean", 3, [0, 2, 1, 2]),
    ]
    for i, (case, family, head, pooling, n, labels) in enumerate(cases):
        d = os.path.join(OUT, case)
        model = make_model(family, n, seed=300 + i)
        model.save_pretrained(d, safe_serialization=True)
        model.double()
        model.zero_grad(set_to_none=False)
        inp = {"input_ids": ids_t, "attention_mask": mask_t}
        if family == "roberta":
            inp["token_type_ids"] = torch.zeros_like(ids_t)
        logits = logits_of(model, family, inp, pooling)
        loss = loss_of(logits, head, labels)
        loss.backward()
        grads = {name: (p.grad if p.grad is not None else torch.zeros_like(p)) for name, p in model.named_parameters()}
        save_file({k: v.detach().to(torch.float32).contiguous() for k, v in grads.items()},
                  os.path.join(d, "grads.safetensors"))
        write_json(os.path.join(d, "case.json"), {
            "family": family, "head": head, "pooling": pooling, "num_labels": n, "labels": labels,
            "loss": loss.item(), "logits": logits.detach().tolist(),
        })
        norm = torch.sqrt(sum((g ** 2).sum() for g in grads.values())).item()
        print(f"{case}: loss={loss.item():.6f} grad-norm={norm:.4f} tensors={len(grads)}")
    print("torch", torch.__version__, "transformers", transformers.__version__)


def make_ordinal():
    """bert_ordinal/: the tiny BERT with Pando's CORAL head (one weight row shared by the
    K − 1 = 3 thresholds, a bias each; logits = w·drop(pooler) + b; BCE over the thresholds,
    mean over thresholds and texts), levels [0, 3, 1, 2]. Saved with BertModel's names plus
    classifier.weight [1, H] and classifier.bias [3], which transformers has no class for."""
    from transformers import BertConfig, BertForSequenceClassification
    with open(os.path.join(HERE, "tiny", "inputs.json")) as f:
        base = json.load(f)
    torch.manual_seed(320)
    model = BertForSequenceClassification(BertConfig(
        vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
        max_position_embeddings=40, type_vocab_size=2, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
        initializer_range=0.2, pad_token_id=0, num_labels=1, attn_implementation="eager"))
    levels, K = [0, 3, 1, 2], 4
    bias = torch.nn.Parameter(0.3 * torch.randn(K - 1))
    perturb(model).eval()
    d = os.path.join(OUT, "bert_ordinal")
    os.makedirs(d, exist_ok=True)
    model.config.save_pretrained(d)
    tensors = {n: p.detach().clone() for n, p in model.named_parameters() if n != "classifier.bias"}
    tensors["classifier.bias"] = bias.detach().clone()
    save_file({k: v.to(torch.float32).contiguous() for k, v in tensors.items()}, os.path.join(d, "model.safetensors"))

    model.double()
    bias64 = torch.nn.Parameter(bias.detach().double())
    inp = {k: torch.tensor(base[k], dtype=torch.long) for k in ("input_ids", "attention_mask", "token_type_ids")}
    pooled = model.dropout(model.bert(**inp).pooler_output)
    logits = pooled @ model.classifier.weight.T + bias64
    targets = torch.tensor([[1.0 if y > k else 0.0 for k in range(K - 1)] for y in levels], dtype=torch.float64)
    loss = torch.nn.BCEWithLogitsLoss()(logits, targets)
    loss.backward()
    grads = {n: (p.grad if p.grad is not None else torch.zeros_like(p)) for n, p in model.named_parameters() if n != "classifier.bias"}
    grads["classifier.bias"] = bias64.grad
    save_file({k: v.detach().to(torch.float32).contiguous() for k, v in grads.items()}, os.path.join(d, "grads.safetensors"))
    write_json(os.path.join(d, "case.json"), {"family": "bert", "head": "ordinal", "pooling": "pooler", "num_labels": K,
                                               "labels": levels, "loss": loss.item(), "logits": logits.detach().tolist()})
    print(f"bert_ordinal: loss={loss.item():.6f}")


def make_encoder_folders():
    """Run make_family_tokenizer_fixtures.py first: the vocabularies come from there."""
    import shutil
    with open(os.path.join(HERE, "bpe", "vocab.json"), encoding="utf-8") as f:
        bpe_size = len(json.load(f))
    with open(os.path.join(HERE, "wordpiece_cased", "vocab.txt"), encoding="utf-8") as f:
        wp_size = len(f.read().split("\n")[:-1])
    small = dict(initializer_range=0.1, attn_implementation="eager")
    torch.manual_seed(400)
    roberta = RobertaModel(RobertaConfig(
        vocab_size=bpe_size, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=24,
        max_position_embeddings=66, type_vocab_size=1, layer_norm_eps=1e-5, pad_token_id=1, bos_token_id=0,
        eos_token_id=2, **small)).eval()
    d = os.path.join(OUT, "roberta_encoder")
    roberta.save_pretrained(d, safe_serialization=True)
    for name in ("vocab.json", "merges.txt", "tokenizer_config.json"):
        shutil.copyfile(os.path.join(HERE, "bpe", name), os.path.join(d, name))
    torch.manual_seed(401)
    distil = DistilBertModel(DistilBertConfig(
        vocab_size=wp_size, dim=16, n_layers=2, n_heads=2, hidden_dim=24, max_position_embeddings=64,
        pad_token_id=0, **small)).eval()
    d = os.path.join(OUT, "distilbert_encoder")
    distil.save_pretrained(d, safe_serialization=True)
    for name in ("vocab.txt", "tokenizer_config.json"):
        shutil.copyfile(os.path.join(HERE, "wordpiece_cased", name), os.path.join(d, name))
    # Mean-pooled last hidden states, tokenized by transformers from each folder's own files:
    # the tokenizer, position offset and encoder together, as `pando embed` runs them.
    from transformers import AutoTokenizer
    sentences = ["The students liked the new library.", " Leading space and ÉMOJI 😀 here",
                 "中文和English混合", "Why did the rocket reach 3,500 km/h?", "ok"]
    out = {"sentences": sentences}
    for name, model in (("roberta_encoder", roberta), ("distilbert_encoder", distil)):
        tok = AutoTokenizer.from_pretrained(os.path.join(OUT, name))
        enc = tok(sentences, padding=True, return_tensors="pt")
        with torch.no_grad():
            hidden = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).last_hidden_state
        out[name] = {"tokenizer": type(tok).__name__, "input_ids": enc["input_ids"].tolist(),
                     "attention_mask": enc["attention_mask"].tolist(),
                     "mean_pooled": mean_pool(hidden, enc["attention_mask"]).tolist()}
    write_json(os.path.join(OUT, "encoder_embeddings.json"), out)
    print(f"encoder folders: roberta vocab {bpe_size}, distilbert vocab {wp_size}")


if __name__ == "__main__":
    main()
    make_ordinal()
    make_encoder_folders()
