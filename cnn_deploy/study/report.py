"""Thesis-style report and cross-run comparison over stored records.

Records become one tidy list of flat rows (:func:`cnn_deploy.results.tidy.tidy`); every figure, table and
conclusion below is a pure function over those rows, and plots take column names. The
HTML page is self-contained: figures are embedded as base64 PNG data URIs.
"""

from __future__ import annotations

import base64
import html
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cnn_deploy.bench.intervals import overlap, process_ci
from cnn_deploy.results.tidy import ACCURACIES, Rows, load, tidy

if TYPE_CHECKING:
    from cnn_deploy.study.perfreport import LatencySection

# Thesis Table 2 (GTX960, Theano): tiles/ms and seconds of training to 90/95/97 % accuracy.
THESIS_TABLE2 = {
    "lenet_5c1f": {"tiles_per_ms": 33.6, "90": 48.9, "95": 119.9, "97": 256.3},
    "lenet_1c5f": {"tiles_per_ms": 148.6, "90": 63.8, "95": 139.6, "97": 260.4},
    "lenet_3c3f": {"tiles_per_ms": 42.0, "90": 35.1, "95": 96.7, "97": 183.5},
}
DEFAULTS = {"depth": 20, "neurons": 512}  # NetSpec defaults: the thesis's base networks


def select(rows: Rows, **where: Any) -> Rows:
    return [r for r in rows if all(r.get(k) == v for k, v in where.items())]


def median_by(rows: Rows, keys: Sequence[str], y: str) -> Rows:
    """One row per distinct ``keys`` with the median of ``y`` (repeats collapse). For
    tiles/ms, the row's 95 % interval (``ci_lo``, ``ci_hi``) is the bootstrap over its records
    (each a process: a sweep pass, a bench process), then their iterations
    (``bench.intervals.process_ci``); a single record's is its own, within one process."""
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for r in rows:
        if r.get(y) is not None:
            groups.setdefault(tuple(r.get(k) for k in keys), []).append(r)
    out = []
    for k, group in groups.items():
        values = [g[y] for g in group]
        row: dict[str, Any] = {**dict(zip(keys, k, strict=True)), y: statistics.median(values)}
        if y == "tiles_per_ms":
            runs = [(g["samples_ms"], g["batch"], g.get("wall_ms")) for g in group
                    if g.get("samples_ms") and g.get("batch")]
            pooled = process_ci(runs) if len(runs) > 1 else None
            ci = (pooled[0], pooled[1]) if pooled else _ci(group[0]) if len(group) == 1 else None
            if ci is not None:
                row["ci_lo"], row["ci_hi"] = float(ci[0]), float(ci[1])
                row["processes"] = len(runs)
        out.append(row)
    return out


def _ci(row: dict[str, Any]) -> tuple[float, float] | None:
    lo, hi = row.get("ci_lo"), row.get("ci_hi")
    return (lo, hi) if lo is not None and hi is not None else None


def _order(a: tuple[float, tuple[float, float] | None], b: tuple[float, tuple[float, float] | None]
           ) -> int:
    """+1: a is faster beyond both intervals, -1: slower, 0: the intervals overlap (cannot
    tell). Without intervals, the plain comparison."""
    (x, cx), (y, cy) = a, b
    if cx and cy and overlap(cx, cy):
        return 0
    return 1 if x > y else -1


# -- figures -------------------------------------------------------------------------
@dataclass
class Figure:
    key: str
    title: str
    rows: Rows  # empty: no data
    x: str
    y: str
    series: str
    kind: str = "line"  # or "stacked"
    path: Path | None = None


SHAPE = {"kernel": 5, "padding": 0, "pool": 2}  # the thesis's convolutions and pooling


def _bench(rows: Rows) -> Rows:
    return [r for r in rows if r["kind"] == "bench" and r.get("tiles_per_ms") is not None
            and r.get("conv_layers") is not None]


def _largest_batch(rows: Rows, prefer: int = 1024) -> int | None:
    batches = {r["batch"] for r in rows}
    return prefer if prefer in batches else max(batches, default=None)


def _family(rows: Rows, fixed: dict[str, Any], x: str, series: str,
            at_batch: bool = False) -> Rows:
    # by fields, so only the thesis's shape: a 3x3 or same-padded net (`sweep --group
    # coverage`, held-out cells) has a thesis net's layer counts but is not that net
    rows = [r for r in _bench(rows) if all(r.get(k) == v for k, v in {**SHAPE, **fixed}.items())]
    if at_batch:
        rows = select(rows, batch=_largest_batch(rows))
    out = median_by(rows, [x, series, "backend", "device"], "tiles_per_ms")
    multi = len({(r["backend"], r["device"]) for r in out}) > 1
    for r in out:
        r["label"] = f"{series.replace('_', ' ')} = {r[series]}" + (
            f" [{r['backend']}, {r['device']}]" if multi else "")
    return sorted(out, key=lambda r: (r["label"], r[x]))


def figures(rows: Rows) -> list[Figure]:
    """The thesis figures this data can redraw; a figure without data has no rows."""
    figs = [
        Figure("fig10_batch_by_fc", "Fig. 10: tiles/ms vs batch, 1 conv layer, by FC layers",
               _family(rows, {"conv_layers": 1, **DEFAULTS}, "batch", "fc_layers"),
               "batch", "tiles_per_ms", "label"),
        Figure("fig11_batch_by_conv", "Fig. 11: tiles/ms vs batch, 1 FC layer, by conv layers",
               _family(rows, {"fc_layers": 1, **DEFAULTS}, "batch", "conv_layers"),
               "batch", "tiles_per_ms", "label"),
        Figure("fig12_neurons_by_fc", "Fig. 12: tiles/ms vs neurons, 1 conv layer, by FC layers",
               _family(rows, {"conv_layers": 1, "depth": 20}, "neurons", "fc_layers", True),
               "neurons", "tiles_per_ms", "label"),
        Figure("fig15_depth_by_conv", "Fig. 15: tiles/ms vs depth, 1 FC layer, by conv layers",
               _family(rows, {"fc_layers": 1, "neurons": 512}, "depth", "conv_layers", True),
               "depth", "tiles_per_ms", "label"),
    ]
    for f in figs[2:]:  # a sweep over neurons or depth needs two values of it
        f.rows = f.rows if len({r[f.x] for r in f.rows}) > 1 else []
    neurons = {r["neurons"] for r in figs[2].rows}
    fig36 = figs[2].rows if {n % 128 == 0 for n in neurons} == {True, False} else []
    figs.append(Figure("fig36_neurons_128", "Fig. 36: tiles/ms vs neurons, on and off "
                       "multiples of 128", fig36, "neurons", "tiles_per_ms", "label"))
    profiles = [r for r in rows if r["kind"] == "profile"]
    groups = sorted({(r["backend"], r["batch"], r["device"]) for r in profiles}, key=str)
    for i, (backend, batch, device) in enumerate(groups or [(None, None, None)], start=1):
        sel = select(profiles, backend=backend, batch=batch, device=device) if groups else []
        figs.append(Figure(f"fig18_35_profile_{i}", f"Figs. 18-35: µs per tile by category, "
                           f"{backend}, batch {batch}, {device}" if groups else
                           "Figs. 18-35: µs per tile by category", sel, "net", "us_per_tile",
                           "category", kind="stacked"))
    return figs


def plot(fig: Figure, path: Path) -> Path:
    """Draw ``fig`` (lines of ``y`` vs ``x`` per ``series``, or stacked bars) as a PNG."""
    if fig.kind == "stacked":
        from cnn_deploy.profile.table import plot_stacked

        fig.path = plot_stacked(fig.rows, path, x=fig.x, stack=fig.series, y=fig.y,
                                title=fig.title)
        return fig.path
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, ax = plt.subplots(figsize=(7.0, 4.5))
    for label in dict.fromkeys(r[fig.series] for r in fig.rows):
        mine = sorted((r for r in fig.rows if r[fig.series] == label), key=lambda r: r[fig.x])
        xs, ys = [r[fig.x] for r in mine], [r[fig.y] for r in mine]
        if all(_ci(r) for r in mine):  # 95 % intervals as error bars
            below = [r[fig.y] - r["ci_lo"] for r in mine]
            above = [r["ci_hi"] - r[fig.y] for r in mine]
            ax.errorbar(xs, ys, yerr=[below, above], marker="o", capsize=3, label=label)
        else:
            ax.plot(xs, ys, marker="o", label=label)
    if fig.x == "batch":
        ax.set_xscale("log", base=2)
    ax.set_xlabel(fig.x)
    ax.set_ylabel("tiles/ms" if fig.y == "tiles_per_ms" else fig.y)
    ax.set_title(fig.title, fontsize=10)
    ax.legend(fontsize=7)
    from cnn_deploy.errors import ResultsError
    from cnn_deploy.files import write_figure

    write_figure(figure, path, "a figure", ResultsError)
    fig.path = path
    return path


# -- tables --------------------------------------------------------------------------
def table2(rows: Rows) -> Rows:
    """Time-to-accuracy beside the thesis's GTX960 numbers (records carrying it only)."""
    out = []
    for r in median_by([r for r in _bench(rows) if r.get("tta_90") is not None],
                       ["net", "backend", "device", "tta_90", "tta_95", "tta_97"], "tiles_per_ms"):
        thesis = THESIS_TABLE2.get(r["net"], {})
        out.append({"net": r["net"], "backend": r["backend"], "device": r["device"],
                    "tiles_per_ms": r["tiles_per_ms"], "thesis_tiles_per_ms": thesis.get("tiles_per_ms"),
                    **{f"s_to_{a}": r[f"tta_{a}"] for a in ACCURACIES},
                    **{f"thesis_s_to_{a}": thesis.get(a) for a in ACCURACIES}})
    return out


def table1(rows: Rows) -> Rows:
    """Thesis Table 1: tiles/ms drift from the first to the last loop (sweep --method thesis)."""
    return [{"net": r["net"], "backend": r["backend"], "batch": r["batch"],
             "tiles_per_ms": r["tiles_per_ms"], "drift_first_to_last_loop": r["drift"]}
            for r in _bench(rows) if r.get("drift") is not None]


def speedups(rows: Rows) -> Rows:
    """Per cell measured on two or more devices: tiles/ms of each device over the first."""
    cells = median_by(_bench(rows), ["net", "backend", "precision", "batch", "device"],
                      "tiles_per_ms")
    devices = sorted({r["device"] for r in cells if r["device"]})
    if len(devices) < 2:
        return []
    by_cell: dict[tuple[Any, ...], dict[str, float]] = {}
    for r in cells:
        by_cell.setdefault((r["net"], r["backend"], r["precision"], r["batch"]), {})[
            r["device"]] = r["tiles_per_ms"]
    out = []
    for (net, backend, precision, batch), per in sorted(by_cell.items(), key=str):
        base = devices[0]
        for other in devices[1:]:
            if base in per and other in per and per[base] > 0:
                out.append({"net": net, "backend": backend, "precision": precision, "batch": batch,
                            "device_a": base, "device_b": other,
                            "speedup_b_over_a": per[other] / per[base]})
    return out


# -- conclusions ---------------------------------------------------------------------
@dataclass
class Verdict:
    claim: str
    verdict: str  # "holds", "does not hold here", "cannot tell at this noise level", "no data"
    detail: str


CANNOT_TELL = "cannot tell at this noise level"


def _tiles(rows: Rows, net: str, batch: int
           ) -> dict[tuple[str, str], tuple[float, tuple[float, float] | None]]:
    return {(r["backend"], r["device"]): (r["tiles_per_ms"], _ci(r))
            for r in median_by(select(_bench(rows), net=net, batch=batch), ["backend", "device"],
                               "tiles_per_ms")}


def _fmt(value: float, ci: tuple[float, float] | None) -> str:
    return f"{value:.1f}" + (f" [{ci[0]:.1f}, {ci[1]:.1f}]" if ci else "")


def fc_cheaper_than_conv(rows: Rows) -> Verdict:
    claim = "Adding FC layers is cheaper than adding conv layers"
    nets = {r["net"] for r in _bench(rows)}
    ks = [k for k in (5, 4, 3, 2) if f"lenet_1c{k}f" in nets and f"lenet_{k}c1f" in nets]
    if not ks:
        return Verdict(claim, "no data", "needs lenet_1c{k}f and lenet_{k}c1f (k >= 2)")
    fc, conv = f"lenet_1c{ks[0]}f", f"lenet_{ks[0]}c1f"
    both = {r["batch"] for r in select(_bench(rows), net=fc)} & {
        r["batch"] for r in select(_bench(rows), net=conv)}
    batch = 1024 if 1024 in both else max(both)
    a, b = _tiles(rows, fc, batch), _tiles(rows, conv, batch)
    pairs = [(k, a[k], b[k]) for k in a if k in b]
    if not pairs:
        return Verdict(claim, "no data", f"{fc} and {conv} never share a backend and device")
    orders = [_order(x, y) for _, x, y in pairs]
    verdict = ("does not hold here" if -1 in orders else CANNOT_TELL if 0 in orders else "holds")
    note = "" if batch == 1024 else f" (batch 1024 not measured; at batch {batch})"
    detail = "; ".join(f"{k[0]} on {k[1]}: {fc} {_fmt(*x)} vs {conv} {_fmt(*y)} tiles/ms "
                       f"({x[0] / y[0]:.2f}x)" for k, x, y in pairs)
    return Verdict(claim, verdict, detail + note + (" (95 % intervals in brackets)"
                                                    if any(x[1] for _, x, _ in pairs) else ""))


def batch_saturates(rows: Rows, knee: int = 512, tolerance: float = 0.10) -> Verdict:
    claim = f"Throughput saturates near batch {knee}"
    series = median_by(_bench(rows), ["net", "backend", "device", "batch"], "tiles_per_ms")
    groups: dict[tuple[Any, ...], dict[int, dict[str, Any]]] = {}
    for r in series:
        groups.setdefault((r["net"], r["backend"], r["device"]), {})[r["batch"]] = r
    checked = []  # (series, at the knee, the series' best)
    for k, v in groups.items():
        if knee in v and max(v) > knee:
            best = max(v.values(), key=lambda r: r["tiles_per_ms"])
            checked.append((k, v[knee], best))
    if not checked:
        return Verdict(claim, "no data", f"needs batch {knee} and a larger batch in one series")

    def within(at: dict[str, Any], best: dict[str, Any]) -> int:
        """+1 holds, -1 does not, 0 the intervals leave it open."""
        if at is best:  # the knee is the series' best: saturated by definition
            return 1
        ci_at, ci_best = _ci(at), _ci(best)
        if not (ci_at and ci_best):
            return 1 if at["tiles_per_ms"] >= (1 - tolerance) * best["tiles_per_ms"] else -1
        if ci_at[0] >= (1 - tolerance) * ci_best[1]:
            return 1
        return -1 if ci_at[1] < (1 - tolerance) * ci_best[0] else 0

    calls = [within(at, best) for _, at, best in checked]
    worst = min(checked, key=lambda c: c[1]["tiles_per_ms"] / c[2]["tiles_per_ms"])
    verdict = "does not hold here" if -1 in calls else CANNOT_TELL if 0 in calls else "holds"
    return Verdict(claim, verdict,
                   f"{calls.count(1)}/{len(checked)} series within {tolerance:.0%} of their max at "
                   f"batch {knee}, {calls.count(-1)} not, {calls.count(0)} undecided by the 95 % "
                   f"intervals; lowest {worst[0][0]} [{worst[0][1]}]: "
                   f"{worst[1]['tiles_per_ms']:.1f} of {worst[2]['tiles_per_ms']:.1f} tiles/ms")


def multiples_of_128(rows: Rows) -> Verdict:
    claim = "FC layers are faster at neuron counts that are multiples of 128"
    fig = next(f for f in figures(rows) if f.key == "fig36_neurons_128")
    if not fig.rows:
        return Verdict(claim, "no data", "needs neuron counts on and off multiples of 128")
    calls = []
    for label in {r["label"] for r in fig.rows}:
        per = {r["neurons"]: (r["tiles_per_ms"], _ci(r)) for r in fig.rows if r["label"] == label}
        for n, t in per.items():
            up = -(-n // 128) * 128
            if n % 128 and up in per:
                calls.append(_order(per[up], t) if per[up][0] != t[0] else 1)
    if not calls:
        return Verdict(claim, "no data", "no off-multiple count has its next multiple measured")
    wins, losses, total = calls.count(1), calls.count(-1), len(calls)
    verdict = "holds" if wins * 2 > total else "does not hold here" if losses * 2 >= total \
        else CANNOT_TELL
    return Verdict(claim, verdict, f"the next multiple of 128 is faster (with more neurons) in "
                   f"{wins}/{total} cases, slower in {losses}, within the 95 % intervals in "
                   f"{total - wins - losses}")


def second_conv_costs_most(rows: Rows) -> Verdict:
    claim = "The second conv layer costs the most of the conv layers"
    seen: dict[tuple[Any, ...], list[tuple[str, float]]] = {}
    for r in rows:
        if r["kind"] == "profile" and (r.get("conv_layers") or 0) >= 2:
            seen[(r["net"], r["backend"], r["batch"], r["device"], r["run_id"])] = r["conv_layer_times"]
    parts = []
    for (net, backend, _, _, _), layers in sorted(seen.items(), key=str):
        total = sum(t for _, t in layers)
        conv2 = sum(t for name, t in layers if "conv2" in name.split("+"))
        top = max(layers, key=lambda x: x[1], default=("", 0.0))
        if total > 0:
            parts.append((net, backend, conv2 / total, "conv2" in top[0].split("+")))
    if not parts:
        return Verdict(claim, "no data", "needs profile records of nets with 2+ conv layers")
    ok = all(p[3] for p in parts)
    return Verdict(claim, "holds" if ok else "does not hold here", "; ".join(
        f"{n} [{b}]: conv2 {s:.0%} of conv time" for n, b, s, _ in parts))


def speedup_tracks_spec(rows: Rows, tolerance: float = 0.25) -> Verdict:
    """The measured speed-up of one device over another against the ratio of their published
    peaks (FP32 FLOP/s for the compute-bound, memory bandwidth for the memory-bound): it holds
    when the median measured speed-up is within ``tolerance`` of either ratio."""
    claim = "Device-vs-device speed-up follows the devices' specifications"
    ups = speedups(rows)
    if not ups:
        return Verdict(claim, "no data", "needs the same cells measured on two devices")
    a, b = ups[0]["device_a"], ups[0]["device_b"]
    values = [u["speedup_b_over_a"] for u in ups if (u["device_a"], u["device_b"]) == (a, b)]
    measured = statistics.median(values)
    detail = (f"{b} / {a}: median {measured:.2f}x over {len(values)} cells (range "
              f"{min(values):.2f}-{max(values):.2f}x)")
    peaks = {r["device"]: r for r in rows if r.get("peak_fp32_tflops")}
    if a not in peaks or b not in peaks:
        return Verdict(claim, "no data", detail + "; no published peaks for "
                       + " and ".join(d for d in (a, b) if d not in peaks)
                       + " (cnn_deploy.peaks lists common NVIDIA GPUs and Jetsons)")
    ratios = {"FP32 peak": peaks[b]["peak_fp32_tflops"] / peaks[a]["peak_fp32_tflops"]}
    if peaks[a].get("peak_bandwidth_gbs") and peaks[b].get("peak_bandwidth_gbs"):
        ratios["memory bandwidth"] = peaks[b]["peak_bandwidth_gbs"] / peaks[a]["peak_bandwidth_gbs"]
    near = [k for k, v in ratios.items() if abs(measured / v - 1) <= tolerance]
    detail += "; spec ratios " + ", ".join(f"{k} {v:.2f}x" for k, v in ratios.items())
    if near:
        return Verdict(claim, "holds", detail + f" (within {tolerance:.0%} of the {near[0]} ratio)")
    return Verdict(claim, "does not hold here", detail + f" (off every ratio by more than "
                   f"{tolerance:.0%}: small nets are bound by launch overheads, not by the peaks)")


CONCLUSIONS: tuple[Callable[[Rows], Verdict], ...] = (
    fc_cheaper_than_conv, batch_saturates, multiples_of_128, second_conv_costs_most,
    speedup_tracks_spec)


def conclusions(rows: Rows) -> list[Verdict]:
    return [check(rows) for check in CONCLUSIONS]


# -- the report ----------------------------------------------------------------------
@dataclass
class Report:
    index: Path
    figures: list[Figure]
    conclusions: list[Verdict]
    skipped: list[str] = field(default_factory=list)

def build_report(paths: Sequence[Path], out: Path) -> Report:
    """Read ``paths``, draw every figure that has data into ``out``, write ``out/index.html``."""
    from cnn_deploy.errors import ResultsError

    if out.exists() and not out.is_dir():
        raise ResultsError(f"-o {out} is a file: the report is a folder (index.html and one PNG "
                           "per figure); choose a folder path")
    from cnn_deploy.files import check_writable_folder, write_atomic

    index = out / "index.html"
    check_writable_folder(index, "-o", ResultsError)  # before reading or drawing anything
    records, skipped = load(paths)
    rows = tidy(records)
    figs = figures(rows)
    for f in figs:
        if f.rows:
            plot(f, out / f"{f.key}.png")
    verdicts = conclusions(rows)
    from cnn_deploy.study.perfreport import section

    latency = section(rows, THESIS_TABLE2, out)
    write_atomic(index, render_html(figs, verdicts, table2(rows), speedups(rows), paths,
                                    table1(rows), latency, settings(rows)), "the report",
                 ResultsError)
    return Report(index, figs, verdicts, skipped)


def settings(rows: Rows) -> Rows:
    """Each device and backend setting the figures come from: hardware, package version and
    the options it ran with (a tuning file's included), with its record count."""
    count: dict[tuple[Any, ...], int] = {}
    for r in rows:
        key = (r.get("device"), r.get("backend"), r.get("setting"))
        count[key] = count.get(key, 0) + 1
    return [{"device": d, "backend": b, "hardware; version (options)": s, "rows": n}
            for (d, b, s), n in sorted(count.items(), key=str)]


def _table(rows: Rows) -> str:
    if not rows:
        return "<p>no data</p>"
    fmt = lambda v: "-" if v is None else f"{v:.3g}" if isinstance(v, float) else str(v)  # noqa: E731
    keys = list(dict.fromkeys(k for r in rows for k in r))  # rows may lack some columns
    head = "".join(f"<th>{html.escape(k)}</th>" for k in keys)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(fmt(r.get(k)))}</td>" for k in keys)
                   + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


_ONLOAD = ("window.addEventListener('load',function(){var i=Array.prototype.slice.call("
           "document.images);document.title='images '+i.filter(function(m){return m.complete&&"
           "m.naturalWidth>0}).length+'/'+i.length;});")


def render_html(figs: Sequence[Figure], verdicts: Sequence[Verdict], t2: Rows, ups: Rows,
                sources: Sequence[Path], t1: Rows | None = None,
                latency: LatencySection | None = None, settings: Rows | None = None) -> str:
    parts = ["<!doctype html><html><head><meta charset='utf-8'><title>cnn_deploy report</title>",
             "<style>body{font-family:sans-serif;max-width:60em;margin:auto}table{border-collapse:"
             "collapse}td,th{border:1px solid #ccc;padding:2px 6px;font-size:90%}</style>",
             f"<script>{_ONLOAD}</script></head><body><h1>cnn_deploy report</h1>",
             "<p>from " + ", ".join(html.escape(str(s)) for s in sources) + "</p>",
             "<h2>Conclusions</h2><ul>"]
    parts += [f"<li class='verdict'><b>{html.escape(v.claim)}</b>: {html.escape(v.verdict)} "
              f"({html.escape(v.detail)})</li>" for v in verdicts]
    parts.append("</ul><h2>Figures</h2>")
    for f in figs:
        parts.append(f"<h3>{html.escape(f.title)}</h3>")
        if f.path is None:
            parts.append("<p>no data</p>")
            continue
        data = base64.b64encode(f.path.read_bytes()).decode()
        parts.append(f"<img alt='{html.escape(f.key)}' src='data:image/png;base64,{data}'>")
        parts.append("<p class='setting'><small>measured on: " + "; ".join(
            html.escape(f"{b} on {d}") for b, d in sorted({(str(r.get("backend")),
                                                           str(r.get("device")))
                                                          for r in f.rows})) + "</small></p>")
    parts += ["<h2>Table 1: drift across loops (sweep --method thesis)</h2>", _table(t1 or []),
              "<h2>Table 2: time to accuracy (thesis: GTX960)</h2>", _table(t2),
              "<h2>Device-vs-device speed-up</h2>", _table(ups),
              "<h2>Devices and settings behind the figures</h2>", _table(settings or [])]
    if latency is not None:
        parts += ["<h2>Latency models (thesis eq. 13 and additive per layer)</h2>",
                  "<p>The thesis's own model (eq. 14-18, C7 = 9.8e-3, fitted on the GTX960) on "
                  "its Table 2 networks (C7 alone caps it at 1 / 9.8e-3 = 102 tiles/ms):</p>",
                  _table(latency.thesis),
                  "<p>Both forms fitted to each device and backend here (<code>cnndeploy model "
                  "fit</code>); held-out figures from <code>cnndeploy model validate</code>'s "
                  "cells where the records hold them:</p>", _table(latency.fits)]
        for title, png in latency.pngs:
            data = base64.b64encode(png.read_bytes()).decode()
            parts.append(f"<h3>{html.escape(title)}</h3><img alt='{html.escape(png.stem)}' "
                         f"src='data:image/png;base64,{data}'>")
    parts.append("</body></html>")
    return "\n".join(parts)
