"""The tidy per-layer table of a profile and the pure analyses over it: one row per
profiler layer (``layer``, ``op``, ``category``, ``time_ms``, ``share``, ``flops``,
``bytes``), totals per category, and family tables and stacked-bar plots that take column
names."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cnn_deploy.arch import NetSpec
from cnn_deploy.backends.base import LayerTime
from cnn_deploy.profile.categories import categorise


def layer_table(layers: Sequence[LayerTime], batch: int,
                spec: NetSpec | None = None) -> list[dict[str, Any]]:
    """One row per profiler layer: its category (the one categoriser), median time over runs,
    share, and (when the spec is known) the FLOPs and bytes of the arch.py layers it covers,
    matched in order."""
    runs = sorted({t.run for t in layers})
    grouped: dict[str, list[LayerTime]] = {}
    for t in layers:
        grouped.setdefault(t.layer, []).append(t)
    costs = spec.layer_costs() if spec is not None else []
    position = 0
    rows: list[dict[str, Any]] = []
    for name, times in grouped.items():
        first = times[0]
        category, parts = categorise(first)
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



def family_table(profiles: Sequence[Any]) -> list[dict[str, Any]]:
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
    from cnn_deploy.errors import BenchError
    from cnn_deploy.files import write_figure

    return write_figure(fig, path, "the chart", BenchError)
