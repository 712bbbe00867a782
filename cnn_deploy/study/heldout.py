"""Validation that cannot flatter: networks drawn at random from a wider space than the sweep,
measured fresh in their own processes (two passes, each a fresh process per net, in shuffled
order), never seen by the fit; predicted against measured, beside how often the two passes of
one cell agree with each other, the floor no model can beat.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cnn_deploy.arch import NetSpec, known_names
from cnn_deploy.errors import PredictError, SpecError
from cnn_deploy.results.tidy import Rows
from cnn_deploy.study.modelfiles import HELD_OUT
from cnn_deploy.study.perfmodel import FORMS, LatencyModel, points, sources
from cnn_deploy.study.sweep import FLOPS_PER_S, SweepCell, SweepOutcome, SweepProgress, run_sweep

# The space held-out nets are drawn from (issue 12): wider than every thesis group.
SPACE: dict[str, tuple[int, int]] = {"conv_layers": (1, 5), "depth": (4, 96), "fc_layers": (0, 5),
                                     "neurons": (64, 4096), "batch": (1, 4096)}
KERNELS = (3, 5)
MAX_ITERATION_S = 0.25  # cells whose one batch would take longer (at ~100 GFLOP/s) are redrawn
MAX_NETS = 500
PASSES = 2


def draw(n: int, seed: int = 1, exclude: Sequence[str] = ()) -> list[tuple[NetSpec, int]]:
    """``n`` (net, batch) cells: conv and FC layer counts uniform, depth, neurons and batch
    log-uniform, kernel 3 or 5, padding valid or same; cells whose one batch would take over
    MAX_ITERATION_S at ~100 GFLOP/s, the thesis's nets and nets in ``exclude`` are drawn again
    (so one seed gives the same cells to a model and to the same model adapted elsewhere)."""
    if not 1 <= n <= MAX_NETS:
        raise PredictError(f"--nets must be within 1..{MAX_NETS}, got {n}")
    rng = random.Random(seed)
    taken = set(exclude) | set(known_names())  # the thesis's nets: what every fit may have seen
    out: list[tuple[NetSpec, int]] = []
    for _ in range(200 * n):
        if len(out) == n:
            break
        kernel = rng.choice(KERNELS)
        fields = {"conv_layers": rng.randint(*SPACE["conv_layers"]),
                  "fc_layers": rng.randint(*SPACE["fc_layers"]),
                  "depth": _log_uniform(rng, *SPACE["depth"]),
                  "neurons": _log_uniform(rng, *SPACE["neurons"]),
                  "kernel": kernel, "padding": rng.choice((0, kernel // 2))}
        if not fields["fc_layers"]:
            fields["neurons"] = NetSpec.neurons  # unused without hidden FC layers: one name per net
        batch = _log_uniform(rng, *SPACE["batch"])
        try:
            spec = NetSpec(**fields)
        except SpecError:
            continue
        if spec.name in taken or spec.flops_per_tile * batch / FLOPS_PER_S > MAX_ITERATION_S:
            continue
        taken.add(spec.name)
        out.append((spec, batch))
    return out


def _log_uniform(rng: random.Random, lo: int, hi: int) -> int:
    return min(hi, max(lo, round(math.exp(rng.uniform(math.log(lo), math.log(hi))))))


def measure(cells: Sequence[tuple[NetSpec, int]], results: Path, backend: str,
            options: dict[str, Any], on_progress: Callable[[SweepProgress], None] | None = None,
            data: str | None = None) -> SweepOutcome:
    """Two passes over ``cells`` in fresh processes (resumable: cells in ``results`` are kept)."""
    setting = tuple(sorted(options.items()))
    sweep = [SweepCell(s, b, backend, "fp32", setting) for s, b in cells]
    return run_sweep(sweep, results, group=HELD_OUT, passes=PASSES, on_progress=on_progress,
                     data=data)


@dataclass
class Check:
    net: str
    batch: int
    measured: float  # the median of its passes
    passes: tuple[float, ...]
    predicted: dict[str, float]
    interval: dict[str, tuple[float, float]]
    outside: list[str]

    def error(self, form: str) -> float:
        return self.predicted[form] / self.measured - 1.0

    def covered(self, form: str) -> bool:
        low, high = self.interval[form]
        return low <= self.measured <= high

    @property
    def repeat(self) -> float | None:
        """How far the first two passes disagree: |a / b - 1| (the issue's floor: two
        independent measurements of one net)."""
        return abs(self.passes[0] / self.passes[1] - 1.0) if len(self.passes) >= 2 else None

    @property
    def single(self) -> float | None:
        """How far one pass is from the cell's mean figure: the noise left in a measurement a
        model is scored against (half the pass-to-pass difference)."""
        if len(self.passes) < 2:
            return None
        a, b = self.passes[:2]
        return abs(a - b) / (a + b)


@dataclass
class Validation:
    checks: list[Check]
    summary: dict[str, dict[str, float]]  # form -> figures; 'repeat' -> the floor
    notes: list[str] = field(default_factory=list)


def evaluate(model: LatencyModel, rows: Rows, cells: Sequence[tuple[NetSpec, int]]) -> Validation:
    """Predicted vs measured on ``cells``, from ``rows`` of the model's own source."""
    if model.source not in sources(rows):
        have = ", ".join(f"'{s.backend}' on {s.device}" for s in sources(rows)) or "none"
        raise PredictError(f"the held-out records are not of {model.source.describe()} (they are: "
                           f"{have}): measure with the backend options the model was fitted on")
    wanted = {(s.name, b) for s, b in cells}
    fitted = set(model.nets)
    checks = []
    for p in points(rows, model.source):
        if (p.spec.name, p.batch) not in wanted:
            continue
        if p.spec.name in fitted:
            raise PredictError(f"{p.spec.name} was in the fit: held-out nets must be unseen")
        preds = {f: model.predict(p.spec, p.batch, f) for f in FORMS}
        checks.append(Check(p.spec.name, p.batch, p.tiles_per_ms, p.figures,
                            {f: v.tiles_per_ms for f, v in preds.items()},
                            {f: (v.low, v.high) for f, v in preds.items()},
                            preds["additive"].outside))
    if not checks:
        raise PredictError(f"none of the {len(cells)} held-out cells drawn has a record yet: "
                           "measure them first (without --no-measure), or give the --seed and "
                           "--nets the records were measured with")
    summary = {f: {**_shares([abs(c.error(f)) for c in checks]),
                   "covered": float(np.mean([c.covered(f) for c in checks]))} for f in FORMS}
    for name in ("repeat", "single"):
        found = [x for c in checks if (x := getattr(c, name)) is not None]
        summary[name] = _shares(found) if found else {}
    notes = [] if len(checks) == len(wanted) else [
        f"{len(wanted) - len(checks)} of {len(wanted)} held-out cells have no record yet"]
    return Validation(checks, summary, notes)


def require_here(model: LatencyModel, fix: str) -> None:
    """Refuse to measure for a model of another device: its figures would not be its own."""
    from cnn_deploy.device import device_record, device_slug

    here = device_slug(device_record())
    if model.source.device != here:
        raise PredictError(f"the model speaks for {model.source.device}, and this machine is "
                           f"{here}: {fix}")


def _shares(errors: Sequence[float]) -> dict[str, float]:
    a = np.array(errors)
    return {"n": float(len(a)), "within_10": float(np.mean(a <= 0.10)),
            "within_20": float(np.mean(a <= 0.20)), "median_abs_error": float(np.median(a)),
            "p90_abs_error": float(np.quantile(a, 0.90))}


def plot(validation: Validation, path: Path, title: str) -> Path:
    """Predicted vs measured tiles/ms, log-log, with the ±10 % and ±20 % bands."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 6))
    measured = [c.measured for c in validation.checks]
    for form, marker in zip(FORMS, ("o", "x"), strict=True):
        ax.scatter(measured, [c.predicted[form] for c in validation.checks], marker=marker,
                   label=f"{form} ({validation.summary[form]['within_10']:.0%} within ±10 %)")
    lo, hi = min(measured) / 2, max(measured) * 2
    xs = np.geomspace(lo, hi, 50)
    ax.plot(xs, xs, "k-", lw=0.8)
    for band, style in ((0.10, "--"), (0.20, ":")):
        ax.plot(xs, xs * (1 + band), "k" + style, lw=0.6)
        ax.plot(xs, xs * (1 - band), "k" + style, lw=0.6)
    ax.set(xscale="log", yscale="log", xlabel="measured tiles/ms", ylabel="predicted tiles/ms",
           title=title)
    ax.legend(fontsize=8)
    from cnn_deploy.files import write_figure

    return write_figure(fig, path, "the validation plot", PredictError)


def validate(model: LatencyModel, results: Path, nets: int = 40, seed: int = 1,
             on_progress: Callable[[SweepProgress], None] | None = None,
             data: str | None = None, run: bool = True) -> Validation:
    """Draw ``nets`` held-out cells the model never saw, measure those ``results`` lacks (with
    the backend options the model's records ran with), and compare."""
    from cnn_deploy.results.tidy import load, tidy

    cells = draw(nets, seed, exclude=model.nets)
    if run:
        require_here(model, "validate it there, or fit one here")
        measure(cells, results, model.source.backend_name, model.options, on_progress, data)
    elif not results.is_file() or not results.stat().st_size:
        raise PredictError(f"no held-out records at {results}: run without --no-measure first")
    records, _ = load([results])
    return evaluate(model, tidy(records), cells)
