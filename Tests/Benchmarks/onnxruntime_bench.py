"""ONNX Runtime reference for `pando bench infer`, same model, shapes and inputs as pytorch_bench.py.

Usage: python onnxruntime_bench.py infer --model DIR [--variant fp32|int8|fp32-fused|int8-fused]
           [--batch-size 64] [--length 128] [--batches N] [--warmup 1] [--threads N]
       python onnxruntime_bench.py agree --model DIR [--batch-size 64] [--length 128] [--data CSV] [--table]
       python onnxruntime_bench.py export --model DIR     (only builds the cached models)
Needs torch, transformers, onnx and onnxruntime (PyPI). Not used by CI.

The models: DIR (a BERT folder, e.g. models/default = all-MiniLM-L6-v2) loaded as
BertForSequenceClassification with 3 labels after torch.manual_seed(0), so the random head is
the one pytorch_bench.py builds; exported with torch.onnx.export (TorchScript exporter, opset 17,
dynamic batch and sequence axes; inputs input_ids, attention_mask, token_type_ids as Optimum
exports BERT; eager attention, because an SDPA export defeats ONNX Runtime's attention fusion).
  fp32        the export as is; the session's ORT_ENABLE_ALL does its own (online) fusions
  int8        onnxruntime.quantization.quantize_dynamic of fp32: QInt8 weights, per channel
              (--per-tensor for one scale per tensor), uint8 activations quantised per batch
  fp32-fused  fp32 through onnxruntime.transformers.optimizer.optimize_model(model_type="bert"),
              the BERT fusions Optimum's ORTOptimizer applies (Attention, EmbedLayerNormalization,
              SkipLayerNormalization, BiasGelu)
  int8-fused  quantize_dynamic of fp32-fused, same settings as int8
They are built once per model, library versions and settings, in a subprocess, under
$PANDO_BENCH_CACHE (default ~/.cache/pando-bench/onnx/), never in the repo.

infer prints one JSON object like pytorch_bench.py's: tokens_per_second (real tokens),
padded_tokens_per_second, sequences_per_second, seconds (timed batches only), peak_rss_mb,
threads, plus variant, the model file and its size, onnxruntime's version and the fusions found
in the graph. The session: CPUExecutionProvider, ORT_ENABLE_ALL, intra_op_num_threads --threads
(default: all cores, as pytorch_bench.py), inter_op 1, sequential. Its inputs are pytorch_bench.py's:
--batches (default 5) batches of random ids in [1000, vocab) from torch.Generator seeded 7, mask
all ones, --warmup untimed batches first. torch is never imported by the timed process (the ids are
made in the subprocess), so peak_rss_mb is ONNX Runtime's own.

agree prints the logits' agreement of every variant with PyTorch float32 on the first such batch
(and, with --data, on the first --batch-size texts of that CSV's --text-column, padded to the
longest): max and mean absolute difference, the largest |logit| for scale, and the share of rows
whose argmax matches. The classifier head is random (models/default has none), so the logits are
small (|logit| < 0.05 here) and often near-tied: argmax agreement understates what a trained head
would show; the differences relative to the largest logit are the figure to read.
"""
import argparse, hashlib, json, os, resource, subprocess, sys, time
from importlib import metadata

VARIANTS = ["fp32", "int8", "fp32-fused", "int8-fused"]
INPUTS = ["input_ids", "attention_mask", "token_type_ids"]
OPSET = 17
FORMAT = 2  # bump when the export or quantisation recipe changes

p = argparse.ArgumentParser()
p.add_argument("mode", choices=["infer", "agree", "export", "_inputs"])
p.add_argument("--model", required=True)
p.add_argument("--variant", choices=VARIANTS, default="fp32")
p.add_argument("--batch-size", type=int, default=64)
p.add_argument("--length", type=int, default=128)
p.add_argument("--batches", type=int)
p.add_argument("--warmup", type=int, default=1)
p.add_argument("--threads", type=int, default=os.cpu_count())
p.add_argument("--per-tensor", action="store_true", help="int8: one weight scale per tensor instead of per output channel")
p.add_argument("--data", help="agree: also compare on the first --batch-size texts of this CSV")
p.add_argument("--text-column", default="text")
p.add_argument("--table", action="store_true", help="agree: print a short table instead of JSON")
a = p.parse_args()
a.model = os.path.abspath(a.model)  # the export step changes folder
if getattr(a, "data", None): a.data = os.path.abspath(a.data)
count = a.batches or 5


def version(name):
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def cache_dir():
    """One folder per model files, library versions and recipe, so a change rebuilds."""
    model = os.path.realpath(a.model)
    files = {f: (s.st_size, s.st_mtime_ns) for f in sorted(os.listdir(model)) if f.endswith((".json", ".safetensors", ".bin"))
             for s in [os.stat(os.path.join(model, f))]}
    key = json.dumps({"model": model, "files": files, "format": FORMAT, "opset": OPSET, "per_channel": not a.per_tensor,
                      **{n: version(n) for n in ("torch", "transformers", "onnx", "onnxruntime")}}, sort_keys=True)
    root = os.environ.get("PANDO_BENCH_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "pando-bench", "onnx")
    name = os.path.basename(os.path.abspath(a.model).rstrip("/"))
    return os.path.join(root, name + "-" + hashlib.sha256(key.encode()).hexdigest()[:12])


def inputs_path():
    return os.path.join(cache_dir(), f"inputs-b{a.batch_size}-l{a.length}-n{count}-seed7.npz")


def log(*args):
    print("onnxruntime_bench:", *args, file=sys.stderr, flush=True)


def load_torch_model(attention=None):
    import torch
    from transformers import BertForSequenceClassification
    torch.manual_seed(0)  # as pytorch_bench.py, so the classifier head is the same
    kw = {"attn_implementation": attention} if attention else {}
    return BertForSequenceClassification.from_pretrained(a.model, num_labels=3, **kw).eval()


def random_batches(vocab_size):
    """pytorch_bench.py's fixed-length inputs, bit for bit."""
    import torch
    g = torch.Generator().manual_seed(7)
    return [(torch.randint(1000, vocab_size, (a.batch_size, a.length), generator=g),
             torch.ones(a.batch_size, a.length, dtype=torch.long)) for _ in range(count)]


def fused_stats(path):
    """Fused operators present in an ONNX graph (what the optimizer or the session produced)."""
    import onnx
    ops = {}
    for n in onnx.load(path, load_external_data=False).graph.node:
        ops[n.op_type] = ops.get(n.op_type, 0) + 1
    fused = ("Attention", "QAttention", "MultiHeadAttention", "EmbedLayerNormalization", "SkipLayerNormalization",
             "LayerNormalization", "BiasGelu", "FastGelu", "Gelu", "FusedMatMul", "QEmbedLayerNormalization", "MatMulInteger",
             "MatMulIntegerToFloat", "DynamicQuantizeMatMul")
    return {k: ops[k] for k in fused if k in ops}


def export():
    """Builds the four variants in the cache folder, unless it is complete."""
    import warnings
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process
    from onnxruntime.transformers.optimizer import optimize_model
    folder = cache_dir()
    os.makedirs(folder, exist_ok=True)
    paths = {v: os.path.join(folder, v + ".onnx") for v in VARIANTS}
    manifest_path = os.path.join(folder, "manifest.json")
    if os.path.exists(manifest_path):  # written last: everything is there
        return
    for x in os.listdir(folder):  # a build that was cut short: start again
        os.remove(os.path.join(folder, x))
    # ORT's quantiser and shape inference drop scratch files (*.data, sym_shape_infer_temp.onnx)
    # in the working folder: keep them in the cache, not in the repository.
    os.chdir(folder)
    manifest = {"model": os.path.realpath(a.model), "opset": OPSET, "per_channel": not a.per_tensor,
                **{n: version(n) for n in ("torch", "transformers", "onnx", "onnxruntime")}, "warnings": []}
    model = load_torch_model("eager")
    cfg = model.config
    if not os.path.exists(paths["fp32"]):
        log("exporting", a.model, "to", paths["fp32"])
        ids = torch.randint(1000, cfg.vocab_size, (2, 16))
        axes = {k: {0: "batch", 1: "sequence"} for k in INPUTS} | {"logits": {0: "batch"}}
        tmp = paths["fp32"] + ".tmp"
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.onnx.export(model, (ids, torch.ones_like(ids), torch.zeros_like(ids)), tmp, input_names=INPUTS,
                              output_names=["logits"], dynamic_axes=axes, opset_version=OPSET, do_constant_folding=True,
                              dynamo=False)
        manifest["warnings"] = sorted({f"{w.category.__name__}: {str(w.message).splitlines()[0][:200]}" for w in caught})
        os.replace(tmp, paths["fp32"])
    if not os.path.exists(paths["fp32-fused"]):
        log("fusing (onnxruntime.transformers.optimizer, model_type=bert)")
        opt = optimize_model(paths["fp32"], model_type="bert", num_heads=cfg.num_attention_heads, hidden_size=cfg.hidden_size)
        manifest["optimizer_fusions"] = {k: v for k, v in opt.get_fused_operator_statistics().items() if v}
        opt.save_model_to_file(paths["fp32-fused"] + ".tmp")
        os.replace(paths["fp32-fused"] + ".tmp", paths["fp32-fused"])
    for src, dst in (("fp32", "int8"), ("fp32-fused", "int8-fused")):
        if not os.path.exists(paths[dst]):
            log("quantize_dynamic", src, "->", dst, "(QInt8 weights, per", "tensor)" if a.per_tensor else "channel)")
            source = paths[src]
            if src == "fp32-fused":
                # The quantiser needs the types of the contrib ops' outputs: ORT's recommended
                # pre-processing, shape inference only (no graph change). The plain export quantises
                # without it (and its symbolic shape inference does not complete on that graph).
                source = paths[dst] + ".pre"
                quant_pre_process(paths[src], source, skip_optimization=True)
            quantize_dynamic(source, paths[dst] + ".tmp", weight_type=QuantType.QInt8, per_channel=not a.per_tensor)
            if source != paths[src]:
                os.remove(source)
            os.replace(paths[dst] + ".tmp", paths[dst])
    manifest["graphs"] = {v: fused_stats(paths[v]) for v in VARIANTS}
    # What the session's own ORT_ENABLE_ALL makes of each file (the graph that actually runs).
    manifest["session_graphs"] = {}
    for v in VARIANTS:
        out = os.path.join(folder, v + ".session.onnx")
        session(paths[v], optimized=out)
        manifest["session_graphs"][v] = fused_stats(out)
        os.remove(out)
    with open(manifest_path + ".tmp", "w") as f:
        json.dump(manifest, f, indent=1)
    os.replace(manifest_path + ".tmp", manifest_path)


def write_inputs():
    import numpy as np
    from transformers import AutoConfig
    batches = random_batches(AutoConfig.from_pretrained(a.model).vocab_size)
    np.savez(inputs_path() + ".tmp.npz", **{f"ids{i}": ids.numpy() for i, (ids, _) in enumerate(batches)},
             **{f"mask{i}": m.numpy() for i, (_, m) in enumerate(batches)})
    os.replace(inputs_path() + ".tmp.npz", inputs_path())


def in_subprocess(mode):
    """Runs torch work in a child, so this process's peak RSS stays ONNX Runtime's."""
    args = [sys.executable, os.path.abspath(__file__), mode, "--model", a.model, "--batch-size", str(a.batch_size),
            "--length", str(a.length)] + (["--batches", str(a.batches)] if a.batches else []) + (["--per-tensor"] if a.per_tensor else [])
    subprocess.run(args, check=True, stdout=sys.stderr)


def session(path, optimized=None):
    import onnxruntime as ort
    so = ort.SessionOptions()
    if optimized:
        so.optimized_model_filepath = optimized
        so.log_severity_level = 3  # not the "hardware specific optimizations" warning
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.intra_op_num_threads = a.threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def feed(ids, mask):
    import numpy as np
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}


if a.mode == "export":
    export()
elif a.mode == "_inputs":
    export()
    write_inputs()
elif a.mode == "infer":
    import numpy as np
    import onnxruntime as ort
    if not os.path.exists(inputs_path()) or not os.path.exists(os.path.join(cache_dir(), "manifest.json")):
        in_subprocess("_inputs")
    path = os.path.join(cache_dir(), a.variant + ".onnx")
    with open(os.path.join(cache_dir(), "manifest.json")) as f:
        manifest = json.load(f)
    with np.load(inputs_path()) as z:
        batches = [(z[f"ids{i}"], z[f"mask{i}"]) for i in range(count)]
    sess = session(path)
    for i in range(a.warmup):
        sess.run(None, feed(*batches[i % len(batches)]))
    start = time.perf_counter()
    for ids, mask in batches:
        sess.run(None, feed(ids, mask))
    seconds = time.perf_counter() - start
    real = sum(int(m.sum()) for _, m in batches)
    padded = sum(m.size for _, m in batches)
    print(json.dumps({
        "kind": "infer", "variant": a.variant, "tokens_per_second": real / seconds, "padded_tokens_per_second": padded / seconds,
        "sequences_per_second": sum(m.shape[0] for _, m in batches) / seconds, "seconds": seconds,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "threads": a.threads,
        "model_file": path, "model_mb": os.path.getsize(path) / 2**20, "graph": manifest["session_graphs"][a.variant],
        "per_channel": manifest["per_channel"], "onnxruntime": ort.__version__, "opset": manifest["opset"]}))
else:  # agree
    import numpy as np
    import torch
    export()
    model = load_torch_model()
    cases = {"random": [(ids.numpy(), mask.numpy()) for ids, mask in random_batches(model.config.vocab_size)[:1]]}
    if a.data:
        import csv
        from transformers import AutoTokenizer
        with open(a.data, newline="", encoding="utf-8") as fh:
            texts = [row[a.text_column] for _, row in zip(range(a.batch_size), csv.DictReader(fh))]
        b = AutoTokenizer.from_pretrained(a.model)(texts, truncation=True, max_length=a.length, padding=True, return_tensors="np")
        cases[os.path.basename(a.data)] = [(b["input_ids"].astype(np.int64), b["attention_mask"].astype(np.int64))]
    torch.set_num_threads(a.threads)
    sessions = {v: session(os.path.join(cache_dir(), v + ".onnx")) for v in VARIANTS}
    report = {"reference": f"PyTorch float32 ({model.config._attn_implementation} attention, as pytorch_bench.py)", "per_channel": not a.per_tensor, "cases": {}}
    for name, [(ids, mask)] in cases.items():
        with torch.inference_mode():
            ref = model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask)).logits.numpy()
        row = {"shape": list(ids.shape), "max_abs_logit": float(np.abs(ref).max())}
        for v, s in sessions.items():
            out = s.run(["logits"], feed(ids, mask))[0]
            d = np.abs(out - ref)
            row[v] = {"max_abs_diff": float(d.max()), "mean_abs_diff": float(d.mean()),
                      "max_abs_diff_relative": float(d.max() / np.abs(ref).max()),
                      "argmax_agreement": float((out.argmax(-1) == ref.argmax(-1)).mean())}
        report["cases"][name] = row
    with open(os.path.join(cache_dir(), "manifest.json")) as f:
        manifest = json.load(f)
    report.update({k: manifest.get(k) for k in ("optimizer_fusions", "graphs", "session_graphs", "warnings", "torch", "transformers", "onnx", "onnxruntime")})
    if not a.table:
        print(json.dumps(report, indent=1))
        sys.exit()
    print(f"logits vs {report['reference']}; onnxruntime {report['onnxruntime']}, torch {report['torch']}, "
          f"int8 weights per {'channel' if report['per_channel'] else 'tensor'}")
    for name, row in report["cases"].items():
        print(f"  {name} {row['shape'][0]}x{row['shape'][1]}, largest |logit| {row['max_abs_logit']:.3g}")
        for v in VARIANTS:
            r = row[v]
            print(f"    ort {v:<11} max |diff| {r['max_abs_diff']:.2e} ({100 * r['max_abs_diff_relative']:5.2f}% of it)  "
                  f"mean {r['mean_abs_diff']:.2e}  argmax agrees {100 * r['argmax_agreement']:5.1f}%")
    for v in VARIANTS:
        print(f"  ort {v:<11} runs " + ", ".join(f"{k} {n}" for k, n in report["session_graphs"][v].items()))
