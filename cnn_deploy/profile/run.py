"""Per-layer profiles from each backend's own profiler, mapped onto the thesis's operation
categories (conv, gemm, pool, elementwise, memory, other; ``fused`` where a backend fused
several ops into one kernel and says which).

Profiling is a separate pass from timing: the harness first times the same runner and
batch unprofiled, and the profile keeps the ratio of summed layer time to that whole-run
time (the profiler's own cost, and what the layers miss). A profile becomes one tidy
table, a list of flat rows; every analysis below is a pure function over it.
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cnn_deploy.arch import NetSpec
from cnn_deploy.backends import registry
from cnn_deploy.backends.base import Target
from cnn_deploy.bench.timing import TimingConfig
from cnn_deploy.errors import BenchError
from cnn_deploy.profile.table import layer_table, run_sums

# What the unprofiled reference run is timed with: short, but warm and repeated.
PROFILE_TIMING = TimingConfig(warmup_ms=100.0, min_duration_ms=500.0, min_iterations=5)
DEFAULT_RUNS = 10


@dataclass
class Profile:
    target: Target
    backend: str
    label: str
    options: dict[str, Any]
    batch: int
    runs: int
    fused: bool  # the deployed (fused) graph, or --unfused
    table: list[dict[str, Any]]
    layer_sum_ms: float  # median over runs of the summed layer times
    unprofiled_ms: float  # the harness's median of unprofiled runs
    unprofiled_samples_ms: list[float]
    input: str
    notes: list[str] = field(default_factory=list)

    @property
    def overhead_ratio(self) -> float:
        """Summed layer time / unprofiled whole-run time (1.0: the layers explain the run)."""
        return self.layer_sum_ms / self.unprofiled_ms if self.unprofiled_ms > 0 else float("nan")

    @property
    def us_per_tile(self) -> float:
        return self.layer_sum_ms * 1000.0 / self.batch


def check_backend(backend: str, engine: Path | None, by_spec: bool = False) -> str:
    """The one backend to profile: it must report per-layer times; an engine is TensorRT's
    (``--engine``, or ``-b tensorrt --spec NAMES``: engines built per net, ``by_spec``)."""
    if engine is not None:
        from cnn_deploy.bench.targets import require_gpu

        require_gpu("profiling a TensorRT engine")
        return registry.first_loading("engine").name
    names = registry.parse_backends(backend)
    if len(names) != 1:
        raise BenchError(f"profile one backend at a time, not {', '.join(names)}")
    entry = registry.get(names[0])
    if not entry.profiles:
        able = ", ".join(b.name for b in registry.backends() if b.profiles)
        raise BenchError(f"{entry.name} cannot report per-layer times: profile with {able}")
    if entry.needs == "engine":
        from cnn_deploy.bench.targets import require_gpu

        require_gpu(f"profiling with {entry.name}")
        if not by_spec:
            raise BenchError(f"-b {entry.name} profiles an engine: pass --engine "
                             "engines/<device>/<net>_<precision>.plan (`cnndeploy build`), or "
                             "--spec NAMES to build one per network")
    return entry.name


def profile_options(backend: str, unfused: bool,
                    options: dict[str, Any] | None = None) -> tuple[dict[str, Any], list[str]]:
    """Backend options for a profile: the deployed graph by default, unfused on request (each
    backend says how: ``Backend.profile_graph``)."""
    entry = registry.get(backend)
    if entry.profile_graph is None:
        if unfused:
            raise BenchError(f"{entry.name} profiles its deployed (fused) graph only: drop --unfused "
                             "(ONNX Runtime at opt level basic, or torch eager, show unfused layers)")
        return dict(options or {}), []
    changes, note = entry.profile_graph(unfused, dict(options or {}))
    opts = {**(options or {}), **changes}
    return opts, [note] if note else []


def profile_target(target: Target, backend: str, batch: int, *, runs: int = DEFAULT_RUNS,
                   unfused: bool = False, options: dict[str, Any] | None = None,
                   timing: TimingConfig = PROFILE_TIMING, data: str | None = None) -> Profile:
    """Time ``target`` unprofiled with the harness, then profile ``runs`` runs per layer."""
    from cnn_deploy.bench.plan import check_memory, make_inputs
    from cnn_deploy.bench.timing import summarise, time_runner
    from cnn_deploy.device import available_memory_bytes

    if runs < 1:
        raise BenchError(f"--runs must be at least 1, got {runs}")
    if batch < 1:
        raise BenchError(f"--batch must be at least 1, got {batch}")
    opts, notes = profile_options(backend, unfused, options)
    with registry.runner(backend, target, opts) as runner:
        fixed = runner.signature.fixed_batch
        if fixed is not None and fixed != batch:
            notes.append(f"the model has a fixed batch of {fixed}: profiled at {fixed}")
            batch = fixed
        free = runner.free_memory_bytes()  # a GPU's own memory, else the host's
        check_memory(target.spec, runner, batch, free if free is not None else
                     available_memory_bytes())
        x, source = make_inputs(runner, batch, data)
        try:
            samples = time_runner(runner, x, timing).latency_ms
            layers = runner.profile_layers(x, runs)
        except MemoryError as exc:
            raise BenchError(f"batch {batch} does not fit in memory on {runner.label} ({exc}): "
                             "use a smaller --batch") from None
        label, used = runner.label, dict(runner.options)
    if not layers:
        raise BenchError(f"{label} reported no layers for {target.name}")
    table = layer_table(layers, batch, target.spec)
    fused = registry.get(backend).fuses and not unfused
    return Profile(target, backend, label, used, batch, runs, fused, table,
                   statistics.median(run_sums(layers)), summarise(samples, batch).median_ms,
                   samples, source, notes)


# -- families ----------------------------------------------------------------------
def expand_specs(text: str) -> list[str]:
    """'lenet_{1..5}c1f' or 'lenet_1c1f,lenet_2c1f' -> the names, each checked."""
    names: list[str] = []
    for part in filter(None, (p.strip() for p in _split_outside_braces(text))):
        m = re.search(r"\{(\d+)\.\.(\d+)\}", part)
        if m:
            lo, hi = int(m.group(1)), int(m.group(2))
            step = 1 if hi >= lo else -1
            names += [part[:m.start()] + str(i) + part[m.end():] for i in range(lo, hi + step, step)]
        else:
            names.append(part)
    for name in names:
        NetSpec.from_name(name)  # raises SpecError with a suggestion
    return list(dict.fromkeys(names))


def _split_outside_braces(text: str) -> list[str]:
    parts, depth, current = [], 0, ""
    for ch in text:
        depth += (ch == "{") - (ch == "}")
        if ch == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += ch
    return [*parts, current]


def family_name(names: Sequence[str]) -> str:
    """A file-name-safe name for a family: 'lenet_1c1f-lenet_5c1f'."""
    return f"{names[0]}-{names[-1]}" if len(names) > 1 else names[0]


