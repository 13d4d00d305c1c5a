"""LoRA reference fixtures from PyTorch + PEFT for Pando's engine tests.

What it makes, under Tests/Fixtures/lora/<case>/ (inputs: Tests/Fixtures/tiny/inputs.json):
  base/                     the tiny BertForSequenceClassification (save_pretrained), no adapters
  adapter/                  PEFT's own save_pretrained of the LoRA model: adapter_config.json and
                            adapter_model.safetensors (A from PEFT's init, B set to nonzero values so
                            the gradient of A is not trivially zero; classifier, and the pooler when it
                            is used, in modules_to_save)
  case.json                 loss, logits, labels, r, alpha, targets, pooling
  grads.safetensors         d loss / d every trainable tensor (adapters, classifier, pooler), computed
                            in float64, stored float32, under Pando's names (PEFT's names without
                            `base_model.model.` and without the adapter name `default`)

Cases: q,v on the pooler head (the last layer runs its first-token pass); all six target kinds on
mean pooling (every row of every layer) and on the pooler head.

Run from the repo root with torch, transformers, safetensors and peft installed:
  python Tests/Fixtures/make_lora_fixtures.py
Deterministic: every random draw comes from torch.manual_seed.
"""

import json
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402
import peft  # noqa: E402
import transformers  # noqa: E402
from peft import LoraConfig, get_peft_model  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_fixtures import (  # noqa: E402
    FIX, compute_loss, make_tiny_model, mean_pool, tensor_inputs, write_json,
)

torch.set_num_threads(1)

ALL_SIX = r".*\.layer\.\d+\.(attention\.self\.(query|key|value)|attention\.output\.dense|intermediate\.dense|output\.dense)"
CASES = [
    # name, target_modules, Pando targets, pooling, r, alpha, seed
    ("qv_pooler", ["query", "value"], ["query", "value"], "pooler", 4, 8, 300),
    ("all_meanpool", ALL_SIX, ["query", "key", "value", "attention-output", "intermediate", "output"], "mean", 3, 12, 301),
    ("all_pooler", ALL_SIX, ["query", "key", "value", "attention-output", "intermediate", "output"], "pooler", 2, 2, 302),
]
LABELS = [0, 2, 1, 2]


def pando_name(name):
    name = name.removeprefix("base_model.model.")
    name = name.replace(".lora_A.default.", ".lora_A.").replace(".lora_B.default.", ".lora_B.")
    return name.replace(".modules_to_save.default.", ".")


def main():
    with open(os.path.join(FIX, "tiny", "inputs.json")) as f:
        inputs = json.load(f)
    inp = tensor_inputs(inputs)
    for name, modules, targets, pooling, r, alpha, seed in CASES:
        d = os.path.join(FIX, "lora", name)
        base = make_tiny_model(3, seed=seed)
        base.save_pretrained(os.path.join(d, "base"), safe_serialization=True)
        torch.manual_seed(seed + 1000)
        config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=0.0, target_modules=modules, task_type="SEQ_CLS",
                            modules_to_save=["classifier"] + (["pooler"] if pooling == "pooler" else []))
        model = get_peft_model(base, config)
        with torch.no_grad():
            for n, p in model.named_parameters():
                if ".lora_B." in n:
                    p.copy_(0.2 * torch.randn_like(p))
        model.eval()
        model.save_pretrained(os.path.join(d, "adapter"), safe_serialization=True)
        readme = os.path.join(d, "adapter", "README.md")  # PEFT's model-card template
        if os.path.exists(readme):
            os.remove(readme)

        model.double()
        model.zero_grad(set_to_none=False)
        bert = model.base_model.model
        if pooling == "pooler":
            logits = bert(**inp).logits
        else:
            hidden = bert.bert(**inp).last_hidden_state
            logits = bert.classifier(mean_pool(hidden, inp["attention_mask"]))
        loss = compute_loss(logits, "softmax", LABELS, None)
        loss.backward()
        grads = {pando_name(n): p.grad for n, p in model.named_parameters() if p.requires_grad}
        save_file({k: v.detach().to(torch.float32).contiguous() for k, v in grads.items()},
                  os.path.join(d, "grads.safetensors"))
        write_json(os.path.join(d, "case.json"), {
            "pooling": pooling, "labels": LABELS, "rank": r, "alpha": alpha, "targets": targets,
            "loss": loss.item(), "logits": logits.tolist(), "trainable": sorted(grads),
        })
        print(name, "loss", loss.item(), "trainable tensors", len(grads))
    write_json(os.path.join(FIX, "lora", "versions.json"), {
        "torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__,
    })


if __name__ == "__main__":
    main()
