"""``cnndeploy tune``: per-device backend defaults, measured instead of assumed.

A constant "fastest" default is wrong on some machine (ONNX Runtime's ``extended`` beat ``all``
by ~20 % on one 2-core CPU and lost by 1.9x on another). ``search`` times every combination of
each backend's ``tune_space`` (its registry entry) for one network at a few batches, in fresh
processes, with the one harness, and keeps per backend the setting with the best geometric
mean of tiles/ms over the batches, but only where it beats the backend's own defaults beyond
their 95 % intervals at every batch; otherwise the defaults stay ("cannot tell"). The winners
go to a per-device tuning file, ``results/tuning/<device>.json``, which ``bench``, ``sweep``
and ``stream`` apply to every backend the user gave no options (``--no-tune`` for the raw
defaults); every record says which options it ran with. The baseline row (torch eager NCHW)
is never tuned.
"""

from __future__ import annotations

import itertools
import json
import math
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cnn_deploy.backends import registry
from cnn_deploy.backends.base import Target
from cnn_deploy.bench import intervals
from cnn_deploy.bench.plan import BackendConfig, Measurement, Plan
from cnn_deploy.bench.summary import Summary, summarise_cells
from cnn_deploy.bench.timing import TimingConfig
from cnn_deploy.errors import BenchError
from cnn_deploy.files import write_atomic

SCHEMA = 1
TUNING_DIR = Path("results") / "tuning"
TUNE_TIMING = TimingConfig(warmup_ms=100.0, min_duration_ms=500.0, min_iterations=5)


def device_key(record: dict[str, Any]) -> str:
    """The tuning file's name: the device slug, plus the CPU's vector width (the same CPU
    model name comes with and without AVX-512 on clouds)."""
    from cnn_deploy.device import device_slug

    flags = ""
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
        flags = "-avx512" if re.search(r"\bavx512f\b", text) else "-avx2" if " avx2" in text else ""
    except OSError:
        pass
    return device_slug(record) + flags


def tuning_path(record: dict[str, Any], folder: Path = TUNING_DIR) -> Path:
    return folder / f"{device_key(record)}.json"


def candidates(name: str) -> list[dict[str, Any]]:
    """Every combination of the backend's tune space, the defaults first."""
    entry = registry.get(name)
    keys = list(entry.tune_space)
    combos = [dict(zip(keys, values, strict=True))
              for values in itertools.product(*(entry.tune_space[k] for k in keys))]
    default = entry.resolve({})
    given = [{k: v for k, v in c.items() if v != default.get(k)} for c in combos]
    unique: list[dict[str, Any]] = [{}]
    for c in given:
        if c not in unique:
            unique.append(c)
    return unique


@dataclass
class Choice:
    """One backend's tuning: the options kept (empty: its defaults) and what decided it."""

    backend: str
    options: dict[str, Any]
    label: str
    tiles_per_ms: dict[int, float]
    default_tiles_per_ms: dict[int, float]
    gain: float  # geometric mean over batches of kept / default
    decided: bool  # beat the defaults beyond the 95 % intervals at every batch
    tried: list[dict[str, Any]]
    best: dict[str, Any] | None = None  # the fastest measured, where it is not what was kept

    @property
    def verdict(self) -> str:
        if self.decided:
            return "tuned: beats the defaults beyond the 95 % intervals at every batch"
        if self.best is None:
            return "defaults: the fastest setting measured"
        return ("defaults kept: " + ", ".join(f"{k}={v}" for k, v in self.best.items())
                + " measured faster, but within the 95 % intervals (cannot tell)")

    def to_dict(self) -> dict[str, Any]:
        return {"options": self.options, "label": self.label,
                "tiles_per_ms": {str(b): v for b, v in self.tiles_per_ms.items()},
                "default_tiles_per_ms": {str(b): v for b, v in self.default_tiles_per_ms.items()},
                "gain": self.gain, "decided": self.decided, "verdict": self.verdict,
                "tried": self.tried}


def _geomean(values: Sequence[float]) -> float:
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else 0.0


def search(target: Target, backends: Sequence[str], batches: Sequence[int], *,
           timing: TimingConfig = TUNE_TIMING, processes: int = 2,
           on_cell: Callable[[Measurement], None] | None = None) -> list[Choice]:
    """Time every candidate of every backend (each in ``processes`` fresh processes)."""
    from cnn_deploy.bench.targets import usable
    from cnn_deploy.bench.workers import run_plan

    rows: list[BackendConfig] = []
    given: list[tuple[str, dict[str, Any]]] = []
    for name in backends:
        entry = registry.get(name)
        if not entry.tune_space or entry.missing(target) is not None:
            continue
        for options in candidates(name):
            resolved = entry.resolve(options)
            if usable(entry, resolved)[0]:
                rows.append(BackendConfig(name, resolved))
                given.append((name, options))
    if not rows:
        raise BenchError("nothing to tune here: none of " + ", ".join(backends) + " is usable "
                         "with a tune space for this model (`cnndeploy backends`)")
    cells = []
    for cell in run_plan(Plan(target, tuple(rows), tuple(batches), timing, None), processes):
        cells.append(cell)
        if on_cell is not None:
            on_cell(cell)
    by_row: dict[int, dict[int, Summary]] = {}
    for s in summarise_cells(cells, timing):
        by_row.setdefault(s.row, {})[s.batch] = s
    choices = []
    for name in dict.fromkeys(n for n, _ in given):
        mine = [i for i, (n, _) in enumerate(given) if n == name and i in by_row]
        if not mine:
            continue
        default = next((i for i in mine if not given[i][1]), mine[0])
        best = max(mine, key=lambda i: _geomean([s.stats.tiles_per_ms for s in by_row[i].values()]))
        decided = best != default and all(
            not intervals.overlap(by_row[best][b].ci, by_row[default][b].ci)
            and by_row[best][b].stats.tiles_per_ms > by_row[default][b].stats.tiles_per_ms
            for b in by_row[best] if b in by_row[default])
        keep = best if decided else default
        tiles = {b: s.stats.tiles_per_ms for b, s in by_row[keep].items()}
        base = {b: s.stats.tiles_per_ms for b, s in by_row[default].items()}
        tried = [{"options": given[i][1], "label": next(iter(by_row[i].values())).label,
                  "tiles_per_ms": {str(b): s.stats.tiles_per_ms for b, s in by_row[i].items()},
                  "ci95": {str(b): list(s.ci) if s.ci else None for b, s in by_row[i].items()}}
                 for i in mine]
        choices.append(Choice(name, given[keep][1], next(iter(by_row[keep].values())).label, tiles,
                              base, _geomean([tiles[b] / base[b] for b in tiles if b in base]),
                              decided, tried, None if best == keep else given[best][1]))
    return choices


def save(choices: Sequence[Choice], path: Path, *, net: str, batches: Sequence[int],
         device: dict[str, Any]) -> Path:
    data = {"schema": SCHEMA, "device_key": path.stem, "device": device, "net": net,
            "batches": list(batches), "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "backends": {c.backend: c.to_dict() for c in choices}}
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_atomic(path, json.dumps(data, indent=1) + "\n", "the tuning file", BenchError)


def load(path: Path) -> dict[str, dict[str, Any]] | None:
    """backend -> options from a tuning file; None when there is none. A damaged or foreign
    file is an error naming the fix (it would otherwise be ignored silently)."""
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
        if data.get("schema") != SCHEMA:
            raise ValueError(f"schema {data.get('schema')!r}, expected {SCHEMA}")
        tuned = {name: dict(entry["options"]) for name, entry in data["backends"].items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise BenchError(f"the tuning file {path} is unreadable ({exc}): run `cnndeploy tune` "
                         "again, or pass --no-tune") from None
    return tuned


def apply(options: dict[str, dict[str, Any]], backends: Sequence[str], path: Path
          ) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """``options`` plus the tuned options of each of ``backends`` the user gave no options;
    and one note per backend tuned."""
    tuned = load(path)
    if not tuned:
        return options, []
    out = {k: dict(v) for k, v in options.items()}
    applied = []
    for name, values in tuned.items():
        if name in out or not values or name not in backends:
            continue
        try:
            entry = registry.get(name)
            entry.resolve(values)  # still valid for this version's options
        except Exception as exc:  # a file from another version: say so, keep the defaults
            applied.append(f"tuned options for {name} in {path} no longer apply ({exc}): ignored")
            continue
        out[name] = dict(values)
        applied.append(f"tuned for this device ({path}): " + ", ".join(
            f"{name}.{k}={v}" for k, v in values.items()) + " (--no-tune for the defaults)")
    return out, applied
