"""Which network fits a time budget: candidates' tiles/ms (measured where a record has it,
predicted with an interval elsewhere) against their test accuracy, the Pareto front, and the
pick: the most accurate network that meets the budget even at its interval's slow end.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cnn_deploy.arch import NetSpec
from cnn_deploy.errors import PredictError, SpecError
from cnn_deploy.results.tidy import Rows
from cnn_deploy.study.perfmodel import LatencyModel, Point, Source, points, sources
from cnn_deploy.study.sweep import SweepCell, SweepProgress, run_sweep

MAX_FRAME_BATCH = 4096  # a frame's tiles go in batches of at most this (stream's default)


@dataclass(frozen=True)
class Budget:
    """A frame of ``tiles_per_frame`` tiles within ``ms_per_frame``, or ``tiles_per_ms`` at
    ``batch``; either way a required tiles/ms at one batch."""

    ms_per_frame: float | None = None
    tiles_per_frame: int | None = None
    tiles_per_ms: float | None = None
    batch: int = 1024

    def __post_init__(self) -> None:
        frame = self.ms_per_frame is not None or self.tiles_per_frame is not None
        if frame == (self.tiles_per_ms is not None):
            raise PredictError("give a budget: --budget-ms with --tiles-per-frame, or "
                               "--tiles-per-ms (not both)")
        if frame and (self.ms_per_frame is None or self.tiles_per_frame is None):
            raise PredictError("--budget-ms and --tiles-per-frame go together: a frame of N "
                               "tiles within B ms")
        for name, value in (("--budget-ms", self.ms_per_frame), ("--tiles-per-ms", self.tiles_per_ms)):
            if value is not None and not (value > 0 and math.isfinite(value)):
                raise PredictError(f"{name} must be a positive number, got {value}")
        if self.tiles_per_frame is not None and self.tiles_per_frame < 1:
            raise PredictError(f"--tiles-per-frame must be at least 1, got {self.tiles_per_frame}")
        if not 1 <= self.batch <= MAX_FRAME_BATCH:
            raise PredictError(f"--batch must be within 1..{MAX_FRAME_BATCH}, got {self.batch}")

    @property
    def at_batch(self) -> int:
        return min(self.tiles_per_frame, MAX_FRAME_BATCH) if self.tiles_per_frame else self.batch

    @property
    def required(self) -> float:
        """Tiles/ms a network must reach at ``at_batch``."""
        if self.tiles_per_ms is not None:
            return self.tiles_per_ms
        assert self.tiles_per_frame is not None and self.ms_per_frame is not None
        return self.tiles_per_frame / self.ms_per_frame

    def describe(self) -> str:
        if self.tiles_per_ms is not None:
            return f"{self.tiles_per_ms:g} tiles/ms at batch {self.batch}"
        return (f"{self.tiles_per_frame} tiles in {self.ms_per_frame:g} ms per frame "
                f"(>= {self.required:.3g} tiles/ms at batch {self.at_batch})")


@dataclass
class Candidate:
    spec: NetSpec
    batch: int
    tiles_per_ms: float
    low: float
    high: float
    measured: bool
    accuracy: float | None = None
    outside: list[str] = field(default_factory=list)
    front: bool = False

    def status(self, required: float) -> str:
        """'yes' (even at the interval's slow end), 'marginal' (only at the figure) or 'no'."""
        if self.low >= required:
            return "yes"
        return "marginal" if self.tiles_per_ms >= required else "no"


@dataclass
class Selection:
    budget: Budget
    candidates: list[Candidate]  # fastest first
    pick: Candidate | None
    why: str
    notes: list[str] = field(default_factory=list)


def candidate_specs(model: LatencyModel, extra: Sequence[NetSpec] = ()) -> list[NetSpec]:
    """Every net behind the model (an adapted model's source's too), plus ``extra`` (a grid),
    each once."""
    specs: dict[str, NetSpec] = {}
    for name in model.nets:
        try:
            specs.setdefault(name, NetSpec.from_name(name))
        except SpecError:
            continue
    for s in extra:
        specs.setdefault(s.name, s)
    return list(specs.values())


def accuracies(rows: Rows, checkpoints: dict[str, float] | None = None) -> dict[str, float]:
    """Best known test accuracy per net: records of trained runs, then checkpoints."""
    out: dict[str, float] = {}
    for r in rows:
        acc = r.get("test_accuracy")
        if isinstance(acc, float) and 0.0 <= acc <= 1.0 and isinstance(r.get("net"), str):
            out[r["net"]] = max(acc, out.get(r["net"], 0.0))
    for name, acc in (checkpoints or {}).items():
        out[name] = max(acc, out.get(name, 0.0))
    return out


def measured(rows: Rows, source: Source) -> dict[tuple[str, int], Point]:
    """(net, batch) -> the measured cell of ``source`` in ``rows``."""
    return {(p.spec.name, p.batch): p for p in points(rows, source)} \
        if source in sources(rows) else {}


def _figure(model: LatencyModel, spec: NetSpec, batch: int, seen: dict[tuple[str, int], Point]
            ) -> tuple[float, float, float, bool, list[str]]:
    """(tiles/ms, low, high, measured, outside) of one batch: a cell measured in several
    records spans their range; measured once, the model's interval around its figure; else
    the prediction."""
    got = seen.get((spec.name, batch))
    if got is not None and len(got.figures) >= 2:
        return got.tiles_per_ms, min(got.figures), max(got.figures), True, []
    p = model.predict(spec, batch)
    if got is not None:
        below, above = p.low / p.tiles_per_ms, p.high / p.tiles_per_ms
        return got.tiles_per_ms, got.tiles_per_ms * below, got.tiles_per_ms * above, True, []
    return p.tiles_per_ms, p.low, p.high, False, p.outside


def candidate(model: LatencyModel, spec: NetSpec, budget: Budget,
              seen: dict[tuple[str, int], Point], accuracy: float | None) -> Candidate:
    """One candidate at the budget: a frame of more than MAX_FRAME_BATCH tiles is full batches
    plus a last, smaller one, each timed at its own batch."""
    batch = budget.at_batch
    frame = budget.tiles_per_frame or batch
    full, rest = divmod(frame, MAX_FRAME_BATCH) if frame > MAX_FRAME_BATCH else (0, frame)
    parts = [(MAX_FRAME_BATCH, full)] if full else []
    parts += [(rest, 1)] if rest else []
    got = [_figure(model, spec, b, seen) for b, _ in parts]
    if len(got) == 1:
        value, low, high, was, outside = got[0]
        return Candidate(spec, batch, value, low, high, was, accuracy, outside)

    def rate(figures: list[float]) -> float:  # tiles per ms over the whole frame
        return frame / sum(n * b / f for f, (b, n) in zip(figures, parts, strict=True))

    return Candidate(spec, batch, rate([g[0] for g in got]), rate([g[1] for g in got]),
                     rate([g[2] for g in got]), all(g[3] for g in got), accuracy,
                     sorted({o for g in got for o in g[4]}))


def rank(model: LatencyModel, specs: Sequence[NetSpec], budget: Budget, rows: Rows,
         accuracy: dict[str, float], min_accuracy: float | None = None,
         floor_is_final: bool = True) -> Selection:
    """Every candidate at the budget, the Pareto front of accuracy vs tiles/ms and the pick;
    an impossible budget, or (``floor_is_final``: no training is to follow) an accuracy floor
    no candidate reaches, is an error naming the best there is."""
    if min_accuracy is not None and not 0.0 < min_accuracy <= 1.0:
        raise PredictError(f"--min-accuracy is a fraction in (0, 1], got {min_accuracy}")
    if not specs:
        raise PredictError("no candidate networks: give --grid or a model fitted on a sweep")
    seen = measured(rows, model.source)
    out = [candidate(model, spec, budget, seen, accuracy.get(spec.name)) for spec in specs]
    out.sort(key=lambda c: -c.tiles_per_ms)
    _mark_front(out)
    need = budget.required
    fastest = out[0]
    if fastest.tiles_per_ms < need:
        raise PredictError(
            f"no candidate meets {budget.describe()}: the fastest, {fastest.spec.name}, "
            f"{'measures' if fastest.measured else 'is predicted at'} {fastest.tiles_per_ms:.3g} "
            f"tiles/ms there; relax the budget, or add smaller nets with --grid")
    known = [c for c in out if c.accuracy is not None]
    if floor_is_final and min_accuracy is not None and known \
            and max(c.accuracy or 0.0 for c in known) < min_accuracy:
        best = max(known, key=lambda c: c.accuracy or 0.0)
        raise PredictError(f"no candidate reaches --min-accuracy {min_accuracy:.2%}: the best "
                           f"known is {best.spec.name} at {best.accuracy:.2%}; lower the floor "
                           "or train more candidates (--train-top K)")
    fits = [c for c in known if c.status(need) == "yes"
            and (min_accuracy is None or (c.accuracy or 0.0) >= min_accuracy)]
    notes: list[str] = []
    if fits:
        pick = max(fits, key=lambda c: (c.accuracy or 0.0, c.tiles_per_ms))
        why = (f"the most accurate network that meets {budget.describe()} even at the slow end "
               f"of its interval ({pick.low:.3g} tiles/ms, {_margin(pick.low, need)} margin)")
        return Selection(budget, out, pick, why, notes)
    unknown = [c for c in out if c.accuracy is None and c.status(need) == "yes"]
    why = ("no network with a known accuracy meets the budget with margin"
           + (f"; {len(unknown)} untrained candidates do: train them with --train-top K"
              if unknown else ""))
    return Selection(budget, out, None, why, notes)


def _margin(low: float, need: float) -> str:
    return f"{low / need - 1.0:+.0%}"


def _mark_front(cands: list[Candidate]) -> None:
    """The Pareto front of accuracy vs tiles/ms: no other candidate is both faster and at
    least as accurate (candidates without an accuracy are not on it)."""
    best = -1.0
    for c in cands:  # fastest first
        if c.accuracy is not None and c.accuracy > best:
            c.front, best = True, c.accuracy


def to_train(selection: Selection, k: int) -> list[Candidate]:
    """The ``k`` candidates to train: meeting the budget with margin, accuracy unknown, the
    most compute per tile first (the likeliest to be accurate among those that fit)."""
    need = selection.budget.required
    todo = [c for c in selection.candidates if c.accuracy is None and c.status(need) == "yes"]
    return sorted(todo, key=lambda c: -c.spec.flops_per_tile)[:k]


def summary(selection: Selection) -> dict[str, Any]:
    """A JSON-ready form of ``selection``."""
    need = selection.budget.required
    return {"budget": selection.budget.describe(), "required_tiles_per_ms": need,
            "batch": selection.budget.at_batch,
            "pick": selection.pick.spec.name if selection.pick else None, "why": selection.why,
            "candidates": [{"net": c.spec.name, "tiles_per_ms": c.tiles_per_ms, "low": c.low,
                            "high": c.high, "source": "measured" if c.measured else "predicted",
                            "accuracy": c.accuracy, "meets": c.status(need), "front": c.front,
                            "outside": c.outside} for c in selection.candidates],
            "notes": selection.notes}


def checkpoint_accuracies(models: Path, specs: Sequence[NetSpec], notes: list[str] | None = None
                          ) -> dict[str, float]:
    """Test accuracy of each candidate's checkpoint ``models/<net>.pt`` where there is one; a
    damaged checkpoint is no accuracy (said in ``notes``), not a failed selection."""
    from cnn_deploy.errors import ModelError
    from cnn_deploy.train import load_checkpoint

    if models.exists() and not models.is_dir():
        raise PredictError(f"--models {models} is a file: give the folder of checkpoints")
    out: dict[str, float] = {}
    for spec in specs:
        path = models / f"{spec.name}.pt"
        if not path.is_file():
            continue
        try:
            _, _, checkpoint = load_checkpoint(path)
        except ModelError as exc:
            if notes is not None:
                notes.append(f"no accuracy from {path}: {exc}")
            continue
        acc = checkpoint.get("metrics", {}).get("test_accuracy")
        if isinstance(acc, float) and 0.0 <= acc <= 1.0:
            out[spec.name] = acc
    return out


def choose(model: LatencyModel, budget: Budget, records: Sequence[Path], *,
           min_accuracy: float | None = None, extra: Sequence[NetSpec] = (),
           models: Path = Path("models"), train_top: int = 0, epochs: int = 2,
           results: Path = Path("results/select.jsonl"), data: str | None = None,
           on_progress: Callable[[SweepProgress], None] | None = None) -> Selection:
    """Rank the candidates; with ``train_top`` K, train the K most promising candidates of
    unknown accuracy that meet the budget, measure them (two passes, fresh processes) into
    ``results``, and rank again with what they measured."""
    from cnn_deploy.results.tidy import load, tidy

    if not 0 <= train_top <= 20:
        raise PredictError(f"--train-top must be within 0..20, got {train_top}")
    if train_top and epochs < 1:
        raise PredictError(f"--epochs must be at least 1, got {epochs}")
    specs = candidate_specs(model, extra)
    notes: list[str] = []
    if train_top:
        from cnn_deploy.results.store import check_writable
        from cnn_deploy.study.heldout import require_here

        require_here(model, "train and measure candidates on the device the model is of")
        check_writable(results)

    def rows_now() -> Rows:
        given = [*records, *([results] if results.is_file() and results.stat().st_size else [])]
        files = list({p.resolve(): p for p in given}.values())  # one file named twice: once
        unique = {json.dumps(r, sort_keys=True): r for r in load(files)[0]} if files else {}
        return tidy(list(unique.values()))  # a copied file's records count once

    rows = rows_now()
    selection = rank(model, specs, budget, rows,
                     accuracies(rows, checkpoint_accuracies(models, specs, notes)), min_accuracy,
                     floor_is_final=not train_top)
    if not train_top:
        selection.notes += notes
        return selection
    eligible = to_train(selection, len(specs))
    todo = [c for c in eligible if not (models / f"{c.spec.name}.pt").exists()][:train_top]
    last = eligible.index(todo[-1]) if todo else len(eligible) - 1
    notes += [f"not training {c.spec.name}: {models / (c.spec.name + '.pt')} exists (a checkpoint "
              "is never overwritten); move it away to let --train-top train it"
              for c in eligible[:last + 1] if c not in todo]
    if not todo:
        selection.notes += [*notes, "--train-top: no candidate of unknown accuracy that meets the "
                            "budget is left to train"]
        return selection
    setting = tuple(sorted(model.options.items()))
    cells = [SweepCell(c.spec, c.batch, model.source.backend_name, "fp32", setting) for c in todo]
    run_sweep(cells, results, group="select", passes=2, train_epochs=epochs, models=models,
              data=data, on_progress=on_progress)
    rows = rows_now()
    again = rank(model, specs, budget, rows,
                 accuracies(rows, checkpoint_accuracies(models, specs)), min_accuracy)
    again.notes += [*notes, f"trained and measured {', '.join(c.spec.name for c in todo)} "
                            f"({epochs} epochs each) into {results}"]
    return again


def grid_specs(text: str) -> list[NetSpec]:
    """Candidates from a grid over NetSpec fields (sweep's syntax and its size limit; no batch:
    the budget sets it)."""
    from cnn_deploy.study.sweep import parse_grid

    axes = [p.partition("=")[0].strip() for p in text.split(";") if p.strip()]
    if "batch" in axes:
        raise PredictError("--grid in select takes network fields only: the budget sets the batch "
                           "(--tiles-per-frame or --batch)")
    return list(dict.fromkeys(c.spec for c in parse_grid(text)))
