#!/usr/bin/env python3
"""Baseline: Flower's own SecAgg+ (SecAggPlusWorkflow + secaggplus_mod), one machine.

Standalone benchmark used to compare Pando's secure aggregation against Flower.
It runs the *unmodified* Flower SecAgg+ protocol in Flower's Simulation Runtime
(`flwr.simulation.run_simulation`, Ray backend by default) with N virtual clients,
each uploading one float32 vector of L values as its "model parameters", and
reports per round:

  * wall time of the whole secure-aggregation round (setup -> unmask/aggregate),
  * wall time of each SecAgg+ stage (server side), split into the time the
    ServerApp spent inside `grid.send_and_receive` (push + clients + pull) and
    the server's own compute, plus per-stage ClientApp compute time (measured
    inside the ClientApp by a timing mod that wraps `secaggplus_mod`),
  * bytes per client per stage and direction, *computed* from the message
    payloads (array / bytes / scalar sizes); with --exact-bytes also *measured*
    as the size of Flower's own serialised object tree (`deflate()` of every
    nested InflatableObject of the message content -- what Flower pushes over
    gRPC in deployment mode, minus gRPC/HTTP2/TLS framing and message metadata),
  * peak RSS of the server process (the Python process running ServerApp +
    in-memory SuperLink state + simulation driver), per round (20 ms sampler)
    and lifetime (getrusage), and of the whole process tree (Ray workers),
  * correctness: max / mean abs error of the aggregate Flower returns vs. the
    exact mean of the surviving clients' float32 vectors,
  * `uptime` / load average before and after every round.

Dropouts: the workflow marks `--dropouts` random clients (chosen after the setup
stage, like Flower's examples/flower-secure-aggregation demo). In the
collect-masked-vectors stage those clients either raise inside `fit`
(`--dropout-mode error`: Flower turns this into an error reply, which the
workflow treats as a dropout immediately) or sleep `--drop-sleep` seconds
(`--dropout-mode timeout`: only treated as a dropout if the workflow has a
`--timeout`; with Flower's default `timeout=None` the server simply waits for
the late reply and the client is NOT dropped).

Flower's protocol code is not modified. The benchmark only (a) subclasses
SecAggPlusWorkflow to time each stage and flag the dropouts, (b) wraps the
Grid's send_and_receive to time it and size messages, (c) puts a timing mod in
front of secaggplus_mod in the ClientApp, and (d) optionally (--backend
inprocess) replaces the simulation backend with a single-process Backend that
calls the same ClientApp in a worker thread (each message deep-copied, as
pickling/gRPC would), without Ray.

Notes for reading the numbers:
  * with the Ray backend, round 1's setup stage includes starting the Ray
    actor(s) (~8-10 s here); use --rounds 2+ and read the later rounds for the
    steady-state figure.
  * Flower's aggregate comes back as float64, so from round 2 on the global
    model sent to clients is 8 B/value (round 1: the float32 initial zeros).
  * --exact-bytes counts unique content-addressed objects; an all-zero initial
    model is de-duplicated chunk-wise, so round-1 "serialized down" is small.
  * --timeout applies to every stage, including round 1's Ray start-up.

Example:
  nice -n 10 /root/.cache/pando-bench/venv/bin/python \
      Tests/Benchmarks/flower_secagg_bench.py --clients 10 --values 1000000 \
      --dropouts 3 --json-out /tmp/flower_secagg_1M.json
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import os
import platform
import random
import resource
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

import numpy as np

# --------------------------------------------------------------------------- #
# CLI
# --------------------------------------------------------------------------- #


def _int_or_float(text: str) -> int | float:
    """Flower semantics: int = absolute count, float = proportion."""
    return float(text) if any(c in text for c in ".eE") else int(text)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--clients", type=int, default=10, help="N (default 10)")
    p.add_argument(
        "--values",
        type=int,
        default=10_800_000,
        help="float32 values per client update (default 10_800_000 = Pando MiniLM)",
    )
    p.add_argument(
        "--dropouts",
        type=int,
        default=3,
        help="clients that drop out after share-keys, before uploading (default 3)",
    )
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument(
        "--num-shares",
        type=_int_or_float,
        default=None,
        help="SecAggPlusWorkflow num_shares (default: N = complete graph)",
    )
    p.add_argument(
        "--reconstruction-threshold",
        type=_int_or_float,
        default=None,
        help="SecAggPlusWorkflow reconstruction_threshold "
        "(default: floor((N-1)/2)+1, Pando's majority default)",
    )
    p.add_argument(
        "--clipping-range", type=float, default=8.0, help="Flower default 8.0"
    )
    p.add_argument(
        "--quantization-range",
        type=int,
        default=2**22,
        help="Flower default 4194304 (2**22)",
    )
    p.add_argument(
        "--modulus-range", type=int, default=2**32, help="Flower default 2**32"
    )
    p.add_argument(
        "--max-weight",
        type=float,
        default=1.0,
        help="SecAggPlusWorkflow max_weight. Every client reports num_examples=1, "
        "so 1.0 (as in Flower's demo) keeps full quantization precision; "
        "Flower's default 1000.0 would scale updates by 1e-3 before quantization.",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=None,
        help="SecAggPlusWorkflow timeout in s (Flower default: None = wait forever)",
    )
    p.add_argument(
        "--dropout-mode",
        choices=("error", "timeout"),
        default="error",
        help="error: dropped client raises in fit (error reply); "
        "timeout: it sleeps --drop-sleep s (needs --timeout to count as dropped)",
    )
    p.add_argument("--drop-sleep", type=float, default=30.0)
    p.add_argument(
        "--backend",
        choices=("ray", "inprocess"),
        default="ray",
        help="ray: Flower's Simulation Runtime Ray backend (flwr[simulation]); "
        "inprocess: same runtime, clients run in this process (no Ray)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        help="concurrent ClientApp workers (Ray actors / CPUs given to Ray); "
        "default 1 to keep the shared machine quiet",
    )
    p.add_argument(
        "--exact-bytes",
        action="store_true",
        help="also measure bytes as Flower's serialised object tree "
        "(adds CPU time and memory: do not read peak RSS from such a run)",
    )
    p.add_argument("--value-std", type=float, default=0.05,
                   help="client vectors ~ N(0, std^2), float32")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json-out", default=None, help="write the full result here")
    p.add_argument("--verbose", action="store_true", help="Flower DEBUG logs")
    a = p.parse_args(argv)
    n = a.clients
    if a.num_shares is None:
        a.num_shares = n
    if a.reconstruction_threshold is None:
        a.reconstruction_threshold = (n - 1) // 2 + 1
    if not 0 <= a.dropouts < n:
        p.error("--dropouts must be in [0, clients)")
    return a


ARGS = parse_args()

# Quieter Ray / Flower start-up; must happen before importing flwr / ray.
os.environ.setdefault("RAY_DEDUP_LOGS", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")

import flwr  # noqa: E402
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict  # noqa: E402,F401
from flwr.client import ClientApp, NumPyClient  # noqa: E402
from flwr.client.mod import secaggplus_mod  # noqa: E402
from flwr.common import ndarrays_to_parameters  # noqa: E402
from flwr.common.secure_aggregation.secaggplus_constants import (  # noqa: E402
    RECORD_KEY_CONFIGS,
    Key,
    Stage,
)
from flwr.server import LegacyContext, ServerApp, ServerConfig  # noqa: E402
from flwr.server.strategy import FedAvg  # noqa: E402
from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow  # noqa: E402
from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD  # noqa: E402
from flwr.server.workflow.constant import Key as WorkflowKey  # noqa: E402
from flwr.simulation import run_simulation  # noqa: E402

try:
    import psutil  # noqa: E402
except ImportError:  # pragma: no cover
    psutil = None

# --------------------------------------------------------------------------- #
# Helpers: load, RSS, sizes
# --------------------------------------------------------------------------- #


def uptime() -> str:
    try:
        return subprocess.run(
            ["uptime"], capture_output=True, text=True, check=False
        ).stdout.strip()
    except OSError:
        return "loadavg %.2f %.2f %.2f" % os.getloadavg()


def load_snapshot() -> dict[str, Any]:
    return {"utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "uptime": uptime(), "loadavg": list(os.getloadavg())}


_PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_self() -> int:
    with open("/proc/self/statm", "rb") as f:
        return int(f.read().split()[1]) * _PAGE


def rss_tree() -> int:
    if psutil is None:
        return rss_self()
    me = psutil.Process()
    total = me.memory_info().rss
    for ch in me.children(recursive=True):
        try:
            total += ch.memory_info().rss
        except psutil.Error:
            pass
    return total


def cpu_tree() -> float:
    """user+sys CPU seconds of this process and all live descendants."""
    if psutil is None:
        t = os.times()
        return t.user + t.system
    me = psutil.Process()
    c = me.cpu_times()
    total = c.user + c.system
    for ch in me.children(recursive=True):
        try:
            cc = ch.cpu_times()
            total += cc.user + cc.system
        except psutil.Error:
            pass
    return total


class RssSampler:
    """Peak RSS of this process (fine-grained) and of the process tree."""

    def __init__(self, period: float = 0.02, tree_every: int = 10) -> None:
        self.period, self.tree_every = period, tree_every
        self.peak_self = 0
        self.peak_tree = 0
        self._stop = threading.Event()
        self._th = threading.Thread(target=self._run, daemon=True)
        self._th.start()

    def reset(self) -> None:
        self.peak_self = rss_self()
        self.peak_tree = rss_tree()

    def _run(self) -> None:
        i = 0
        while not self._stop.is_set():
            self.peak_self = max(self.peak_self, rss_self())
            if i % self.tree_every == 0:
                try:
                    self.peak_tree = max(self.peak_tree, rss_tree())
                except Exception:  # noqa: BLE001
                    pass
            i += 1
            time.sleep(self.period)

    def stop(self) -> None:
        self._stop.set()


def _value_bytes(v: Any) -> int:
    if isinstance(v, (bytes, bytearray)):
        return len(v)
    if isinstance(v, str):
        return len(v.encode())
    if isinstance(v, bool):
        return 1
    if isinstance(v, (int, float)):
        return 8
    if isinstance(v, (list, tuple)):
        return sum(_value_bytes(x) for x in v)
    return 0


def payload_bytes(content: RecordDict) -> int:
    """Computed payload of a RecordDict: array data + record values + keys."""
    total = 0
    for name, rec in content.array_records.items():
        total += len(name)
        for k, arr in rec.items():
            total += len(k) + len(arr.data) + len(arr.dtype) + 8 * len(arr.shape)
    for recs in (content.config_records, content.metric_records):
        for name, rec in recs.items():
            total += len(name)
            for k, v in rec.items():
                total += len(k) + _value_bytes(v)
    return total


def serialized_bytes(content: RecordDict) -> int:
    """Flower's own wire objects: sum of deflate() over the unique object tree."""
    from flwr.supercore.inflatable.inflatable_object import get_all_nested_objects

    objs = get_all_nested_objects(content)
    total = sum(len(o.deflate()) for o in objs.values())
    for o in objs.values():
        # Array.deflate() caches memoryview chunks, which cannot be pickled
        # (Ray) or deep-copied; drop the cache so metering has no side effects.
        o.__dict__.pop("_chunks", None)
    return total


def mb(x: float) -> float:
    return round(x / 1e6, 3)


def fmt_b(x: float) -> str:
    if x >= 1e6:
        return f"{x / 1e6:.3f} MB"
    if x >= 1e3:
        return f"{x / 1e3:.2f} kB"
    return f"{x:.0f} B"


# --------------------------------------------------------------------------- #
# Shared run-time records (the ServerApp runs in a thread of this process)
# --------------------------------------------------------------------------- #

RUN_DIR = tempfile.mkdtemp(prefix="flower_secagg_bench_")
CLIENT_LOG = os.path.join(RUN_DIR, "client_stage_times.jsonl")
ROUND_RESULTS: list[dict[str, Any]] = []
CURRENT: dict[str, Any] = {"stage": None, "round": None}
SAMPLER: RssSampler | None = None

L = ARGS.values
STD = ARGS.value_std
SEED = ARGS.seed
DROP_MODE = ARGS.dropout_mode
DROP_SLEEP = ARGS.drop_sleep


def client_vector(pid: int, rnd: int) -> np.ndarray:
    """Deterministic stand-in for a client's model update (float32, length L)."""
    rng = np.random.default_rng([SEED, pid, rnd])
    vec = rng.standard_normal(L, dtype=np.float32)
    vec *= np.float32(STD)
    return vec


# --------------------------------------------------------------------------- #
# ClientApp: NumPyClient + timing mod + Flower's secaggplus_mod
# --------------------------------------------------------------------------- #


class BenchClient(NumPyClient):
    def __init__(self, pid: int) -> None:
        self.pid = pid

    def fit(self, parameters, config):  # type: ignore[override]
        rnd = int(config.get("round", 1))
        if config.get("drop", False):
            if DROP_MODE == "error":
                raise RuntimeError(f"simulated dropout of client {self.pid}")
            time.sleep(DROP_SLEEP)
        return [client_vector(self.pid, rnd)], 1, {"pid": self.pid}


def client_fn(context: Context):
    return BenchClient(int(context.node_config["partition-id"])).to_client()


def timing_mod(msg: Message, ctxt: Context, call_next):
    """Outer mod: time what secaggplus_mod (+ fit) does per stage in the client."""
    stage = None
    try:
        stage = msg.content.config_records[RECORD_KEY_CONFIGS][Key.STAGE]
    except Exception:  # noqa: BLE001
        pass
    t0 = time.perf_counter()
    c0 = time.process_time()
    err = None
    try:
        return call_next(msg, ctxt)
    except Exception as ex:  # noqa: BLE001
        err = repr(ex)
        raise
    finally:
        rec = {
            "pid": int(ctxt.node_config.get("partition-id", -1)),
            "stage": stage,
            "round": msg.metadata.group_id,
            "wall_s": time.perf_counter() - t0,
            "cpu_s": time.process_time() - c0,
            "proc_maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
            "os_pid": os.getpid(),
            "error": err,
        }
        with open(CLIENT_LOG, "a", encoding="utf-8") as f:
            f.write(json.dumps(rec) + "\n")


client_app = ClientApp(client_fn=client_fn, mods=[timing_mod, secaggplus_mod])

# --------------------------------------------------------------------------- #
# ServerApp: SecAggPlusWorkflow subclass that only adds timers / dropout marks
# --------------------------------------------------------------------------- #


def metered_grid(grid):
    """Wrap grid.send_and_receive: time it and size every message per stage."""
    orig = grid.send_and_receive

    def send_and_receive(messages, *, timeout=None):
        messages = list(messages)
        st = CURRENT["stats"]["stages"][CURRENT["stage"]]
        t_meter = time.perf_counter()
        for m in messages:
            d = st["down"].setdefault(m.metadata.dst_node_id, {})
            d["computed"] = payload_bytes(m.content)
            if ARGS.exact_bytes:
                d["serialized"] = serialized_bytes(m.content)
        meter_s = time.perf_counter() - t_meter
        t0 = time.perf_counter()
        replies = list(orig(messages, timeout=timeout))
        st["send_and_receive_s"] += time.perf_counter() - t0
        t_meter = time.perf_counter()
        for r in replies:
            u = st["up"].setdefault(r.metadata.src_node_id, {})
            if r.has_error():
                u["error"] = r.error.reason[:200]
                continue
            u["computed"] = payload_bytes(r.content)
            if ARGS.exact_bytes:
                u["serialized"] = serialized_bytes(r.content)
        meter_s += time.perf_counter() - t_meter
        st["metering_s"] += meter_s
        st["replies"] = len(replies)
        st["replies_with_error"] = sum(1 for r in replies if r.has_error())
        st["messages_sent"] = len(messages)
        return replies

    grid.send_and_receive = send_and_receive
    return grid


STAGE_NAMES = (Stage.SETUP, Stage.SHARE_KEYS, Stage.COLLECT_MASKED_VECTORS, Stage.UNMASK)


class BenchSecAggPlusWorkflow(SecAggPlusWorkflow):
    """Flower's SecAggPlusWorkflow; overrides only wrap super() with timers."""

    def __init__(self, *a, n_drop: int, drop_seed: int, **kw) -> None:
        super().__init__(*a, **kw)
        self.n_drop = n_drop
        self.rng = random.Random(drop_seed)

    def _timed(self, stage: str, fn, grid, context, state) -> bool:
        CURRENT["stage"] = stage
        CURRENT["stats"]["stages"][stage] = {
            "wall_s": 0.0, "send_and_receive_s": 0.0, "metering_s": 0.0,
            "down": {}, "up": {}, "active_after": None,
            "rss_before_mb": mb(rss_self()),
        }
        t0 = time.perf_counter()
        ok = fn(grid, context, state)
        st = CURRENT["stats"]["stages"][stage]
        st["wall_s"] = time.perf_counter() - t0
        st["ok"] = bool(ok)
        st["active_after"] = len(state.active_node_ids)
        st["rss_after_mb"] = mb(rss_self())
        return ok

    def setup_stage(self, grid, context, state):  # type: ignore[override]
        ok = self._timed(Stage.SETUP, super().setup_stage, grid, context, state)
        CURRENT["stats"]["num_shares"] = state.num_shares
        CURRENT["stats"]["threshold"] = state.threshold
        CURRENT["stats"]["sampled"] = len(state.sampled_node_ids)
        if ok and self.n_drop:
            # Same mechanism as Flower's secure-aggregation demo: flag the
            # FitIns of the chosen clients; they fail in the masked-vector stage.
            drop = self.rng.sample(sorted(state.nid_to_fitins), self.n_drop)
            for nid in drop:
                state.nid_to_fitins[nid].config_records["fitins.config"]["drop"] = True
            CURRENT["stats"]["marked_dropouts"] = len(drop)
        return ok

    def share_keys_stage(self, grid, context, state):  # type: ignore[override]
        return self._timed(Stage.SHARE_KEYS, super().share_keys_stage, grid, context, state)

    def collect_masked_vectors_stage(self, grid, context, state):  # type: ignore[override]
        ok = self._timed(Stage.COLLECT_MASKED_VECTORS,
                         super().collect_masked_vectors_stage, grid, context, state)
        CURRENT["stats"]["surviving_pids"] = sorted(
            int(fr.metrics["pid"]) for _, fr in state.legacy_results
        )
        CURRENT["stats"]["dropped_in_protocol"] = len(
            state.sampled_node_ids - state.active_node_ids
        )
        return ok

    def unmask_stage(self, grid, context, state):  # type: ignore[override]
        return self._timed(Stage.UNMASK, super().unmask_stage, grid, context, state)

    def __call__(self, grid, context) -> None:  # one fit round
        rnd = int(context.state.config_records[MAIN_CONFIGS_RECORD][WorkflowKey.CURRENT_ROUND])
        stats: dict[str, Any] = {"round": rnd, "stages": {},
                                 "load_before": load_snapshot()}
        CURRENT["stats"], CURRENT["round"] = stats, rnd
        if SAMPLER:
            SAMPLER.reset()
        ru0 = resource.getrusage(resource.RUSAGE_SELF)
        cpu0_tree = cpu_tree()
        t0 = time.perf_counter()
        super().__call__(grid, context)
        stats["round_wall_s"] = time.perf_counter() - t0
        ru1 = resource.getrusage(resource.RUSAGE_SELF)
        stats["server_proc_cpu_s"] = (ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime)
        stats["tree_cpu_s"] = cpu_tree() - cpu0_tree
        stats["load_after"] = load_snapshot()
        if SAMPLER:
            stats["peak_rss_server_mb"] = mb(SAMPLER.peak_self)
            stats["peak_rss_tree_mb"] = mb(SAMPLER.peak_tree)
        stats["maxrss_server_lifetime_mb"] = mb(ru1.ru_maxrss * 1024)
        stats["completed"] = all(s.get("ok") for s in stats["stages"].values()) and \
            len(stats["stages"]) == 4
        if stats["completed"]:
            stats["correctness"] = check_aggregate(context, rnd, stats["surviving_pids"])
        ROUND_RESULTS.append(stats)
        print_round(stats)


def check_aggregate(context, rnd: int, pids: list[int]) -> dict[str, Any]:
    got_list = context.state.array_records[MAIN_PARAMS_RECORD].to_numpy_ndarrays()
    got = got_list[0].reshape(-1)
    exp = np.zeros(L, dtype=np.float64)
    for pid in pids:
        exp += client_vector(pid, rnd)
    exp /= len(pids)
    err = np.abs(got.astype(np.float64) - exp)
    step = 2 * ARGS.clipping_range / ARGS.quantization_range
    return {
        "aggregate": "mean of surviving clients (FedAvg, num_examples=1 each)",
        "n_averaged": len(pids),
        "dtype_returned": str(got.dtype),
        "max_abs_err": float(err.max()),
        "mean_abs_err": float(err.mean()),
        "max_abs_err_of_sum": float(err.max() * len(pids)),
        "quantization_step": step,
        "max_abs_err_in_steps": float(err.max() / step),
        "expected_abs_mean": float(np.abs(exp).mean()),
    }


def server_main(grid, context: Context) -> None:
    n = ARGS.clients
    init = ndarrays_to_parameters([np.zeros(L, dtype=np.float32)])
    strategy = FedAvg(
        fraction_fit=1.0,
        fraction_evaluate=0.0,
        min_fit_clients=n,
        min_available_clients=n,
        initial_parameters=init,
        on_fit_config_fn=lambda r: {"round": r},
    )
    lctx = LegacyContext(context=context, config=ServerConfig(num_rounds=ARGS.rounds),
                         strategy=strategy)
    fit_wf = BenchSecAggPlusWorkflow(
        num_shares=ARGS.num_shares,
        reconstruction_threshold=ARGS.reconstruction_threshold,
        max_weight=ARGS.max_weight,
        clipping_range=ARGS.clipping_range,
        quantization_range=ARGS.quantization_range,
        modulus_range=ARGS.modulus_range,
        timeout=ARGS.timeout,
        n_drop=ARGS.dropouts,
        drop_seed=ARGS.seed,
    )
    DefaultWorkflow(fit_workflow=fit_wf)(metered_grid(grid), lctx)


server_app = ServerApp()
server_app.main()(server_main)

# --------------------------------------------------------------------------- #
# Optional single-process backend (same Simulation Runtime, no Ray)
# --------------------------------------------------------------------------- #


def install_inprocess_backend() -> None:
    import types

    from flwr.clientapp.client_app import ClientAppException
    from flwr.server.superlink.fleet.vce.backend import Backend

    class InProcessBackend(Backend):
        def __init__(self, backend_config) -> None:  # noqa: D401
            super().__init__(backend_config)
            self.app_fn = None

        def build(self, app_fn) -> None:
            self.app_fn = app_fn

        @property
        def num_workers(self) -> int:
            return ARGS.workers

        def is_worker_idle(self) -> bool:
            return True

        def terminate(self) -> None:
            pass

        def process_message(self, message, context):
            # Flower reuses one RecordDict for several outgoing messages and
            # secaggplus_mod mutates its input; with Ray (pickling) or gRPC each
            # client gets its own copy, so emulate that here.
            message = copy.deepcopy(message)
            try:
                out = self.app_fn()(message=message, context=context)
            except Exception as ex:  # same wrapping as Flower's ClientAppActor
                raise ClientAppException(str(ex)) from ex
            return out, context

    modname = "flwr.server.superlink.fleet.vce.backend.raybackend"
    try:
        import importlib

        mod = importlib.import_module(modname)
    except ImportError:
        mod = types.ModuleType(modname)
        sys.modules[modname] = mod
    mod.RayBackend = InProcessBackend  # start_vce imports this name lazily


# --------------------------------------------------------------------------- #
# Reporting
# --------------------------------------------------------------------------- #


def _client_stage_times(rnd: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if not os.path.exists(CLIENT_LOG):
        return out
    with open(CLIENT_LOG, encoding="utf-8") as f:
        recs = [json.loads(x) for x in f if x.strip()]
    for r in recs:
        if str(r["round"]) != str(rnd) or r["stage"] is None:
            continue
        s = out.setdefault(r["stage"], {"n": 0, "wall_sum_s": 0.0, "wall_max_s": 0.0,
                                        "cpu_sum_s": 0.0, "errors": 0,
                                        "client_proc_maxrss_mb": 0.0})
        s["n"] += 1
        s["wall_sum_s"] += r["wall_s"]
        s["wall_max_s"] = max(s["wall_max_s"], r["wall_s"])
        s["cpu_sum_s"] += r["cpu_s"]
        s["errors"] += 1 if r["error"] else 0
        s["client_proc_maxrss_mb"] = max(s["client_proc_maxrss_mb"],
                                         r["proc_maxrss_kb"] / 1e3)
    return out


def summarize_bytes(stage_stats: dict[str, Any]) -> dict[str, Any]:
    res: dict[str, Any] = {}
    for direction in ("down", "up"):
        per = [v for v in stage_stats[direction].values() if "computed" in v]
        if not per:
            res[direction] = None
            continue
        c = [v["computed"] for v in per]
        d = {"clients": len(per), "computed_mean_B": float(np.mean(c)),
             "computed_max_B": int(max(c))}
        if ARGS.exact_bytes:
            s = [v["serialized"] for v in per]
            d["serialized_mean_B"] = float(np.mean(s))
            d["serialized_max_B"] = int(max(s))
        res[direction] = d
    return res


def print_round(stats: dict[str, Any]) -> None:
    rnd = stats["round"]
    stats["client_stage_times"] = _client_stage_times(rnd)
    total_up = total_down = 0.0
    total_up_ser = total_down_ser = 0.0
    stats["bytes"] = {}
    for stage in STAGE_NAMES:
        if stage not in stats["stages"]:
            continue
        b = summarize_bytes(stats["stages"][stage])
        stats["bytes"][stage] = b
        if b["down"]:
            total_down += b["down"]["computed_mean_B"]
            total_down_ser += b["down"].get("serialized_mean_B", 0.0)
        if b["up"]:
            total_up += b["up"]["computed_mean_B"]
            total_up_ser += b["up"].get("serialized_mean_B", 0.0)
    stats["bytes_per_client_total"] = {
        "computed_up_B": total_up, "computed_down_B": total_down,
        **({"serialized_up_B": total_up_ser, "serialized_down_B": total_down_ser}
           if ARGS.exact_bytes else {}),
        "note": "mean over clients that answered the stage; uploads of dropped "
                "clients in the masked-vector stage are 0",
    }
    print("\n" + "=" * 78, flush=True)
    print(f"ROUND {rnd}: N={ARGS.clients} L={L:,} dropouts={ARGS.dropouts} "
          f"({DROP_MODE}) shares={stats.get('num_shares')} t={stats.get('threshold')} "
          f"backend={ARGS.backend}")
    print(f"  load before: {stats['load_before']['uptime']}")
    print(f"  load after : {stats['load_after']['uptime']}")
    print(f"  round wall : {stats['round_wall_s']:.2f} s   completed={stats['completed']}"
          f"   server-proc CPU {stats['server_proc_cpu_s']:.1f} s, "
          f"tree CPU {stats['tree_cpu_s']:.1f} s")
    for stage in STAGE_NAMES:
        st = stats["stages"].get(stage)
        if not st:
            continue
        cs = stats["client_stage_times"].get(stage, {})
        b = stats["bytes"][stage]
        meter = st["metering_s"]
        print(f"  [{stage:23s}] wall {st['wall_s'] - meter:8.2f} s "
              f"(send_and_receive {st['send_and_receive_s']:7.2f} s, server compute "
              f"{st['wall_s'] - st['send_and_receive_s'] - meter:6.2f} s, "
              f"metering excl. {meter:.2f} s) active_after={st['active_after']}")
        if cs:
            print(f"      clients: {cs['n']} calls, sum wall {cs['wall_sum_s']:.2f} s, "
                  f"max {cs['wall_max_s']:.2f} s, errors {cs['errors']}")
        for direction in ("down", "up"):
            if b[direction]:
                x = b[direction]
                ser = (f", serialized {fmt_b(x['serialized_mean_B'])}"
                       if "serialized_mean_B" in x else "")
                print(f"      {direction:4s} per client: computed "
                      f"{fmt_b(x['computed_mean_B'])}{ser} ({x['clients']} clients)")
    t = stats["bytes_per_client_total"]
    print(f"  per client total: up {fmt_b(t['computed_up_B'])}, "
          f"down {fmt_b(t['computed_down_B'])} (computed)"
          + (f"; serialized up {fmt_b(t['serialized_up_B'])}, down "
             f"{fmt_b(t['serialized_down_B'])}" if ARGS.exact_bytes else ""))
    print(f"  peak RSS server process: {stats.get('peak_rss_server_mb')} MB (round, "
          f"20 ms sampler); lifetime ru_maxrss {stats['maxrss_server_lifetime_mb']} MB; "
          f"process tree peak {stats.get('peak_rss_tree_mb')} MB")
    if "correctness" in stats:
        c = stats["correctness"]
        print(f"  correctness: mean of {c['n_averaged']} survivors, max abs err "
              f"{c['max_abs_err']:.3e} ({c['max_abs_err_in_steps']:.2f} quant. steps of "
              f"{c['quantization_step']:.3e}), mean abs err {c['mean_abs_err']:.3e}")
    print("=" * 78, flush=True)


def main() -> int:
    global SAMPLER
    if not ARGS.verbose:
        logging.getLogger("flwr").setLevel(logging.INFO)
    if ARGS.backend == "inprocess":
        install_inprocess_backend()
    start = load_snapshot()
    print(f"flwr {flwr.__version__}, numpy {np.__version__}, python "
          f"{platform.python_version()}, backend {ARGS.backend}, workers {ARGS.workers}")
    print(f"start: {start['uptime']}")
    SAMPLER = RssSampler()
    backend_config = {
        "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
        "init_args": {"num_cpus": ARGS.workers, "include_dashboard": False},
    }
    t0 = time.perf_counter()
    err = None
    try:
        run_simulation(
            server_app=server_app,
            client_app=client_app,
            num_supernodes=ARGS.clients,
            backend_name="ray",
            backend_config=backend_config,
            verbose_logging=ARGS.verbose,
        )
    except BaseException as ex:  # noqa: BLE001
        err = repr(ex)
        print(f"run_simulation raised: {err}", file=sys.stderr)
    total = time.perf_counter() - t0
    SAMPLER.stop()
    result = {
        "flwr_version": flwr.__version__,
        "numpy_version": np.__version__,
        "python": platform.python_version(),
        "cpu": platform.processor() or platform.machine(),
        "nproc": os.cpu_count(),
        "args": {k: v for k, v in vars(ARGS).items()},
        "start": start,
        "end": load_snapshot(),
        "total_wall_s_incl_startup": total,
        "server_lifetime_maxrss_mb": mb(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024),
        "error": err,
        "rounds": ROUND_RESULTS,
    }
    for r in result["rounds"]:  # drop per-node byte dicts from the JSON (large)
        for st in r["stages"].values():
            st["down"] = {str(k): v for k, v in st["down"].items()}
            st["up"] = {str(k): v for k, v in st["up"].items()}
    print(f"total wall incl. start-up: {total:.1f} s; end: {result['end']['uptime']}")
    if ARGS.json_out:
        with open(ARGS.json_out, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=1, default=str)
        print(f"wrote {ARGS.json_out}")
    ok = err is None and ROUND_RESULTS and all(r["completed"] for r in ROUND_RESULTS)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
