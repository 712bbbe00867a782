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


def build_candidates(name: str) -> list[dict[str, Any]]:
    """Every combination of the backend's build space, the builder's defaults (each value
    list's first) first, as an empty dict."""
    space = registry.get(name).build_space
    keys = list(space)
    return [{k: v for k, v in zip(keys, values, strict=True) if v != space[k][0]}
            for values in itertools.product(*(space[k] for k in keys))]


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
    build: bool = False  # options of the engine build (the backend's build_space), not its runner

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


MIN_DECIDING_PROCESSES = 3  # with fewer, the process-to-process spread is not sampled


def search(target: Target, backends: Sequence[str], batches: Sequence[int], *,
           timing: TimingConfig = TUNE_TIMING, processes: int = 3,
           on_cell: Callable[[Measurement], None] | None = None, seed: int = 0) -> list[Choice]:
    """Time every candidate of every backend: ``processes`` fresh processes, each running every
    candidate in its own shuffled order (so a slow phase of the machine does not always hit
    the same candidate)."""
    from cnn_deploy.bench.targets import usable

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
    cells = _rounds(len(rows), processes, seed, on_cell, lambda order: [
        (Plan(target, tuple(rows[i] for i in order), tuple(batches), timing, None), order)])
    return [choice for name in dict.fromkeys(n for n, _ in given)
            if (choice := _choose(name, given, cells, timing, batches, processes)) is not None]


def search_builds(backend: str, builds: Sequence[tuple[dict[str, Any], Target]],
                  batches: Sequence[int], *, timing: TimingConfig = TUNE_TIMING,
                  processes: int = 3, on_cell: Callable[[Measurement], None] | None = None,
                  seed: int = 0) -> Choice | None:
    """Time one engine per value of ``backend``'s build space (``builds``: the build options,
    empty for the builder's default, and the engine's target), each with the runner's
    defaults, in ``processes`` rounds of fresh processes, the engines in a shuffled order each
    round; keep a build setting by the same rule as ``search``."""
    import dataclasses

    row = BackendConfig(backend, registry.get(backend).resolve({}))
    given = [(backend, dict(options)) for options, _ in builds]
    cells = _rounds(len(builds), processes, seed, on_cell, lambda order: [
        (Plan(builds[i][1], (row,), tuple(batches), timing, None), [i]) for i in order])
    choice = _choose(backend, given, cells, timing, batches, processes)
    return None if choice is None else dataclasses.replace(choice, build=True)


def _rounds(count: int, processes: int, seed: int,
            on_cell: Callable[[Measurement], None] | None,
            plans: Callable[[list[int]], list[tuple[Plan, list[int]]]]) -> list[Measurement]:
    """``processes`` rounds over ``count`` candidates, each round in its own shuffled order
    (a slow phase of the machine does not always hit the same candidate): ``plans(order)``
    gives the plans to run, each with the candidate of each of its rows; every cell comes
    back with its candidate as ``row`` and its round as ``process``."""
    import dataclasses
    import random

    from cnn_deploy.bench.workers import run_plan

    cells = []
    for process in range(processes):
        order = list(range(count))
        random.Random(seed * 1000 + process).shuffle(order)
        for plan, candidate in plans(order):
            for cell in run_plan(plan, 1):
                cell = dataclasses.replace(cell, row=candidate[cell.row], process=process)
                cells.append(cell)
                if on_cell is not None:
                    on_cell(cell)
    return cells


def _choose(name: str, given: list[tuple[str, dict[str, Any]]], cells: list[Measurement],
            timing: TimingConfig, batches: Sequence[int], processes: int) -> Choice | None:
    """The backend's choice: the best geometric mean over the batches, kept only when it beat
    the defaults in every process at every batch, beyond both 95 % intervals, with at least
    MIN_DECIDING_PROCESSES processes; else the defaults."""
    mine = [i for i, (n, _) in enumerate(given) if n == name]
    default = next((i for i in mine if not given[i][1]), None)
    if default is None:  # the defaults cannot run here: nothing to compare with
        return None
    by_row: dict[int, dict[int, Summary]] = {}
    for s in summarise_cells([c for c in cells if c.row in mine], timing):
        by_row.setdefault(s.row, {})[s.batch] = s
    complete = [i for i in mine if set(by_row.get(i, {})) >= set(batches)]
    if default not in complete:
        return None
    per_process: dict[tuple[int, int], dict[int, float]] = {}
    for c in cells:
        per_process.setdefault((c.row, c.batch), {})[c.process] = c.stats.tiles_per_ms

    def score(i: int) -> float:
        return _geomean([by_row[i][b].stats.tiles_per_ms for b in batches])

    best = max(complete, key=score)

    def beats(b: int) -> bool:
        mine_b, base_b = per_process[(best, b)], per_process[(default, b)]
        paired = [mine_b[p] > base_b[p] for p in mine_b if p in base_b]
        return (len(paired) >= MIN_DECIDING_PROCESSES and all(paired)
                and not intervals.overlap(by_row[best][b].ci, by_row[default][b].ci))

    decided = best != default and processes >= MIN_DECIDING_PROCESSES and all(
        beats(b) for b in batches)
    keep = best if decided else default
    tiles = {b: by_row[keep][b].stats.tiles_per_ms for b in batches}
    base = {b: by_row[default][b].stats.tiles_per_ms for b in batches}
    tried = [{"options": given[i][1], "label": next(iter(by_row[i].values())).label,
              "tiles_per_ms": {str(b): s.stats.tiles_per_ms for b, s in by_row[i].items()},
              "ci95": {str(b): list(s.ci) if s.ci else None for b, s in by_row[i].items()}}
             for i in mine if i in by_row]
    return Choice(name, given[keep][1], by_row[keep][batches[0]].label, tiles, base,
                  _geomean([tiles[b] / base[b] for b in batches]), decided, tried,
                  None if best == keep else given[best][1])


def check_out(path: Path) -> None:
    """Before any measuring: ``path`` can be written and is not something else's file."""
    if path.is_dir():
        raise BenchError(f"{path} is a folder: give a .json file path for the tuning file")
    if path.suffix.lower() != ".json":
        raise BenchError(f"{path}: a tuning file is .json; choose a .json path")
    if path.exists():
        try:
            data = json.loads(path.read_text())
            foreign = not (isinstance(data, dict) and "backends" in data and "schema" in data)
        except (OSError, ValueError):
            foreign = True
        if foreign:
            raise BenchError(f"{path} exists and is not a tuning file: choose another path")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BenchError(f"cannot create {path.parent} ({exc.strerror}): choose another "
                         "path") from None


def save(choices: Sequence[Choice], path: Path, *, net: str, batches: Sequence[int],
         device: dict[str, Any]) -> Path:
    """Write (or update: other backends' entries are kept) the tuning file."""
    from cnn_deploy.device import library_versions

    entries: dict[str, Any] = {}
    if path.is_file():
        try:
            entries = dict(json.loads(path.read_text()).get("backends") or {})
        except (OSError, ValueError, AttributeError):
            entries = {}
    versions = library_versions(registry.packages())
    for c in choices:
        decided = {**c.to_dict(), "net": net, "batches": list(batches),
                   "versions": {p: versions[p] for p in registry.get(c.backend).packages
                                if p in versions},
                   "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        found = entries.get(c.backend)
        old: dict[str, Any] = found if isinstance(found, dict) else {}
        if c.build:  # the engine build's options, beside whatever tuned the runner
            entries[c.backend] = {**old, "options": old.get("options") or {},
                                  "build": decided}
        else:
            entries[c.backend] = {**decided, **({"build": old["build"]} if "build" in old else {})}
    data = {"schema": SCHEMA, "device_key": path.stem, "device": device, "backends": entries}
    try:
        return write_atomic(path, json.dumps(data, indent=1) + "\n", "the tuning file", BenchError)
    except OSError as exc:
        raise BenchError(f"cannot write {path} ({exc.strerror}): choose another path") from None


def load(path: Path) -> dict[str, dict[str, Any]] | None:
    """backend -> its entry (options, versions...) from a tuning file; None when there is
    none. A damaged or foreign file is an error naming the fix (not silently ignored)."""
    if path.is_dir():
        raise BenchError(f"the tuning file {path} is a folder: remove it, or pass --no-tune")
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
        if data.get("schema") != SCHEMA:
            raise ValueError(f"schema {data.get('schema')!r}, expected {SCHEMA}")
        tuned = {str(name): dict(entry) for name, entry in data["backends"].items()}
        for entry in tuned.values():
            entry["options"] = dict(entry["options"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise BenchError(f"the tuning file {path} is unreadable ({exc}): run `cnndeploy tune` "
                         "again, or pass --no-tune") from None
    return tuned


def build_options(backend: str, path: Path | None) -> tuple[dict[str, Any], str | None]:
    """The engine build options ``tune`` kept for ``backend`` in the tuning file at ``path``
    (e.g. TensorRT's ``opt_level``), and a note saying so; nothing where there are none, or
    where they were tuned with another version of the backend's packages (a note says so)."""
    from cnn_deploy.device import library_versions

    tuned = load(path) if path is not None else None
    build = (tuned or {}).get(backend, {}).get("build")
    if not isinstance(build, dict) or not isinstance(build.get("options"), dict) \
            or not build["options"]:
        return {}, None
    values = build["options"]
    space = registry.get(backend).build_space
    if any(k not in space or v not in space[k] for k, v in values.items()):
        return {}, (f"tuned build options for {backend} in {path} do not apply ({values}): the "
                    "builder's defaults are used; run `cnndeploy tune` again")
    now = library_versions(registry.packages())
    changed = [p for p, v in (build.get("versions") or {}).items() if now.get(p) != v]
    if changed:
        return {}, (f"{backend}'s build was tuned with another {', '.join(changed)}: the "
                    "builder's defaults are used; run `cnndeploy tune` again")
    on = f" on {build['net']}" if isinstance(build.get("net"), str) else ""
    return dict(values), (f"tuned for this device{on} ({path}): " + ", ".join(
        f"{backend}.{k}={v}" for k, v in values.items()) + " (--no-tune for the defaults; "
        "tune on this network for its own)")


def apply(options: dict[str, dict[str, Any]], backends: Sequence[str], path: Path
          ) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """``options`` plus the tuned options of each of ``backends`` the user gave no options;
    and one note per backend. Only keys of a backend's tune space are taken (a tuning file
    never moves a backend to another device or provider), and only with the backend's
    packages at the versions that were tuned."""
    from cnn_deploy.device import library_versions

    tuned = load(path)
    if not tuned:
        return options, []
    out = {k: dict(v) for k, v in options.items()}
    notes = []
    now = library_versions(registry.packages())
    for name, entry in tuned.items():
        values = entry["options"]
        if name in out or not values or name not in backends:
            continue
        try:
            backend = registry.get(name)
            outside = [k for k in values if k not in backend.tune_space]
            if outside:
                raise BenchError(f"{', '.join(outside)} not tuned by `cnndeploy tune`")
            backend.resolve(values)
        except Exception as exc:  # a hand-edited file or another version's: say so, keep defaults
            notes.append(f"tuned options for {name} in {path} do not apply ({exc}): the "
                         "defaults run instead; run `cnndeploy tune` again")
            continue
        changed = {p: (v, now.get(p)) for p, v in (entry.get("versions") or {}).items()
                   if now.get(p) != v}
        if changed:
            notes.append(f"{name} was tuned with " + ", ".join(
                f"{p} {old}" for p, (old, _) in changed.items()) + " and this is " + ", ".join(
                f"{p} {new}" for p, (_, new) in changed.items()) + ": its defaults run; run "
                "`cnndeploy tune` again")
            continue
        out[name] = dict(values)
        notes.append(f"tuned for this device ({path}): " + ", ".join(
            f"{name}.{k}={v}" for k, v in values.items()) + " (--no-tune for the defaults)")
    return out, notes
