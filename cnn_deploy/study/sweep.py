"""The thesis's study (§3.1) as one resumable, shardable sweep over (net, batch) cells.

Groups: 1 fc_layers 1-5 x batch 16..4096; 2 conv_layers 1-5 x the same batches;
3 fc_layers 1-5 x neurons 128..2048 (batch 1024); 4 conv_layers 1-5 x depth 5..80 (batch
1024); or a custom ``--grid`` over any NetSpec field x batch. A cell is (net, batch,
backend, precision), keyed ``lenet_1c2f|b256|onnxruntime|fp32``; its record is appended
as soon as it finishes, so a killed sweep loses at most the running cell and a rerun
skips every cell already in the results file. ``shard k/n`` takes cells i with
i % n == k - 1 of the deterministic full order.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from cnn_deploy.arch import THESIS_GROUPS, NetSpec, thesis_group
from cnn_deploy.bench import intervals
from cnn_deploy.bench.plan import BackendConfig, Measurement, Plan
from cnn_deploy.bench.summary import summarise_cells
from cnn_deploy.bench.timing import TimingConfig
from cnn_deploy.errors import BenchError
from cnn_deploy.results.claims import Claims
from cnn_deploy.results.tidy import cell_passes

GROUPS = (*THESIS_GROUPS, "all", "coverage")
# `--group coverage`: 40 cells along the axes the thesis groups never vary, for a latency model
# that predicts beyond them (issue 12): batches below 16, no hidden FC layer, 3x3 kernels,
# same padding, and wide FC layers at tiny batches (weights beyond a CPU's last-level cache,
# which the model's DRAM term needs two nets of)
COVERAGE_GRIDS = ("conv_layers=1,3,5;fc_layers=0,2;batch=1,4",
                  "kernel=3;padding=0,1;conv_layers=1,3,5;fc_layers=1;batch=8,256",
                  "padding=2;conv_layers=2,4;fc_layers=0,1;batch=2,512",
                  "conv_layers=1;fc_layers=1,3;neurons=2048,4096;batch=1,8")
METHODS = ("default", "thesis")
FLOPS_PER_S = 100e9  # a rough sustained rate for the estimate, not a measurement
PLAN_OVERHEAD_S = 1.5  # fresh worker process + ONNX Runtime session
NET_OVERHEAD_S = 1.0  # exporting the untrained net to ONNX
DRIFT_WARNING = 0.05  # thesis Table 1: the slowdown from the first to the last loop
PASS_WIDTH = 0.03  # a cell gets another pass while its 95 % interval is wider than +-3 %
DEFAULT_PASSES = 3  # the noise-aware default: 2 passes, a 3rd where the interval is wide
# A grid is counted before it is built: the thesis's four groups are 140 cells; 5,000 cells of
# a second or more each is already a day. 'fc_layers=1..10000' ran for minutes building specs.
MAX_CELLS = 5000
MAX_PROCESSES = 100
_SPEC_FIELDS = tuple(f.name for f in fields(NetSpec))


@dataclass(frozen=True)
class SweepCell:
    spec: NetSpec
    batch: int
    backend: str = "onnxruntime"
    precision: str = "fp32"
    options: tuple[tuple[str, Any], ...] = ()  # -o options of the backend, sorted

    @property
    def key(self) -> str:
        setting = self.backend + (f"[{','.join(f'{k}={v}' for k, v in self.options)}]"
                                  if self.options else "")
        return cell_key(self.spec.name, self.batch, setting, self.precision)


def backend_setting(backend: str, option: Sequence[str] | None, precision: str = "fp32",
                    train_epochs: int | None = None, needs_gpu: bool = True
                    ) -> tuple[str, dict[str, Any]]:
    """The one backend a sweep times and its ``-o`` options, checked before any work: fp16
    only for a backend that builds engines (which needs a GPU, and trains nothing)."""
    from cnn_deploy.backends import registry
    from cnn_deploy.bench.targets import require_gpu

    names = registry.parse_backends(backend)
    if len(names) != 1:
        raise BenchError(f"--backend takes one backend per sweep, got '{backend}'")
    name = names[0]
    engines = registry.get(name).needs == "engine"
    if precision not in ("fp32", "fp16") or (precision != "fp32" and not engines):
        raise BenchError(f"--precision takes fp32, or fp16 with an engine backend (-b tensorrt), "
                         f"got '{precision}' with -b {name}")
    if engines and train_epochs:
        raise BenchError("--train-epochs with an engine backend is not supported: engines are "
                         "built from untrained nets (speed does not depend on the weights)")
    if engines and needs_gpu:
        require_gpu(f"sweep -b {name}")  # before a results file or any export
    options = registry.parse_options(option)
    stray = [b for b in options if b != name]
    if stray:
        raise BenchError(f"options given for {', '.join(stray)}, but this sweep times "
                         f"{name}: drop them or use -b {stray[0]}")
    return name, options.get(name, {})


def cell_key(net: str, batch: int, backend: str, precision: str) -> str:
    """'lenet_1c2f|b256|onnxruntime|fp32'; a backend with -o options reads
    'torch[device=cuda]', so a sweep on other settings never resumes over this one."""
    return f"{net}|b{batch}|{backend}|{precision}"


def _setting(options: dict[str, Any] | None) -> tuple[tuple[str, Any], ...]:
    return tuple(sorted((options or {}).items()))


# -- which cells ---------------------------------------------------------------
def group_cells(group: str, backend: str = "onnxruntime",
                options: dict[str, Any] | None = None, precision: str = "fp32") -> list[SweepCell]:
    """The cells of a thesis group (``all``: groups 1-4, each cell once; ``coverage``: the
    COVERAGE_GRIDS) in a fixed order."""
    if group == "coverage":
        return _unique([c for grid in COVERAGE_GRIDS
                        for c in parse_grid(grid, backend, options, precision)])
    if group == "all":
        return _unique([c for g in THESIS_GROUPS
                        for c in group_cells(g, backend, options, precision)])
    if group not in THESIS_GROUPS:
        raise BenchError(f"--group takes one of {', '.join(GROUPS)}, got '{group}'")
    nets, batches = thesis_group(group)
    return [SweepCell(s, b, backend, precision, _setting(options)) for s in nets for b in batches]


def parse_grid(text: str, backend: str = "onnxruntime",
               options: dict[str, Any] | None = None, precision: str = "fp32") -> list[SweepCell]:
    """``'fc_layers=1..5;batch=16,32;neurons=100..2048:128'`` -> cells (batch 1024 if absent).

    Values: ``a,b,c``; ``lo..hi`` (step 1); ``lo..hi:step``; ``lo..hi*factor`` (geometric).
    """
    axes: dict[str, list[int]] = {}
    counts: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in text.split(";"))):
        name, sep, values = part.partition("=")
        name = name.strip()
        if not sep or not values.strip():
            raise BenchError(f"--grid takes FIELD=VALUES separated by ';' (e.g. "
                             f"'fc_layers=1..5;batch=16,32'), got '{part}'")
        if name not in (*_SPEC_FIELDS, "batch"):
            raise BenchError(f"--grid: unknown field '{name}': use batch or one of "
                             f"{', '.join(_SPEC_FIELDS)}")
        if name in counts:
            raise BenchError(f"--grid: '{name}' is given twice")
        counts[name] = _count(name, values.strip())
    if not counts:
        raise BenchError("--grid is empty: give e.g. 'fc_layers=1..5;batch=16,32'")
    total = 1
    for n in counts.values():
        total *= n
    if total > MAX_CELLS:
        sizes = " x ".join(f"{n} {name}" for name, n in counts.items())
        raise BenchError(f"--grid has {total} cells ({sizes}), beyond {MAX_CELLS}: narrow a "
                         "range or give it a step ('lo..hi:step', 'lo..hi*factor')")
    for part in filter(None, (p.strip() for p in text.split(";"))):
        name, _, values = part.partition("=")
        axes[name.strip()] = _values(name.strip(), values.strip())
    batches = axes.pop("batch", [1024])
    if any(b < 1 for b in batches):
        raise BenchError(f"--grid: batch values must be positive, got {batches}")
    names = list(axes)
    cells = [SweepCell(NetSpec(**dict(zip(names, combo, strict=True))), b, backend, precision,
                       _setting(options))
             for combo in itertools.product(*axes.values()) for b in batches]
    return _unique(cells)


def _count(name: str, text: str) -> int:
    """How many values ``text`` gives (an upper bound: repeats count), without listing them."""
    total = 0
    for item in filter(None, (t.strip() for t in text.split(","))):
        try:
            if ".." not in item:
                int(item)
                total += 1
                continue
            lo_text, hi_text = item.split("..", 1)
            hi_text, _, step_text = hi_text.replace("*", ":*").partition(":")
            lo, hi = int(lo_text), int(hi_text)
            if step_text.startswith("*"):
                factor = int(step_text[1:])
                if lo < 1 or factor < 2:
                    raise ValueError
                n, value = 0, lo
                while value <= hi and n <= MAX_CELLS:
                    n, value = n + 1, value * factor
                total += n
            else:
                step = int(step_text) if step_text else 1
                if step < 1:
                    raise ValueError
                total += max(0, (hi - lo) // step + 1)
        except ValueError:
            raise BenchError(f"--grid: cannot read {name}='{text}': use integers 'a,b', "
                             "'lo..hi', 'lo..hi:step' or 'lo..hi*factor'") from None
    return total


def _values(name: str, text: str) -> list[int]:
    out: list[int] = []
    try:
        for item in filter(None, (t.strip() for t in text.split(","))):
            if ".." not in item:
                out.append(int(item))
                continue
            lo_text, hi_text = item.split("..", 1)
            factor = step = None
            if "*" in hi_text:
                hi_text, f = hi_text.split("*", 1)
                factor = int(f)
            elif ":" in hi_text:
                hi_text, s = hi_text.split(":", 1)
                step = int(s)
            lo, hi = int(lo_text), int(hi_text)
            if lo > hi or (factor is not None and (factor < 2 or lo < 1)) or (
                    step is not None and step < 1):
                raise ValueError
            value = lo
            while value <= hi:
                out.append(value)
                value = value * factor if factor else value + (step or 1)
    except ValueError:
        raise BenchError(f"--grid: cannot read {name}='{text}': use integers 'a,b', 'lo..hi', "
                         "'lo..hi:step' or 'lo..hi*factor'") from None
    if not out:
        raise BenchError(f"--grid: {name} has no values")
    return list(dict.fromkeys(out))


def _unique(cells: Sequence[SweepCell]) -> list[SweepCell]:
    seen: dict[str, SweepCell] = {}
    for cell in cells:
        seen.setdefault(cell.key, cell)
    return list(seen.values())


def parse_shard(text: str) -> tuple[int, int]:
    k_text, sep, n_text = text.partition("/")
    try:
        k, n = int(k_text), int(n_text)
    except ValueError:
        k = n = 0
    if not sep or n < 1 or not 1 <= k <= n:
        raise BenchError(f"--shard takes k/n with 1 <= k <= n (e.g. 2/4), got '{text}'")
    return k, n


def shard(cells: Sequence[SweepCell], k: int, n: int) -> list[SweepCell]:
    return [c for i, c in enumerate(cells) if i % n == k - 1]


# -- timing and estimate -----------------------------------------------------------
def cell_timing(cell: SweepCell, method: str = "default", duration: float | None = None
                ) -> TimingConfig:
    """Short but honest per-cell timing: >= 3 iterations and 0.3 s; huge cells warm up once."""
    if method == "thesis":
        return TimingConfig.thesis()
    if method != "default":
        raise BenchError(f"--method takes one of {', '.join(METHODS)}, got '{method}'")
    min_ms = 300.0 if duration is None else duration * 1000
    if not min_ms >= 0 or min_ms == float("inf"):  # nan and inf would never end a cell
        raise BenchError("--duration must be a finite number of seconds, not negative")
    huge = _iteration_s(cell) > 0.1
    return TimingConfig(warmup_ms=0.0 if huge else 100.0, warmup_iterations=1,
                        min_duration_ms=min_ms, min_iterations=3,
                        max_duration_ms=max(10_000.0, min_ms))


def _iteration_s(cell: SweepCell) -> float:
    return cell.spec.flops_per_tile * cell.batch / FLOPS_PER_S


def estimate_seconds(cells: Sequence[SweepCell], method: str = "default",
                     duration: float | None = None, processes: int = 1) -> float:
    """Rough wall time from FLOPs at ~100 GFLOP/s, plus process and export overheads."""
    total = 0.0
    for unit in plan_units(cells, method, duration):
        total += PLAN_OVERHEAD_S * max(processes, 1)
        for cell in unit:
            t, it = cell_timing(cell, method, duration), _iteration_s(cell)
            warm = max(t.warmup_ms / 1000, t.warmup_iterations * it)
            timed = min(max(t.min_duration_ms / 1000, t.min_iterations * it),
                        max(t.max_duration_ms / 1000, it))
            total += (warm + timed) * max(processes, 1)
    return total + NET_OVERHEAD_S * len({c.spec for c in cells})


def plan_units(cells: Sequence[SweepCell], method: str = "default",
               duration: float | None = None) -> list[list[SweepCell]]:
    """Cells grouped by net (first-appearance order), then by timing: one Plan each.

    The thesis method runs one cell per plan, so its three loops finish the cell before
    the next starts (a kill loses at most that cell)."""
    by_net: dict[tuple[NetSpec, str, tuple[tuple[str, Any], ...]], list[SweepCell]] = {}
    for cell in cells:
        by_net.setdefault((cell.spec, cell.backend, cell.options), []).append(cell)
    units: list[list[SweepCell]] = []
    for net_cells in by_net.values():
        if method == "thesis":
            units.extend([c] for c in net_cells)
            continue
        by_timing: dict[TimingConfig, list[SweepCell]] = {}
        for cell in net_cells:
            by_timing.setdefault(cell_timing(cell, method, duration), []).append(cell)
        units.extend(by_timing.values())
    return units


# -- running -----------------------------------------------------------------------
@dataclass(frozen=True)
class SweepProgress:
    done: int
    total: int
    cell: SweepCell | None  # the cell now running (None when all are done)
    record: dict[str, Any] | None = None  # the record of the cell just finished


@dataclass
class SweepOutcome:
    run_id: str
    total: int  # cells in the grid (this shard)
    skipped: int  # already in the results file
    records: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def wants_pass(passes: list[tuple[list[float], int, float | None]], target: int) -> bool:
    """Another pass for a cell measured ``passes`` times: until 2 (min(2, target)), then while
    its 95 % interval over the passes is wider than +-PASS_WIDTH, up to ``target``."""
    if len(passes) >= target:
        return False
    if len(passes) < min(2, target):
        return True
    measured = [(s, b, w) for s, b, w in passes if s and b and (w or sum(s)) > 0]
    if len(measured) < 2:  # records without samples count as passes, but say nothing more
        return True
    ci = intervals.process_ci(measured)
    figures = sorted(len(s) * b / (w or sum(s)) for s, b, w in measured)
    half = intervals.relative_halfwidth(ci, figures[len(figures) // 2])
    return half is None or half > PASS_WIDTH


def run_sweep(cells: Sequence[SweepCell], results: Path, *, group: str, method: str = "default",
              duration: float | None = None, processes: int | None = None,
              data: str | None = None, on_progress: Callable[[SweepProgress], None] | None = None,
              train_epochs: int | None = None, models: Path = Path("models"), passes: int = 1,
              budget_s: float | None = None, seed: int = 0) -> SweepOutcome:
    """Time every cell until it has ``passes`` records (from 2 on, only while its interval
    is wide), appending each record as it finishes. With several passes each pass runs the
    cells still wanted in a shuffled order (seeded), so drift and a slow process state spread
    over the cells instead of landing on one; no pass starts after ``budget_s`` seconds."""
    import time

    from cnn_deploy.results.records import Writer

    if processes is None:
        processes = 3 if method == "thesis" else 1
    if not 1 <= processes <= MAX_PROCESSES:
        raise BenchError(f"--processes must be within 1..{MAX_PROCESSES}, got {processes}")
    if not 1 <= passes <= 20:
        raise BenchError(f"--passes must be within 1..20, got {passes}")
    writer = Writer(results)
    measured = cell_passes(results)
    wanted = [c for c in cells if wants_pass(measured.get(c.key, []), passes)]
    outcome = SweepOutcome(writer.run_id, len(cells), len(cells) - len(wanted))
    sweep_info = {"group": group, "method": method, "processes": processes, "passes": passes}
    report = on_progress or (lambda _: None)
    state = _Passes(writer, outcome, sweep_info, report, method, duration, processes, data,
                    train_epochs, models, measured,
                    total=sum(passes - len(measured.get(c.key, [])) for c in wanted),  # at most
                    results=results, passes=passes, claims=Claims(results))
    started = time.monotonic()
    try:
        _run_passes(state, cells, passes, method, duration, budget_s, seed, started)
    finally:
        state.claims.release()
    report(SweepProgress(state.finished, state.finished, None))
    return outcome


def _run_passes(state: _Passes, cells: Sequence[SweepCell], passes: int, method: str,
                duration: float | None, budget_s: float | None, seed: int, started: float) -> None:
    import random
    import time

    measured, outcome = state.measured, state.outcome
    for index in range(passes):
        todo = [c for c in cells if wants_pass(measured.get(c.key, []), passes)]
        if not todo:
            break
        if budget_s is not None and time.monotonic() - started > budget_s and index:
            outcome.warnings.append(f"the time budget ({budget_s:.0f} s) ended the sweep after "
                                    f"pass {index}: {len(todo)} cells still have wide intervals")
            break
        units = plan_units(todo, method, duration)
        if passes > 1:
            random.Random(seed * 1000 + index).shuffle(units)
        state.run(units, index)


@dataclass
class _Passes:
    """What every pass of one sweep shares: where records go, how cells are timed, what is
    measured so far (cell key -> its passes' samples)."""

    writer: Any
    outcome: SweepOutcome
    sweep_info: dict[str, Any]
    report: Callable[[SweepProgress], None]
    method: str
    duration: float | None
    processes: int
    data: str | None
    train_epochs: int | None
    models: Path
    measured: dict[str, list[tuple[list[float], int, float | None]]]
    total: int
    results: Path
    passes: int
    claims: Claims
    finished: int = 0
    trained_nets: dict[NetSpec, dict[str, Any]] = field(default_factory=dict)

    def claim(self, unit: list[SweepCell]) -> list[SweepCell]:
        """The cells of ``unit`` this run measures now: those that still want a pass (read
        afresh: another run of this sweep may have measured them meanwhile) and that no other
        live run has claimed, claimed under the lock."""
        def wanted() -> dict[str, int]:
            for key, got in cell_passes(self.results).items():
                if len(got) > len(self.measured.get(key, [])):
                    self.measured[key] = got
            return {c.key: len(self.measured.get(c.key, [])) + 1 for c in unit
                    if wants_pass(self.measured.get(c.key, []), self.passes)}

        granted = self.claims.take(wanted)
        return [c for c in unit if c.key in granted]

    def run(self, units: list[list[SweepCell]], index: int) -> None:
        """One pass over ``units`` (pass ``index``, 0-based)."""
        from cnn_deploy.bench.targets import resolve_target
        from cnn_deploy.bench.workers import run_plan
        from cnn_deploy.files import file_sha256

        outcome, report, method, duration = self.outcome, self.report, self.method, self.duration
        processes, data, models = self.processes, self.data, self.models
        train_epochs, trained_nets, measured = self.train_epochs, self.trained_nets, self.measured
        sweep_info, writer, finished = self.sweep_info, self.writer, self.finished
        todo_count = max(self.total, finished + sum(len(u) for u in units))
        for unit in units:
            unit = self.claim(unit)
            if not unit:  # measured or being measured by another run of this sweep
                continue
            report(SweepProgress(finished, todo_count, unit[0]))
            trained = _trained_net(unit[0].spec, train_epochs, models, data, trained_nets)
            checkpoint, name = (trained["checkpoint"], None) if trained else (None, unit[0].spec.name)
            engine = _engine(unit, models, report, SweepProgress(finished, todo_count, unit[0]))
            if engine is not None:  # the engine names its network (sidecar -> source ONNX)
                checkpoint = name = None
            with resolve_target(checkpoint, name, engine) as (target, _):
                sha = file_sha256(target.onnx) if target.onnx else None
                timing = cell_timing(unit[0], method, duration)
                plan = Plan(target, (_config(unit[0].backend, dict(unit[0].options)),),
                            tuple(c.batch for c in unit),
                            timing, data)
                pending = {c.batch: c for c in unit}
                loops: dict[int, list[Measurement]] = {}
                for cell in run_plan(plan, processes):
                    loops.setdefault(cell.requested_batch, []).append(cell)
                    if len(loops[cell.requested_batch]) < processes:
                        continue
                    sweep_cell = pending.pop(cell.requested_batch)
                    done_cell = loops[cell.requested_batch]
                    record = _record(sweep_cell, done_cell, timing, sha,
                                     {**sweep_info, "run": outcome.run_id, "pass": index + 1},
                                     target.to_dict())
                    if trained:
                        record["time_to_accuracy"] = trained["time_to_accuracy"]
                        record["test_accuracy"] = trained["test_accuracy"]
                    writer.append("bench", record)
                    measured.setdefault(sweep_cell.key, []).append(
                        (record["samples_ms"], int(record["batch"]), record.get("wall_ms")))
                    outcome.records.append(record)
                    outcome.warnings.extend(f"{sweep_cell.key}: {w}" for w in record["warnings"])
                    finished += 1
                    nxt = next(iter(pending.values()), None)
                    report(SweepProgress(finished, todo_count, nxt, record))
        self.finished = finished


def _trained_net(spec: NetSpec, epochs: int | None, models: Path, data: str | None,
                 cache: dict[NetSpec, dict[str, Any]]) -> dict[str, Any] | None:
    """Train ``spec`` once per sweep when --train-epochs asks (weights don't change speed,
    so the default sweeps untrained nets); Table 2's time-to-accuracy goes in its records."""
    if not epochs:
        return None
    if spec not in cache:
        from cnn_deploy.data import load_mnist
        from cnn_deploy.train import TrainConfig, save_checkpoint, train

        checkpoint = train(spec, load_mnist(data), TrainConfig(epochs=epochs))
        path = save_checkpoint(checkpoint, models / f"{spec.name}.pt")
        miles = checkpoint["milestones_seconds"]
        cache[spec] = {"checkpoint": path,
                       "time_to_accuracy": {k.rstrip("%"): v for k, v in miles.items()},
                       "test_accuracy": checkpoint["metrics"]["test_accuracy"]}
    return cache[spec]


def _engine(unit: Sequence[SweepCell], models: Path, report: Callable[[SweepProgress], None],
            progress: SweepProgress) -> Path | None:
    """For a backend that loads engines: the unit's net built for this GPU (or reused from
    engines/<gpu>/), with a profile up to the unit's largest batch; None for other backends."""
    from cnn_deploy.backends import registry

    if registry.get(unit[0].backend).needs != "engine":
        return None
    from cnn_deploy.engine import engine_for_spec

    plan, _built = engine_for_spec(unit[0].spec.name, unit[0].precision,
                                   max(c.batch for c in unit), models=models,
                                   progress=lambda _: report(progress))
    return plan


def _config(backend: str, options: dict[str, Any]) -> BackendConfig:
    """The sweep's one row: ``backend`` at its CPU defaults, overridden by ``options``
    (``-o torch.device=cuda`` sweeps on the GPU)."""
    from cnn_deploy.backends import registry

    entry = registry.get(backend)
    return BackendConfig(entry.name, entry.resolve({**entry.device_options("cpu"), **options}))


def _record(cell: SweepCell, loops: list[Measurement], timing: TimingConfig, sha: str | None,
            sweep_info: dict[str, Any], model: dict[str, Any]) -> dict[str, Any]:
    """One bench record per cell: the median loop's samples and stats, every loop's raw samples."""
    from cnn_deploy.results.records import loops_payload, measurement_payload

    summary = summarise_cells(loops, timing)[0]
    mid = next(c for c in loops if c.stats == summary.stats)
    warnings = list(summary.warnings)
    info = dict(sweep_info)
    if len(loops) > 1:
        first, last = loops[0].stats.tiles_per_ms, loops[-1].stats.tiles_per_ms
        drift = (last - first) / first if first > 0 else 0.0
        info["drift"] = drift
        if abs(drift) > DRIFT_WARNING:
            warnings.append(f"tiles/ms drifted {drift:+.1%} from the first to the last loop "
                            f"({first:.1f} -> {last:.1f}; thesis Table 1 threshold 5 %)")
    return measurement_payload(mid, model={**model, "onnx_sha256": sha, "onnx": None}, timing=timing,
                        precision=cell.precision, processes=len(loops), extra={
                            "cell": cell.key, "sweep": info, "requested_batch": cell.batch,
                            "in_process": False, "loops": loops_payload(loops),
                            "warnings": warnings, "notes": list(summary.notes)})
