"""Opacus reference for Pando's DP-SGD per-example clipping, for OpacusParityTests.

Made with opacus 1.6.0 (torch 2.13 CPU, transformers 5.x, Python 3.11). Run from the repo root:
    python3 -m venv .venv-opacus && .venv-opacus/bin/pip install torch transformers safetensors opacus==1.6.0
    .venv-opacus/bin/python Tests/Fixtures/privacy/make_opacus_fixture.py
Writes opacus_tiny.safetensors and opacus_tiny.json next to this script. Takes a few seconds.

Model: Tests/Fixtures/tiny/softmax (BertForSequenceClassification, 3 labels, pooler head, dropout 0),
batch: Tests/Fixtures/tiny/inputs.json (4 padded sequences), labels [0, 2, 1, 2], computed in float64.

Each example's loss is its own cross-entropy (loss_reduction "sum": the batch loss is the sum, not
the mean, so Opacus's per-sample gradients are the gradients of the per-example losses). Per-sample
gradients come from Opacus's GradSampleModule (hooks mode); the clipped sum
    sum_i min(1, C / (||g_i|| + 1e-6)) * g_i
is Opacus's own: DPOptimizer (noise_multiplier 0, loss_reduction "sum", SGD with lr 0) and its
clip_and_accumulate, whose clip factor is (C / (per_sample_norms + 1e-6)).clamp(max=1) -- the same
1e-6 as Pando's. The script also recomputes the norms and the clipped sum by hand from the
per-sample gradients, and checks the per-sample gradients against one ordinary backward per
example, and asserts all three agree.

C is the median of the four norms (the mean of the middle two, so two examples are clipped and two
are not), rounded to float32 so that Pando's Float C is exactly the value used here.

Cases (tensor names "<case>/<HF parameter name>" for the clipped sums, "<case>/norms" [4]):
  all:               every parameter trained;
  frozen_embeddings: requires_grad False on bert.embeddings.* (word, position, token type, LayerNorm);
                     those tensors are excluded from the norms and absent from the file.

Notes on running Opacus on Hugging Face BERT:
  * GradSampleModule only captures activations while module.training is True, so the model is put
    in train() mode; every dropout probability is 0 so this equals eval() numerically (checked).
  * BertEmbeddings looks up position embeddings with its [1, T] position_ids buffer, so that
    nn.Embedding sees a batch of 1 and Opacus cannot form per-sample gradients for it; position_ids
    are therefore passed explicitly as a [B, T] tensor (same values, same logits).
  * token_type_ids are passed explicitly (the fixture's rows 0 and 2 use type 1).
"""
import json
import os
import sys
from importlib.metadata import version

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402
import transformers  # noqa: E402
from opacus import GradSampleModule  # noqa: E402
from opacus.optimizers import DPOptimizer  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from transformers import BertForSequenceClassification  # noqa: E402

OPACUS = "1.6.0"
if version("opacus") != OPACUS:
    sys.exit(f"need opacus=={OPACUS}, found {version('opacus')}")

torch.set_num_threads(1)
HERE = os.path.dirname(os.path.abspath(__file__))
FIX = os.path.dirname(HERE)
LABELS = [0, 2, 1, 2]
EPS = 1e-6  # Opacus DPOptimizer.clip_and_accumulate and Pando's clippedGradients


def load_inputs():
    with open(os.path.join(FIX, "tiny", "inputs.json")) as f:
        raw = json.load(f)
    inp = {k: torch.tensor(raw[k], dtype=torch.long) for k in ("input_ids", "attention_mask", "token_type_ids")}
    B, T = inp["input_ids"].shape
    inp["position_ids"] = torch.arange(T).unsqueeze(0).repeat(B, 1)
    return inp


def load_model():
    model = BertForSequenceClassification.from_pretrained(
        os.path.join(FIX, "tiny", "softmax"), attn_implementation="eager")
    return model.double()


def per_example_losses(model, inp, y):
    logits = model(**inp).logits
    return torch.nn.functional.cross_entropy(logits, y, reduction="none")


def run_case(frozen_prefix, inp, y):
    model = load_model()
    for name, p in model.named_parameters():
        p.requires_grad_(not (frozen_prefix and name.startswith(frozen_prefix)))
    trained = [(n, p) for n, p in model.named_parameters() if p.requires_grad]

    # train() equals eval() here: every dropout is 0.
    with torch.no_grad():
        ref = model.eval()(**inp).logits
        assert torch.equal(ref, model.train()(**inp).logits)
        no_pos = {k: v for k, v in inp.items() if k != "position_ids"}
        assert torch.allclose(ref, model(**no_pos).logits, rtol=0, atol=1e-12), "explicit position_ids changed logits"

    # Naive per-example gradients: one backward of each example's own loss.
    naive = []
    for b in range(len(LABELS)):
        model.zero_grad(set_to_none=True)
        one = {k: v[b:b + 1] for k, v in inp.items()}
        per_example_losses(model, one, y[b:b + 1]).sum().backward()
        naive.append({n: p.grad.detach().clone() for n, p in trained})
    model.zero_grad(set_to_none=True)

    gsm = GradSampleModule(model, batch_first=True, loss_reduction="sum")
    per_example_losses(gsm, inp, y).sum().backward()
    samples = {n: p.grad_sample.detach().clone() for n, p in trained}
    for n, _ in trained:
        assert samples[n].shape == (len(LABELS),) + naive[0][n].shape, n
        for b in range(len(LABELS)):
            d = (samples[n][b] - naive[b][n]).abs().max().item()
            assert d < 1e-12, f"{n} example {b}: Opacus per-sample gradient differs from naive by {d}"

    norms = torch.stack([g.reshape(len(LABELS), -1).norm(dim=1) for g in samples.values()], dim=1).norm(dim=1)
    middle = norms.sort().values[1:3]
    C = float(torch.tensor(middle.mean().item(), dtype=torch.float32).item())
    factor = (C / (norms + EPS)).clamp(max=1.0)
    by_hand = {n: torch.einsum("i,i...->...", factor, g) for n, g in samples.items()}

    # Opacus's own clipping: DPOptimizer with no noise, sum reduction, lr 0.
    opt = DPOptimizer(torch.optim.SGD([p for _, p in trained], lr=0.0), noise_multiplier=0.0,
                      max_grad_norm=C, expected_batch_size=len(LABELS), loss_reduction="sum")
    opt.step()
    clipped = {n: p.grad.detach().clone() for n, p in trained}
    for n in clipped:
        d = (clipped[n] - by_hand[n]).abs().max().item()
        assert d < 1e-12, f"{n}: Opacus clipped sum differs from the hand computation by {d}"
    gsm._close()
    return C, norms, factor, clipped


def main():
    inp = load_inputs()
    y = torch.tensor(LABELS, dtype=torch.long)
    tensors, info = {}, {"labels": LABELS, "epsilon": EPS, "cases": {}}
    for case, prefix in (("all", None), ("frozen_embeddings", "bert.embeddings.")):
        C, norms, factor, clipped = run_case(prefix, inp, y)
        tensors[f"{case}/norms"] = norms
        for n, g in clipped.items():
            tensors[f"{case}/{n}"] = g
        info["cases"][case] = {
            "frozen_prefix": prefix,
            "max_gradient_norm": C,
            "norms": norms.tolist(),
            "clip_factors": factor.tolist(),
            "trained": list(clipped),
        }
        print(f"{case}: C={C:.6f} norms={[round(v, 6) for v in norms.tolist()]} "
              f"factors={[round(v, 6) for v in factor.tolist()]} tensors={len(clipped)}")
    info["versions"] = {
        "opacus": version("opacus"), "torch": torch.__version__,
        "transformers": transformers.__version__, "safetensors": version("safetensors"),
    }
    save_file({k: v.detach().to(torch.float32).contiguous() for k, v in tensors.items()},
              os.path.join(HERE, "opacus_tiny.safetensors"))
    with open(os.path.join(HERE, "opacus_tiny.json"), "w") as f:
        json.dump(info, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
