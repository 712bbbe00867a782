"""Rendering helpers shared by the commands: consoles, tables, messages."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from cnn_deploy.bench.intervals import WIDE
from cnn_deploy.bench.phases import QUANTITIES, GpuReport
from cnn_deploy.bench.summary import Summary

# emoji=False: a message holding ':-1:' or ':100:' (a device or a path) must not become an emoji
out = Console(emoji=False)
err = Console(stderr=True, emoji=False)
if not out.is_terminal:  # piped or captured: do not squeeze tables into 80 columns
    out.width = max(out.width, 132)


def one_line(message: str) -> str:
    """One line: a control character a user typed into a name or path (a newline, an escape)
    shows as its escape, so no message spans lines or moves the terminal's cursor."""
    return escape("".join(c if c.isprintable() else repr(c)[1:-1] for c in message))


def error(message: str) -> None:
    err.print(f"[bold red]error:[/] {one_line(message)}", highlight=False, soft_wrap=True)


def warn(message: str) -> None:
    err.print(f"[yellow]warning:[/] {one_line(message)}", highlight=False, soft_wrap=True)


def note(message: str) -> None:
    err.print(f"[dim]note:[/] {one_line(message)}", highlight=False, soft_wrap=True)


def bench_table(summaries: Sequence[Summary], title: str, accuracy: float | None = None) -> Table:
    multi = any(s.processes > 1 for s in summaries)
    table = Table(title=title, title_justify="left")
    table.add_column("backend", no_wrap=True)
    table.add_column("batch", justify="right")
    table.add_column("tiles/ms", justify="right")
    table.add_column("95% CI", justify="right")
    table.add_column("median ms", justify="right")
    table.add_column("p90 ms", justify="right")
    table.add_column("p99 ms", justify="right")
    table.add_column("CV", justify="right")
    if multi:
        table.add_column("spread", justify="right")
    table.add_column("speed-up", justify="right")
    if accuracy is not None:
        table.add_column("test acc", justify="right")
    last_row = None
    for s in sorted(summaries, key=lambda s: (s.row, s.batch)):
        if last_row is not None and s.row != last_row:
            table.add_section()
        last_row = s.row
        flag = " [yellow]![/]" if s.warnings else ""
        half = s.halfwidth
        wide = half is not None and half > WIDE
        ci = "-" if half is None else (f"[yellow]±{half:.1%}[/]" if wide else f"±{half:.1%}")
        cells = [escape(s.label), str(s.batch), f"{s.stats.tiles_per_ms:.1f}{flag}", ci,
                 _ms(s.stats.median_ms), _ms(s.stats.p90_ms), _ms(s.stats.p99_ms),
                 f"{s.stats.cv:.1%}"]
        if multi:
            cells.append(f"{s.spread:.0%} ({s.processes}p)")
        cells.append("1.00x" if s.baseline else (f"{s.speedup:.2f}x" if s.speedup else "-"))
        if accuracy is not None:
            cells.append(f"{accuracy:.2%}")
        table.add_row(*cells)
    return table


def gpu_table(report: GpuReport) -> Table:
    """trtexec's performance summary for one GPU cell: a row per quantity, then tiles/ms."""
    title = (f"{report.label}, batch {report.batch}: "
             f"{report.tiles_per_ms_compute:.1f} tiles/ms from GPU compute, "
             f"{report.tiles_per_ms_end_to_end:.1f} tiles/ms end to end"
             + (" (2 in flight, over wall time, as trtexec)" if report.overlapped else ""))
    table = Table(title=escape(title), title_justify="left", min_width=len(title))
    table.add_column("", no_wrap=True)
    for column in ("median ms", "p90 ms", "p99 ms", "min ms", "max ms", "CV"):
        table.add_column(column, justify="right")
    for key, s in report.stats.items():
        name = QUANTITIES.get(key, key)
        if key == "latency" and report.overlapped:  # trtexec's "Latency"
            name = "latency (H2D + compute + D2H)"
        table.add_row(name, _ms4(s.median_ms), _ms4(s.p90_ms),
                      _ms4(s.p99_ms), _ms4(s.min_ms), _ms4(s.max_ms), f"{s.cv:.1%}")
    return table


def _ms4(value: float) -> str:
    return f"{value:.4f}" if value < 10 else f"{value:.1f}"


def _ms(value: float) -> str:
    return f"{value:.3f}" if value < 10 else f"{value:.1f}"


def summary_rows(summaries: Sequence[Summary]) -> list[dict[str, Any]]:
    """Flat rows for --json / --csv."""
    return [{"backend": s.label, "batch": s.batch, "tiles_per_ms": s.stats.tiles_per_ms,
             "median_ms": s.stats.median_ms, "p90_ms": s.stats.p90_ms,
             "p99_ms": s.stats.p99_ms, "min_ms": s.stats.min_ms, "max_ms": s.stats.max_ms,
             "cv": s.stats.cv, "iterations": s.stats.iterations, "processes": s.processes,
             "spread": s.spread, "speedup_vs_baseline": s.speedup,
             "tiles_per_ms_ci95": list(s.ci) if s.ci else None,
             "warnings": " | ".join(s.warnings), "notes": " | ".join(s.notes)}
            for s in summaries]


def print_json(data: Any) -> None:
    out.print_json(json.dumps(data))


_KINDS = {
    "coefficient of variation": "coefficient of variation above the threshold (noisy machine, "
                                "or raise --duration)",
    "drift": "drift within the run (thermal throttling or background load?)",
    "tiles/ms differs": "tiles/ms differs across fresh processes (bimodal or unstable figure)",
    "tiles/ms is known to": "a 95 % interval wider than +-5 % (yellow in the CI column): raise "
                            "--duration or --processes before quoting",
}


def warnings_of(summaries: Sequence[Summary]) -> list[str]:
    """One line per kind of warning, naming the cells (marked ! in the table)."""
    grouped: dict[str, list[str]] = {}
    for s in summaries:
        for w in s.warnings:
            kind = next((k for k in _KINDS if w.startswith(k)), None)
            if kind is None:
                grouped.setdefault(f"{s.label}, batch {s.batch}: {w}", [])
            else:
                cells = grouped.setdefault(kind, [])
                if f"{s.label} b{s.batch}" not in cells:
                    cells.append(f"{s.label} b{s.batch}")
    return [f"{_KINDS[k]} in {len(cells)} cells: {', '.join(cells)}" if k in _KINDS else k
            for k, cells in grouped.items()]


class FrameProgress:
    """frames done / total and fps on stderr while a stream runs (a file: a bar; live: a count)."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self._bar: Any = None
        self._task: Any = None
        self._last = 0.0

    def start(self, total: int | None) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self._bar = Progress(TextColumn("stream"), BarColumn(), MofNCompleteColumn(),
                             TextColumn("{task.fields[info]}"), TimeElapsedColumn(),
                             console=self.console, transient=True)
        self._bar.start()
        self._task = self._bar.add_task("stream", total=total, info="")

    def update(self, run: Any) -> None:
        import time

        now = time.monotonic()
        if self._bar is None or now - self._last < 0.2:
            return
        self._last = now
        self._bar.update(self._task, completed=run.frames,
                         info=f"{run.fps:.1f} fps, {run.tiles_per_ms:.1f} tiles/ms, "
                              f"{run.dropped} dropped")

    def stop(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None


def tune_table(choices: Sequence[Any], title: str) -> Table:
    """Per backend: every candidate's tiles/ms per batch, the one kept marked."""
    table = Table(title=title, title_justify="left")
    table.add_column("backend")
    table.add_column("options")
    batches = sorted({int(b) for c in choices for t in c.tried for b in t["tiles_per_ms"]})
    for b in batches:
        table.add_column(f"b{b} tiles/ms", justify="right")
    table.add_column("kept", justify="center")
    for c in choices:
        table.add_section()
        for t in sorted(c.tried, key=lambda t: -min(t["tiles_per_ms"].values())):
            kept = t["options"] == c.options
            opts = ", ".join(f"{k}={v}" for k, v in t["options"].items()) or "(defaults)"
            mark = ("[green]yes: tuned[/]" if c.decided else "yes: defaults, fastest" if
                    c.best is None else "yes: defaults (faster within the noise)") if kept else ""
            table.add_row(escape(c.backend), escape(opts),
                          *(f"{t['tiles_per_ms'].get(str(b), float('nan')):.1f}" for b in batches),
                          mark)
    return table


# -- latency models, predictions, selection ---------------------------------------------------
def fit_table(model: Any, title: str) -> Table:
    """Each form's fit: in-sample and leave-one-net-out errors and its interval."""
    table = Table(title=title, title_justify="left")
    for name in ("form", "median |error|", "held-out net median |error|", "within ±10 %",
                 "within ±20 %", "interval (95 %)"):
        table.add_column(name, justify="left" if name == "form" else "right")
    def pct(e: dict[str, float], key: str) -> str:
        return f"{e[key]:.0%}" if key in e and e[key] == e[key] else "-"  # nan: not computed

    for form, e in model.errors.items():
        table.add_row(form, *(pct(e, k) for k in ("median_abs_error", "held_out_median_abs_error",
                                                  "held_out_within_10", "held_out_within_20")),
                      f"x/÷ {math.exp(model.interval[form]):.2f}")
    from cnn_deploy.study.perfmodel import ADDITIVE_TERMS

    dram = model.coef["additive"][ADDITIVE_TERMS.index("weight_dram_MB")]
    rows = model.errors.get("additive", {}).get("profile_rows")
    table.caption = (f"additive: {len(model.training)} whole-net cells"
                     + (f" and {rows:.0f} profiled layer parts" if rows else "")
                     + ("; last-level cache unknown: no DRAM term" if model.cache_mb is None else
                        f"; weights beyond the {model.cache_mb:.0f} MB cache: "
                        + (f"{dram * 1e3:.1f} µs/MB" if dram > 0 else "fitted at 0" if
                           model.dram_fitted else "no term (no cell isolates it: `sweep "
                           "--group coverage`)"))
                     + (f"; conv channels padded to blocks of {model.block}" if model.block > 1
                        else "; no channel padding"))
    return table


def prediction_table(preds: Sequence[Any], title: str) -> Table:
    table = Table(title=title, title_justify="left")
    for name in ("net", "batch", "tiles/ms", "interval", "ms per batch", "measured"):
        table.add_column(name, justify="left" if name == "net" else "right", no_wrap=name == "net")
    for p in preds:
        table.add_row(p.net, str(p.batch), f"{p.tiles_per_ms:.3g}" + ("*" if p.outside else ""),
                      f"{p.low:.3g}..{p.high:.3g}", f"{p.ms_per_batch:.3g}",
                      "-" if p.measured is None else f"{p.measured:.3g}")
    if any(p.outside for p in preds):
        table.caption = "* outside the fitted range: the interval is doubled"
    return table


def validation_table(validation: Any, title: str) -> Table:
    table = Table(title=title, title_justify="left")
    for name in ("", "cells", "within ±10 %", "within ±20 %", "median |error|", "p90 |error|"):
        table.add_column(name, justify="left" if not name else "right")
    labels = {"additive": "additive model", "thesis": "thesis eq. 13 form",
              "repeat": "two passes of one cell (the floor)"}
    for key, label in labels.items():
        s = validation.summary.get(key) or {}
        if s:
            table.add_row(label, f"{s['n']:.0f}", f"{s['within_10']:.0%}", f"{s['within_20']:.0%}",
                          f"{s['median_abs_error']:.1%}", f"{s['p90_abs_error']:.1%}")
    return table


def selection_table(selection: Any, title: str) -> Table:
    need = selection.budget.required
    table = Table(title=title, title_justify="left")
    for name in ("net", "tiles/ms", "interval", "source", "accuracy", "meets", "front"):
        table.add_column(name, justify="left" if name in ("net", "source", "meets") else "right",
                         no_wrap=name == "net")
    for c in selection.candidates:
        pick = selection.pick is not None and c.spec == selection.pick.spec
        table.add_row(("> " if pick else "") + c.spec.name, f"{c.tiles_per_ms:.3g}",
                      f"{c.low:.3g}..{c.high:.3g}", "measured" if c.measured else "predicted",
                      "-" if c.accuracy is None else f"{c.accuracy:.2%}", c.status(need),
                      "*" if c.front else "")
    table.caption = (f"needs {need:.3g} tiles/ms at batch {selection.budget.at_batch}; meets: yes "
                     "= even at the interval's slow end; front: the Pareto front of accuracy vs "
                     "tiles/ms")
    return table
