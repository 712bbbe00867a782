"""Per-layer profiles from each backend's own profiler, mapped onto the thesis's operation
categories (conv, gemm, pool, elementwise, memory, other; ``fused`` where a backend fused
several ops into one kernel and says which).

Profiling is a separate pass from timing: the harness first times the same runner and
batch unprofiled, and the profile keeps the ratio of summed layer time to that whole-run
time (the profiler's own cost, and what the layers miss). A profile becomes one tidy
table, a list of flat rows; every analysis below is a pure function over it.
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cnn_deploy.arch import NetSpec
from cnn_deploy.backends.base import LayerTime
from cnn_deploy.bench import Row, Target, TimingConfig
from cnn_deploy.errors import BenchError

CATEGORIES = ("conv", "gemm", "pool", "elementwise", "memory", "other")
# What the unprofiled reference run is timed with: short, but warm and repeated.
PROFILE_TIMING = TimingConfig(warmup_ms=100.0, min_duration_ms=500.0, min_iterations=5)
DEFAULT_RUNS = 10

# ONNX op types, ORT contrib ops and aten ops (without the "aten::" prefix), by category.
_OPS = {
    "conv": ("Conv", "ConvTranspose", "NchwcConv", "conv2d", "convolution", "_convolution",
             "mkldnn_convolution", "conv"),
    "gemm": ("Gemm", "MatMul", "FusedMatMul", "linear", "addmm", "matmul", "mm", "bmm"),
    "pool": ("MaxPool", "AveragePool", "GlobalAveragePool", "NchwcMaxPool", "max_pool2d",
             "max_pool2d_with_indices", "avg_pool2d", "adaptive_avg_pool2d"),
    "elementwise": ("Relu", "Add", "Mul", "Sub", "Div", "Sigmoid", "Tanh", "Clip",
                    "relu", "relu_", "clamp_min", "add", "mul", "sub", "div", "sigmoid",
                    "tanh", "activation"),
    "memory": ("Reshape", "Flatten", "Transpose", "Identity", "Squeeze", "Unsqueeze",
               "ReorderInput", "ReorderOutput", "Cast", "MemcpyToHost", "MemcpyFromHost",
               "flatten", "view", "reshape", "_unsafe_view", "clone", "copy_", "contiguous",
               "to", "_to_copy", "empty", "empty_like", "t", "transpose", "permute"),
}
_CATEGORY_OF = {op: cat for cat, ops in _OPS.items() for op in ops}


def op_category(op: str) -> str:
    """An ONNX / ORT op type or an aten op -> its category ('other' when unknown)."""
    return _CATEGORY_OF.get(op.removeprefix("aten::"), "other")


Categoriser = Callable[[LayerTime], tuple[str, tuple[str, ...]]]


def categorise(layer: LayerTime) -> tuple[str, tuple[str, ...]]:
    """An ORT / torch layer's category and, for a fused layer, its constituents' categories."""
    if layer.constituents:
        return "fused", tuple(op_category(c) for c in layer.constituents)
    return op_category(layer.op), ()


def categorise_trt(layer: LayerTime) -> tuple[str, tuple[str, ...]]:
    """A TensorRT layer: its name and the ONNX nodes fused into it decide (profile_trt)."""
    from cnn_deploy.profile_trt import category_of_trt_layer

    return category_of_trt_layer(layer.layer, layer.op, onnx_layers=layer.constituents)


# -- the tidy table --------------------------------------------------------------
def layer_table(layers: Sequence[LayerTime], batch: int, spec: NetSpec | None = None,
                categoriser: Categoriser = categorise) -> list[dict[str, Any]]:
    """One row per profiler layer: median time over runs, share, and (when the spec is
    known) the FLOPs and bytes of the arch.py layers it covers, matched in order."""
    runs = sorted({t.run for t in layers})
    grouped: dict[str, list[LayerTime]] = {}
    for t in layers:
        grouped.setdefault(t.layer, []).append(t)
    costs = spec.layer_costs() if spec is not None else []
    position = 0
    rows: list[dict[str, Any]] = []
    for name, times in grouped.items():
        first = times[0]
        category, parts = categoriser(first)
        per_run = {t.run: 0.0 for t in times}
        for t in times:
            per_run[t.run] += t.time_ms
        samples = [per_run.get(r, 0.0) for r in runs]
        matched, position = _match(costs, position, parts or (category,))
        flops = sum(c.flops for c in matched) * batch if matched else None
        nbytes = sum(c.bytes for c in matched) * batch if matched else None
        median = statistics.median(samples) if samples else 0.0
        rows.append({
            "layer": name, "op": first.op, "category": category,
            "constituents": "+".join(parts), "fused_ops": "+".join(first.constituents),
            "arch_layers": "+".join(c.layer for c in matched),
            "time_ms": median, "time_ms_runs": samples, "share": 0.0,
            "flops": flops, "bytes": nbytes,
            "gflops_per_s": flops / median / 1e6 if flops and median > 0 else None,
        })
    total = sum(r["time_ms"] for r in rows)
    for r in rows:
        r["share"] = r["time_ms"] / total if total > 0 else 0.0
    return rows


def _match(costs: Sequence[Any], position: int,
           categories: Sequence[str]) -> tuple[list[Any], int]:
    """The next arch layers, in order, whose categories are ``categories``; none on mismatch
    (a reshape, say, has no arch.py layer and leaves the position where it was)."""
    want = list(categories)
    got = list(costs[position:position + len(want)])
    if [c.category for c in got] == want:
        return got, position + len(want)
    return [], position


def category_key(row: dict[str, Any]) -> str:
    """'conv', 'gemm', ... or 'fused:conv+elementwise' for a fused layer."""
    return f"fused:{row['constituents']}" if row["category"] == "fused" else row["category"]


def category_totals(table: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per category: median time (sum of its layers' medians), share, FLOPs, GFLOP/s."""
    totals: dict[str, dict[str, Any]] = {}
    for r in table:
        t = totals.setdefault(category_key(r), {"category": category_key(r), "layers": 0,
                                                "time_ms": 0.0, "flops": 0})
        t["layers"] += 1
        t["time_ms"] += r["time_ms"]
        t["flops"] += r["flops"] or 0
    grand = sum(t["time_ms"] for t in totals.values())
    out = sorted(totals.values(), key=lambda t: -t["time_ms"])
    for t in out:
        t["share"] = t["time_ms"] / grand if grand > 0 else 0.0
        t["gflops_per_s"] = t["flops"] / t["time_ms"] / 1e6 if t["flops"] and t["time_ms"] else None
    return out


def categorised_share(table: Sequence[dict[str, Any]]) -> float:
    """The share of measured time that falls in a named category (not 'other')."""
    total = sum(r["time_ms"] for r in table)
    known = sum(r["time_ms"] for r in table if r["category"] != "other")
    return known / total if total > 0 else 1.0


def run_sums(layers: Sequence[LayerTime]) -> list[float]:
    """Summed layer time of each profiled run."""
    sums: dict[int, float] = {}
    for t in layers:
        sums[t.run] = sums.get(t.run, 0.0) + t.time_ms
    return [sums[r] for r in sorted(sums)]


# -- running a profile -----------------------------------------------------------
@dataclass
class Profile:
    target: Target
    backend: str
    label: str
    options: dict[str, Any]
    batch: int
    runs: int
    fused: bool  # the deployed (fused) graph, or --unfused
    table: list[dict[str, Any]]
    layer_sum_ms: float  # median over runs of the summed layer times
    unprofiled_ms: float  # the harness's median of unprofiled runs
    unprofiled_samples_ms: list[float]
    input: str
    notes: list[str] = field(default_factory=list)

    @property
    def overhead_ratio(self) -> float:
        """Summed layer time / unprofiled whole-run time (1.0: the layers explain the run)."""
        return self.layer_sum_ms / self.unprofiled_ms if self.unprofiled_ms > 0 else float("nan")

    @property
    def us_per_tile(self) -> float:
        return self.layer_sum_ms * 1000.0 / self.batch


def check_backend(backend: str, engine: Path | None) -> str:
    """The one backend to profile; TensorRT (``--engine`` or ``-b tensorrt``) needs a GPU."""
    from cnn_deploy.backends import parse_backends

    if engine is not None or backend.strip().lower() in ("tensorrt", "trt"):
        from cnn_deploy.enginebench import require_gpu

        require_gpu("profiling a TensorRT engine")
        if engine is None:
            raise BenchError("-b tensorrt profiles a TensorRT plan: pass --engine "
                             "engines/<device>/<net>_<precision>.plan (`cnndeploy build`)")
        return "tensorrt"
    names = parse_backends(backend)
    if len(names) != 1:
        raise BenchError(f"profile one backend at a time, not {', '.join(names)}")
    return names[0]


def profile_options(backend: str, unfused: bool,
                    options: dict[str, Any] | None = None) -> tuple[dict[str, Any], list[str]]:
    """Backend options for a profile: the deployed graph by default, unfused on request."""
    opts = dict(options or {})
    notes: list[str] = []
    if backend == "onnxruntime":
        if unfused:
            opts["opt_level"] = "basic"
            notes.append("onnxruntime at opt level basic: Conv, Relu, MaxPool and Gemm run as "
                         "separate nodes (unfused)")
        else:
            opts.setdefault("opt_level", "extended")
            notes.append(f"onnxruntime at opt level {opts['opt_level']}: the deployed graph, "
                         "Conv+Relu fused into FusedConv, Gemm+Relu into FusedGemm")
    elif backend == "torch":
        notes.append("torch eager is unfused already: one aten op per module call"
                     + (" (--unfused changes nothing)" if unfused else ""))
    return opts, notes


def profile_target(target: Target, backend: str, batch: int, *, runs: int = DEFAULT_RUNS,
                   unfused: bool = False, options: dict[str, Any] | None = None,
                   timing: TimingConfig = PROFILE_TIMING, data: str | None = None) -> Profile:
    """Time ``target`` unprofiled with the harness, then profile ``runs`` runs per layer."""
    from cnn_deploy.bench import make_inputs, summarise, time_runner

    if runs < 1:
        raise BenchError(f"--runs must be at least 1, got {runs}")
    if batch < 1:
        raise BenchError(f"--batch must be at least 1, got {batch}")
    opts, notes = profile_options(backend, unfused, options)
    with Row(backend, opts).runner(target) as runner:
        fixed = runner.signature.fixed_batch
        if fixed is not None and fixed != batch:
            notes.append(f"the model has a fixed batch of {fixed}: profiled at {fixed}")
            batch = fixed
        x, source = make_inputs(runner, batch, data)
        try:
            samples, _ = time_runner(runner, x, timing)
            layers = runner.profile_layers(x, runs)
        except MemoryError as exc:
            raise BenchError(f"batch {batch} does not fit in memory on {runner.label} ({exc}): "
                             "use a smaller --batch") from None
        label, used = runner.label, dict(runner.options)
    if not layers:
        raise BenchError(f"{label} reported no layers for {target.name}")
    table = layer_table(layers, batch, target.spec,
                        categorise_trt if backend == "tensorrt" else categorise)
    fused = backend != "torch" and not unfused
    return Profile(target, backend, label, used, batch, runs, fused, table,
                   statistics.median(run_sums(layers)), summarise(samples, batch).median_ms,
                   samples, source, notes)


# -- records -----------------------------------------------------------------------
def profile_payload(p: Profile) -> dict[str, Any]:
    """What a ``kind: "profile"`` record holds beside the device and versions."""
    return {"model": p.target.to_dict(), "backend": {"name": p.backend, "label": p.label,
                                                     "options": p.options},
            "batch": p.batch, "runs": p.runs, "graph": "fused" if p.fused else "unfused",
            "layers": p.table, "categories": category_totals(p.table),
            "layer_sum_ms": p.layer_sum_ms, "unprofiled_ms": p.unprofiled_ms,
            "unprofiled_samples_ms": p.unprofiled_samples_ms,
            "overhead_ratio": p.overhead_ratio, "input": p.input, "notes": p.notes}


def save_profiles(profiles: Sequence[Profile], path: Path) -> str:
    """Append one record per profile; returns the run id."""
    from cnn_deploy import results as store
    from cnn_deploy.device import device_record, library_versions

    store.check_writable(path)
    run_id = store.new_run_id()
    device, versions = device_record(), library_versions()
    for p in profiles:
        store.append(path, store.make_record("profile", run_id, profile_payload(p), device,
                                             versions))
    return run_id


# -- families ----------------------------------------------------------------------
def expand_specs(text: str) -> list[str]:
    """'lenet_{1..5}c1f' or 'lenet_1c1f,lenet_2c1f' -> the names, each checked."""
    names: list[str] = []
    for part in filter(None, (p.strip() for p in _split_outside_braces(text))):
        m = re.search(r"\{(\d+)\.\.(\d+)\}", part)
        if m:
            lo, hi = int(m.group(1)), int(m.group(2))
            step = 1 if hi >= lo else -1
            names += [part[:m.start()] + str(i) + part[m.end():] for i in range(lo, hi + step, step)]
        else:
            names.append(part)
    for name in names:
        NetSpec.from_name(name)  # raises SpecError with a suggestion
    return list(dict.fromkeys(names))


def _split_outside_braces(text: str) -> list[str]:
    parts, depth, current = [], 0, ""
    for ch in text:
        depth += (ch == "{") - (ch == "}")
        if ch == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += ch
    return [*parts, current]


def family_name(names: Sequence[str]) -> str:
    """A file-name-safe name for a family: 'lenet_1c1f-lenet_5c1f'."""
    return f"{names[0]}-{names[-1]}" if len(names) > 1 else names[0]


def family_table(profiles: Sequence[Profile]) -> list[dict[str, Any]]:
    """Long form: one row per (net, category) with µs per tile and share."""
    rows = []
    for p in profiles:
        for t in category_totals(p.table):
            rows.append({"net": p.target.name, "backend": p.label, "batch": p.batch,
                         "category": t["category"], "us_per_tile": t["time_ms"] * 1000 / p.batch,
                         "share": t["share"]})
    return rows


def plot_stacked(rows: Sequence[dict[str, Any]], path: Path, *, x: str = "net",
                 stack: str = "category", y: str = "us_per_tile", title: str = "",
                 ylabel: str = "µs per tile") -> Path:
    """Stacked bars of column ``y`` per ``x``, one colour per ``stack`` value, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = list(dict.fromkeys(r[x] for r in rows))
    stacks = list(dict.fromkeys(r[stack] for r in rows))
    fig, ax = plt.subplots(figsize=(max(5.0, 1.2 * len(xs) + 2), 4.5))
    bottom = [0.0] * len(xs)
    for s in stacks:
        heights = [sum(r[y] for r in rows if r[x] == v and r[stack] == s) for v in xs]
        ax.bar(xs, heights, bottom=bottom, label=s)
        bottom = [b + h for b, h in zip(bottom, heights, strict=True)]
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
