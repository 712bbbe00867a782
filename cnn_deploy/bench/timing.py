"""The one timing harness for every backend: warm-up, timed iterations, statistics, warnings.

Defaults follow trtexec: warm-up by time (200 ms) and count, then timed iterations until
both a minimum duration and a minimum count are met. Every per-iteration sample is kept;
median, p90, p99, min, max and the coefficient of variation are computed from them.
tiles/ms is thesis eq. 12 generalised: tiles classified / wall time of the timed runs in ms.
On a CPU the clock is ``time.perf_counter_ns`` (monotonic) around run + synchronise.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

from cnn_deploy.backends.base import Runner


@dataclass(frozen=True)
class TimingConfig:
    warmup_ms: float = 200.0  # trtexec --warmUp=200
    warmup_iterations: int = 2
    min_duration_ms: float = 1000.0  # trtexec uses 3 s; 1 s keeps CPU sweeps in budget
    min_iterations: int = 10  # trtexec --iterations=10
    max_duration_ms: float = 30_000.0  # stop a huge cell even if min_iterations is not met
    cv_threshold: float = 0.05  # trtexec warns at 1 % on a GPU; a shared 2-core CPU is noisier
    # GPU runners only: trtexec's loop, two iterations in flight (time_overlapped)
    overlap: bool = False
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


def summarise(samples_ms: list[float] | np.ndarray, batch: int,
              wall_ms: float | None = None) -> Stats:
    """Statistics of per-iteration samples; tiles/ms over their sum, or over ``wall_ms`` when
    iterations overlapped (then the sum counts overlapping time twice)."""
    s = np.asarray(samples_ms, dtype=np.float64)
    if s.size == 0:
        raise ValueError("no samples")
    mean = float(s.mean())
    total = float(s.sum()) if wall_ms is None else float(wall_ms)
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


@dataclass
class Samples:
    """One timed run of a runner: host figures always, device phases where it has a timer.

    ``latency_ms``: per iteration, host clock from the start of the enqueue to the end of the
    synchronise (on a CPU runner: run + synchronise). With a device :class:`PhaseTimer` (GPU
    runners), trtexec's other figures too: ``enqueue_ms`` (host time to enqueue) and
    ``phases_ms`` (CUDA-event time per phase: h2d, compute, d2h)."""

    latency_ms: list[float]
    warmup_iterations: int
    enqueue_ms: list[float] | None = None
    phases_ms: dict[str, list[float]] | None = None
    wall_ms: float | None = None  # overlapped: first enqueue to last completion (throughput)


def time_runner(runner: Runner, x: np.ndarray, config: TimingConfig,
                clock: Clock = time.perf_counter_ns) -> Samples:
    """The one timing loop: warm up (by time and count), then time iterations until both the
    minimum duration and the minimum count are met (or the maximum duration is passed)."""
    timer = runner.phase_timer()
    staged = runner.stage(x)
    warm, start = 0, clock()
    while warm < config.warmup_iterations or (clock() - start) / 1e6 < config.warmup_ms:
        if timer is None:
            runner.run(staged)
        else:
            runner.run_phased(staged, timer)
        runner.synchronize()
        warm += 1
    out = Samples([], warm)
    if timer is not None:
        out.enqueue_ms, out.phases_ms = [], {}
    elapsed = 0.0
    while True:
        if timer is None:
            t0 = clock()
            runner.run(staged)
            runner.synchronize()
            t2 = clock()
        else:
            assert out.enqueue_ms is not None and out.phases_ms is not None
            t0 = clock()
            runner.run_phased(staged, timer)
            t1 = clock()
            runner.synchronize()
            t2 = clock()
            out.enqueue_ms.append(runner.last_enqueue_ms if runner.last_enqueue_ms is not None
                                  else (t1 - t0) / 1e6)
            for phase, ms in timer.elapsed_ms().items():
                out.phases_ms.setdefault(phase, []).append(ms)
        out.latency_ms.append((t2 - t0) / 1e6)
        elapsed += out.latency_ms[-1]
        n = len(out.latency_ms)
        if (n >= config.min_iterations and elapsed >= config.min_duration_ms) or (
                elapsed >= config.max_duration_ms):
            return out


def time_overlapped(runner: Runner, x: np.ndarray, config: TimingConfig,
                    clock: Clock = time.perf_counter_ns, depth: int = 2) -> Samples:
    """trtexec's inference loop (samples/common/sampleInference.cpp, ``inferenceLoop`` and
    ``Iteration`` with ``overlap``, TensorRT 10.x/11.0): ``depth`` iterations in flight, each
    with its own CUDA events; enqueue iteration i, then wait for iteration i - 1, so the GPU
    never idles while the host enqueues. Per iteration: the enqueue's host time and the device
    phases (H2D, compute, D2H); its latency is H2D + compute + D2H, as trtexec's "Latency";
    throughput (tiles/ms) is iterations over the wall time from the first enqueue to the last
    completion, as trtexec's "Throughput". Warm-up as :func:`time_runner`, not overlapped.
    A runner without a device timer (a CPU row beside an engine) is timed by :func:`time_runner`:
    its run ends synchronised, so there is nothing to overlap."""
    first_timer = runner.phase_timer()
    if first_timer is None:
        return time_runner(runner, x, config, clock)
    made = [first_timer, *(runner.phase_timer() for _ in range(depth - 1))]
    timers = [t for t in made if t is not None]
    staged = runner.stage(x)
    warm, start = 0, clock()
    while warm < config.warmup_iterations or (clock() - start) / 1e6 < config.warmup_ms:
        runner.run_phased(staged, timers[0])
        runner.synchronize()
        warm += 1
    enqueue: list[float] = []
    phases_out: dict[str, list[float]] = {}
    out = Samples([], warm, enqueue, phases_out)
    active = [False] * depth
    first = clock()
    done_at = first

    def retire(slot: int) -> None:
        nonlocal done_at
        phases = timers[slot].elapsed_ms()  # waits for the slot's last event
        done_at = clock()
        for phase, ms in phases.items():
            phases_out.setdefault(phase, []).append(ms)
        # trtexec's latency: H2D + compute + D2H, not the waits between them ('queue' phases)
        out.latency_ms.append(sum(v for k, v in phases.items() if not k.startswith("queue")))
        active[slot] = False

    i = 0
    while True:
        slot = i % depth
        if active[slot]:
            retire(slot)
        n, wall = len(out.latency_ms), (done_at - first) / 1e6
        if (n >= config.min_iterations and wall >= config.min_duration_ms) or (
                n > 0 and wall >= config.max_duration_ms):
            break
        t0 = clock()
        runner.run_phased(staged, timers[slot])
        t1 = clock()
        # the enqueue alone where the runner times it (trtexec times enqueueV3, not the copies)
        enqueue.append(runner.last_enqueue_ms if runner.last_enqueue_ms is not None
                       else (t1 - t0) / 1e6)
        active[slot] = True
        i += 1
    for k in range(depth):  # drain, oldest first: nothing enqueued is left running
        slot = (i + k) % depth
        if active[slot]:
            retire(slot)
    runner.synchronize()
    out.enqueue_ms = enqueue[:len(out.latency_ms)]
    out.wall_ms = (done_at - first) / 1e6
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
