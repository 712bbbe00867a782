"""The one timing harness for every backend: warm-up, timed iterations, statistics, warnings.

Defaults follow trtexec: warm-up by time (200 ms) and count, then timed iterations until
both a minimum duration and a minimum count are met. Every per-iteration sample is kept;
median, p90, p99, min, max and the coefficient of variation are computed from them.
tiles/ms is thesis eq. 12 generalised: tiles classified / wall time of the timed runs in ms.
On a CPU the clock is ``time.perf_counter_ns`` (monotonic) around run + synchronise.
"""

from __future__ import annotations

import contextlib
import resource
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cnn_deploy.arch import NetSpec
from cnn_deploy.backends.base import Runner
from cnn_deploy.errors import BenchError, DataError


@dataclass(frozen=True)
class TimingConfig:
    warmup_ms: float = 200.0  # trtexec --warmUp=200
    warmup_iterations: int = 2
    min_duration_ms: float = 1000.0  # trtexec uses 3 s; 1 s keeps CPU sweeps in budget
    min_iterations: int = 10  # trtexec --iterations=10
    max_duration_ms: float = 30_000.0  # stop a huge cell even if min_iterations is not met
    cv_threshold: float = 0.05  # trtexec warns at 1 % on a GPU; a shared 2-core CPU is noisier
    drift_threshold: float = 0.05  # first vs last third of the samples
    spread_threshold: float = 0.10  # across fresh processes

    @classmethod
    def thesis(cls) -> TimingConfig:
        """The thesis's procedure: no warm-up, exactly 20 runs (repeat over 3 processes)."""
        return cls(warmup_ms=0.0, warmup_iterations=0, min_duration_ms=0.0, min_iterations=20,
                   max_duration_ms=float("inf"))

    @classmethod
    def quick(cls) -> TimingConfig:
        """Smoke runs and tests: short but still warm-up + several iterations."""
        return cls(warmup_ms=20.0, min_duration_ms=100.0, min_iterations=5)


@dataclass(frozen=True)
class Stats:
    iterations: int
    median_ms: float
    p90_ms: float
    p99_ms: float
    min_ms: float
    max_ms: float
    mean_ms: float
    cv: float
    total_ms: float
    tiles_per_ms: float  # eq. 12: iterations * batch / total_ms

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def summarise(samples_ms: list[float] | np.ndarray, batch: int) -> Stats:
    s = np.asarray(samples_ms, dtype=np.float64)
    if s.size == 0:
        raise ValueError("no samples")
    mean = float(s.mean())
    total = float(s.sum())
    return Stats(
        iterations=int(s.size),
        median_ms=float(np.median(s)),
        p90_ms=float(np.percentile(s, 90)),
        p99_ms=float(np.percentile(s, 99)),
        min_ms=float(s.min()),
        max_ms=float(s.max()),
        mean_ms=mean,
        cv=float(s.std() / mean) if mean > 0 else 0.0,
        total_ms=total,
        tiles_per_ms=s.size * batch / total if total > 0 else float("inf"),
    )


Clock = Callable[[], int]


def time_runner(runner: Runner, x: np.ndarray, config: TimingConfig,
                clock: Clock = time.perf_counter_ns) -> tuple[list[float], int]:
    """Warm up, then time iterations of run + synchronise; returns (samples in ms, warm-ups)."""
    staged = runner.stage(x)
    warm, start = 0, clock()
    while warm < config.warmup_iterations or (clock() - start) / 1e6 < config.warmup_ms:
        runner.run(staged)
        runner.synchronize()
        warm += 1
    samples: list[float] = []
    elapsed = 0.0
    while True:
        t0 = clock()
        runner.run(staged)
        runner.synchronize()
        t1 = clock()
        samples.append((t1 - t0) / 1e6)
        elapsed += samples[-1]
        enough = len(samples) >= config.min_iterations and elapsed >= config.min_duration_ms
        if enough or (elapsed >= config.max_duration_ms and len(samples) >= 1):
            break
    return samples, warm


@dataclass
class PhasedSamples:
    """GPU timing the trtexec way: host-side and device-side figures per iteration."""

    latency_ms: list[float]  # end to end on the host: enqueue start -> synchronised
    enqueue_ms: list[float]  # host time to enqueue the work
    phases_ms: dict[str, list[float]]  # device time per phase from CUDA events
    warmup_iterations: int


def time_runner_phased(runner: Runner, x: np.ndarray, config: TimingConfig,
                       clock: Clock = time.perf_counter_ns) -> PhasedSamples:
    """Like :func:`time_runner`, for runners with a device :class:`PhaseTimer`."""
    timer = runner.phase_timer()
    if timer is None:
        raise BenchError(f"{runner.label} has no device timer: use time_runner")
    staged = runner.stage(x)
    warm, start = 0, clock()
    while warm < config.warmup_iterations or (clock() - start) / 1e6 < config.warmup_ms:
        runner.run_phased(staged, timer)
        runner.synchronize()
        warm += 1
    out = PhasedSamples([], [], {}, warm)
    elapsed = 0.0
    while True:
        t0 = clock()
        runner.run_phased(staged, timer)
        t1 = clock()
        runner.synchronize()
        t2 = clock()
        out.enqueue_ms.append((t1 - t0) / 1e6)
        out.latency_ms.append((t2 - t0) / 1e6)
        for phase, ms in timer.elapsed_ms().items():
            out.phases_ms.setdefault(phase, []).append(ms)
        elapsed += out.latency_ms[-1]
        n = len(out.latency_ms)
        if (n >= config.min_iterations and elapsed >= config.min_duration_ms) or (
                elapsed >= config.max_duration_ms):
            break
    return out


def stability_warnings(samples_ms: list[float], stats: Stats, config: TimingConfig) -> list[str]:
    """Say when a figure is not trustworthy: large spread, or drift within the run."""
    warnings = []
    if stats.cv > config.cv_threshold:
        warnings.append(f"coefficient of variation {stats.cv:.1%} > {config.cv_threshold:.0%}: "
                        "the machine is noisy or the cell too short (raise --duration)")
    if len(samples_ms) >= 9:
        third = len(samples_ms) // 3
        first, last = np.median(samples_ms[:third]), np.median(samples_ms[-third:])
        drift = (last - first) / first if first > 0 else 0.0
        if abs(drift) > config.drift_threshold:
            warnings.append(f"drift {drift:+.1%} from the first to the last third of the run "
                            "(thermal throttling or background load?)")
    return warnings


# -- what to benchmark ---------------------------------------------------------
@dataclass(frozen=True)
class Target:
    """A network to time: an ONNX file, a spec, or both (a spec lets torch time it too)."""

    name: str
    onnx: Path | None = None
    spec: NetSpec | None = None
    checkpoint: Path | None = None
    trained: bool = False
    engine: Path | None = None  # a TensorRT plan (cnndeploy build)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "onnx": str(self.onnx) if self.onnx else None,
                "spec": self.spec.to_dict() if self.spec else None,
                "checkpoint": str(self.checkpoint) if self.checkpoint else None,
                "trained": self.trained, "engine": str(self.engine) if self.engine else None}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Target:
        return cls(d["name"], Path(d["onnx"]) if d["onnx"] else None,
                   NetSpec.from_dict(d["spec"]) if d["spec"] else None,
                   Path(d["checkpoint"]) if d["checkpoint"] else None, bool(d["trained"]),
                   Path(d["engine"]) if d.get("engine") else None)


@dataclass(frozen=True)
class Row:
    """One backend with its options: one row of the table per batch."""

    backend: str
    options: dict[str, Any] = field(default_factory=dict)

    def runner(self, target: Target) -> Runner:
        if self.backend == "torch":
            from cnn_deploy.backends.pytorch import TorchRunner

            if target.spec is None:
                raise BenchError(f"the torch backend needs the network's spec; {target.name} "
                                 "carries no cnn_deploy metadata (bench it with onnxruntime)")
            return TorchRunner(target.spec, target.checkpoint, self.options)
        if self.backend == "onnxruntime":
            from cnn_deploy.backends.ort import OrtRunner

            if target.onnx is None:
                raise BenchError(f"onnxruntime needs an ONNX file for {target.name}")
            return OrtRunner(target.onnx, self.options)
        if self.backend == "tensorrt":
            from cnn_deploy.backends.tensorrt import TrtRunner

            if target.engine is None:
                raise BenchError(f"tensorrt needs an engine for {target.name}: build one with "
                                 "`cnndeploy build <model.onnx>` and pass --engine")
            return TrtRunner(target.engine, self.options)
        raise BenchError(f"no runner for backend '{self.backend}'")


@dataclass(frozen=True)
class Plan:
    target: Target
    rows: tuple[Row, ...]
    batches: tuple[int, ...]
    timing: TimingConfig = TimingConfig()
    data: str | None = None  # MNIST folder for real input digits
    scenario: str = "offline"

    def to_dict(self) -> dict[str, Any]:
        return {"target": self.target.to_dict(),
                "rows": [{"backend": r.backend, "options": r.options} for r in self.rows],
                "batches": list(self.batches), "timing": asdict(self.timing),
                "data": self.data, "scenario": self.scenario}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Plan:
        return cls(Target.from_dict(d["target"]),
                   tuple(Row(r["backend"], r["options"]) for r in d["rows"]),
                   tuple(d["batches"]), TimingConfig(**d["timing"]), d["data"], d["scenario"])


@dataclass
class Cell:
    """One (row, batch) measured in one process: raw samples and what they say."""

    row: int
    label: str
    backend: str
    options: dict[str, Any]
    device: str
    batch: int
    requested_batch: int
    samples_ms: list[float]
    warmup_iterations: int
    stats: Stats
    warnings: list[str]
    notes: list[str]
    input: str
    peak_rss_mb: float
    process: int = 0
    enqueue_ms: list[float] | None = None  # GPU runners: host enqueue time per iteration
    phases_ms: dict[str, list[float]] | None = None  # GPU runners: CUDA-event phase times

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["stats"] = self.stats.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Cell:
        return cls(**{**d, "stats": Stats(**d["stats"])})


def run_cells(plan: Plan, process: int = 0) -> Iterator[Cell]:
    """Time every (row, batch) of ``plan`` in this process, yielding cells as they finish."""
    from cnn_deploy.device import available_memory_bytes

    for index, row in enumerate(plan.rows):
        reset_peak_rss()
        with row.runner(plan.target) as runner:
            timed: set[int] = set()
            for requested in plan.batches:
                batch, notes = _effective_batch(runner, requested)
                if batch in timed:
                    continue
                timed.add(batch)
                _check_memory(plan.target.spec, runner, batch, available_memory_bytes())
                x, source = make_inputs(runner, batch, plan.data)
                phased: PhasedSamples | None = None
                try:
                    if runner.phase_timer() is not None:
                        phased = time_runner_phased(runner, x, plan.timing)
                        samples, warm = phased.latency_ms, phased.warmup_iterations
                    else:
                        samples, warm = time_runner(runner, x, plan.timing)
                except MemoryError as exc:
                    raise BenchError(f"batch {batch} does not fit in memory on {runner.label} "
                                     f"({exc}): use a smaller --batch") from None
                stats = summarise(samples, batch)
                torch_untrained = runner.backend == "torch" and plan.target.checkpoint is None
                if torch_untrained or (runner.backend != "torch" and not plan.target.trained):
                    notes.append("untrained weights: speed does not depend on them")
                yield Cell(index, runner.label, runner.backend, dict(runner.options),
                           runner.device, batch, requested, samples, warm, stats,
                           stability_warnings(samples, stats, plan.timing), notes, source,
                           peak_rss_mb(), process,
                           phased.enqueue_ms if phased else None,
                           phased.phases_ms if phased else None)


def _effective_batch(runner: Runner, requested: int) -> tuple[int, list[str]]:
    if requested < 1:
        raise BenchError(f"batch must be at least 1, got {requested}")
    fixed = runner.signature.fixed_batch
    if fixed is not None and fixed != requested:
        return fixed, [f"the model has a fixed batch of {fixed}: timed at {fixed}, "
                       f"not {requested}"]
    return requested, []


def _check_memory(spec: NetSpec | None, runner: Runner, batch: int, available: int | None) -> None:
    """Refuse a batch that clearly cannot fit before the kernel's OOM killer does."""
    if available is None:
        return
    shape = runner.signature.example_shape(batch)
    need = int(np.prod(shape)) * 4 * 2
    if spec is not None:
        need += 3 * spec.activation_bytes(batch)
    if need > 0.8 * available:
        per_tile = max(1, need // batch)
        fits = max(1, int(0.8 * available // per_tile))
        raise BenchError(f"batch {batch} needs about {_size(need)} but only {_size(available)} "
                         f"of memory is available: use --batch {fits} or less")


def _size(n: float) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"


def make_inputs(runner: Runner, batch: int, data: str | None) -> tuple[np.ndarray, str]:
    """Real MNIST test digits (raw pixels) when the model takes 1x28x28 tiles, else noise."""
    shape = runner.signature.example_shape(batch)
    dtype = np.dtype(runner.signature.dtype)
    if shape[1:] == (1, 28, 28):
        from cnn_deploy.data import load_test_images, to_float

        try:
            digits = to_float(load_test_images(data), normalise=False)
        except DataError as exc:  # no dataset here: speed does not depend on the pixels
            why = str(exc).split(":")[0]
            rng = np.random.default_rng(0)
            noise = rng.uniform(0, 255, size=shape).astype(dtype)
            return noise, f"uniform noise 0..255 (no MNIST digits: {why})"
        reps = -(-batch // len(digits))
        x = np.concatenate([digits] * reps)[:batch] if reps > 1 else digits[:batch]
        return np.ascontiguousarray(x, dtype=dtype), "mnist test digits"
    rng = np.random.default_rng(0)
    return rng.uniform(0, 255, size=shape).astype(dtype), "uniform noise 0..255"


def peak_rss_mb() -> float:
    """Peak resident memory of this process since the last :func:`reset_peak_rss`.

    Linux's ``VmHWM`` is the process's own; ``ru_maxrss`` would include a forking
    parent's peak (it is inherited through fork and exec), so it is only the fallback.
    """
    try:
        status = Path("/proc/self/status").read_text()
        kib = next(int(line.split()[1]) for line in status.splitlines()
                   if line.startswith("VmHWM:"))
        return kib / 1024.0
    except (OSError, StopIteration, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def reset_peak_rss() -> None:
    """Start a new high-water mark, so each row's peak is its own (Linux only)."""
    # Not Linux, or not permitted: the peak then covers the whole process.
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


# -- combining processes -------------------------------------------------------
@dataclass(frozen=True)
class Summary:
    """One table row: a (row, batch) over all processes, the median process's figures."""

    row: int
    label: str
    backend: str
    batch: int
    stats: Stats
    processes: int
    tiles_per_ms_all: tuple[float, ...]
    spread: float  # (max - min) / median of tiles/ms across processes
    speedup: float | None
    baseline: bool
    warnings: tuple[str, ...]
    notes: tuple[str, ...]


def summarise_cells(cells: list[Cell], config: TimingConfig = TimingConfig()) -> list[Summary]:
    groups: dict[tuple[int, int], list[Cell]] = {}
    for cell in cells:
        groups.setdefault((cell.row, cell.batch), []).append(cell)
    baseline_tpm = {c.batch: _median_cell(g).stats.tiles_per_ms
                    for (_, _), g in groups.items() for c in g[:1] if "[baseline]" in c.label}
    out = []
    for (row, batch), group in sorted(groups.items()):
        mid = _median_cell(group)
        tpms = tuple(c.stats.tiles_per_ms for c in group)
        spread = (max(tpms) - min(tpms)) / float(np.median(tpms)) if len(tpms) > 1 else 0.0
        warnings = list(dict.fromkeys(w for c in group for w in c.warnings))
        if spread > config.spread_threshold:
            warnings.append(f"tiles/ms differs by {spread:.0%} across {len(group)} fresh processes "
                            f"({min(tpms):.1f}..{max(tpms):.1f}): bimodal or unstable figure")
        base = baseline_tpm.get(batch)
        out.append(Summary(row, mid.label, mid.backend, batch, mid.stats, len(group), tpms,
                           spread, mid.stats.tiles_per_ms / base if base else None,
                           "[baseline]" in mid.label, tuple(warnings),
                           tuple(dict.fromkeys(n for c in group for n in c.notes))))
    return out


def _median_cell(group: list[Cell]) -> Cell:
    ordered = sorted(group, key=lambda c: c.stats.tiles_per_ms)
    return ordered[(len(ordered) - 1) // 2]
