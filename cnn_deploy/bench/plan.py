"""What one benchmark runs: a target, its backend configurations, batches and timing; and
the cells it yields, one per (configuration, batch) per process.

``run_cells`` is the one benchmark path for every target (spec, checkpoint, ONNX file,
engine) and every backend: runners come from the registry, inputs are real MNIST digits
where the model takes 28x28 tiles, timing is :func:`cnn_deploy.bench.timing.time_runner`.
"""

from __future__ import annotations

import contextlib
import resource
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cnn_deploy.arch import NetSpec
from cnn_deploy.backends import registry
from cnn_deploy.backends.base import Runner, Target
from cnn_deploy.bench.timing import (
    Stats,
    TimingConfig,
    stability_warnings,
    summarise,
    time_overlapped,
    time_runner,
)
from cnn_deploy.errors import BenchError, DataError


@dataclass(frozen=True)
class BackendConfig:
    """One backend with its options: one row of the table per batch. ``baseline`` marks the
    row every speed-up is measured against (torch eager NCHW on the same device)."""

    backend: str
    options: dict[str, Any] = field(default_factory=dict)
    baseline: bool = False

    def runner(self, target: Target) -> Runner:
        return registry.runner(self.backend, target, self.options)

    def to_dict(self) -> dict[str, Any]:
        return {"backend": self.backend, "options": self.options, "baseline": self.baseline}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BackendConfig:
        return cls(d["backend"], dict(d.get("options") or {}), bool(d.get("baseline")))


@dataclass(frozen=True)
class Plan:
    target: Target
    rows: tuple[BackendConfig, ...]
    batches: tuple[int, ...]
    timing: TimingConfig = TimingConfig()
    data: str | None = None  # MNIST folder for real input digits
    scenario: str = "offline"

    def to_dict(self) -> dict[str, Any]:
        return {"target": self.target.to_dict(), "rows": [r.to_dict() for r in self.rows],
                "batches": list(self.batches), "timing": asdict(self.timing),
                "data": self.data, "scenario": self.scenario}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Plan:
        return cls(Target.from_dict(d["target"]),
                   tuple(BackendConfig.from_dict(r) for r in d["rows"]),
                   tuple(d["batches"]), TimingConfig(**d["timing"]), d["data"], d["scenario"])


@dataclass
class Measurement:
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
    baseline: bool = False
    applied: dict[str, Any] = field(default_factory=dict)  # what the backend says it ran with
    wall_ms: float | None = None  # overlapped iterations: the wall time tiles/ms is over

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["stats"] = self.stats.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Measurement:
        return cls(**{**d, "stats": Stats(**d["stats"])})


def run_cells(plan: Plan, process: int = 0) -> Iterator[Measurement]:
    """Time every (row, batch) of ``plan`` in this process, yielding cells as they finish."""
    from cnn_deploy.device import available_memory_bytes

    for index, row in enumerate(plan.rows):
        reset_peak_rss()
        with row.runner(plan.target) as runner:
            for requested, batch, notes in _effective_batches(runner, plan.batches):
                free = runner.free_memory_bytes()  # a GPU's own memory, else the host's
                check_memory(plan.target.spec, runner, batch,
                              free if free is not None else available_memory_bytes())
                x, source = make_inputs(runner, batch, plan.data)
                try:
                    timed_run = (time_overlapped(runner, x, plan.timing) if plan.timing.overlap
                                 else time_runner(runner, x, plan.timing))
                except MemoryError as exc:
                    raise BenchError(f"batch {batch} does not fit in memory on {runner.label} "
                                     f"({exc}): use a smaller --batch") from None
                samples = timed_run.latency_ms
                stats = summarise(samples, batch, timed_run.wall_ms)
                if not _weights_trained(runner, plan.target):
                    notes.append("untrained weights: speed does not depend on them")
                notes.extend(runner.notes)
                yield Measurement(index, runner.label, runner.backend, dict(runner.options),
                           runner.device, batch, requested, samples,
                           timed_run.warmup_iterations, stats,
                           stability_warnings(samples, stats, plan.timing), notes, source,
                           peak_rss_mb(), process, timed_run.enqueue_ms, timed_run.phases_ms,
                           row.baseline, dict(runner.applied), timed_run.wall_ms)


def _weights_trained(runner: Runner, target: Target) -> bool:
    """A backend that builds the network from its spec loads the checkpoint; every other
    backend loads the exported file."""
    if registry.get(runner.backend).needs == "spec":
        return target.checkpoint is not None
    return target.trained


def _effective_batches(runner: Runner, batches: tuple[int, ...]
                       ) -> list[tuple[int, int, list[str]]]:
    """(requested, timed, notes) per batch to time: a fixed-batch model is timed once, at its
    own batch, with a note naming every batch asked for instead."""
    if any(b < 1 for b in batches):
        raise BenchError(f"batch must be at least 1, got {min(batches)}")
    fixed = runner.signature.fixed_batch
    if fixed is None:
        return [(b, b, []) for b in dict.fromkeys(batches)]
    others = [b for b in dict.fromkeys(batches) if b != fixed]
    note = (f"the model has a fixed batch of {fixed}: timed at {fixed}, not "
            f"{', '.join(map(str, others))}") if others else None
    requested = fixed if fixed in batches else batches[0]
    return [(requested, fixed, [note] if note else [])]


def check_memory(spec: NetSpec | None, runner: Runner, batch: int, available: int | None) -> None:
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
        where = "GPU memory" if runner.device.startswith("cuda") else "memory"
        raise BenchError(f"batch {batch} needs about {_size(need)} but only {_size(available)} "
                         f"of {where} is available: use --batch {fits} or less")


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
