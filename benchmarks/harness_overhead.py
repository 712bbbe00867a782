"""The timing harness's own cost per iteration, against a bare ``perf_counter_ns`` loop.

A trivial Runner whose ``run()`` does nothing (``noop``) or a fixed, tiny amount of work
(``add``: ``np.add`` on 256 floats) is timed two ways, N iterations each:

* bare:    ``t0 = perf_counter_ns(); for _ in range(N): run(staged); t1 = perf_counter_ns()``
* harness: ``bench.time_runner(runner, x, config)`` with no warm-up and exactly N iterations,
  timed from outside with the same clock.

Reported per iteration: bare ns, harness ns (wall, outside), the difference (the harness's
bookkeeping: two clock reads, ``synchronize()``, the list append and the stop test), and
the mean and median of the samples the harness itself records (tiles/ms is iterations *
batch / sum of samples, i.e. it follows the mean sample). Each figure is the median over
``--repeats`` repetitions.

    python benchmarks/harness_overhead.py [--iterations 200000] [--repeats 7] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cnn_deploy.backends.base import Runner, Signature
from cnn_deploy.bench.timing import TimingConfig, time_runner


class TrivialRunner(Runner):
    """``work='noop'``: run() returns at once; ``work='add'``: one np.add on 256 floats."""

    backend = "trivial"

    def __init__(self, work: str) -> None:
        super().__init__({"work": work})
        self.work = work
        self._out = np.empty(256, dtype=np.float32)

    @property
    def label(self) -> str:
        return f"trivial {self.work}"

    def _activate(self) -> None:
        return None

    @property
    def signature(self) -> Signature:
        return Signature("x", (None, 256), "float32", "y")

    def stage(self, x: np.ndarray) -> Any:
        return np.ascontiguousarray(x[0])

    def run(self, staged: Any) -> Any:
        if self.work == "add":
            return np.add(staged, staged, out=self._out)
        return None

    def to_numpy(self, output: Any) -> np.ndarray:
        return np.asarray(output)


@dataclass(frozen=True)
class Overhead:
    work: str
    iterations: int
    repeats: int
    bare_ns: float  # per iteration, wall, median over repeats
    harness_ns: float  # per iteration, wall measured outside time_runner
    overhead_ns: float  # harness_ns - bare_ns
    sample_mean_ns: float  # the harness's own samples (inside its timed region): mean
    sample_median_ns: float  # ... and median (perf_counter_ns ticks show in it)


def bare_loop_ns(runner: Runner, staged: Any, iterations: int) -> float:
    run = runner.run
    t0 = time.perf_counter_ns()
    for _ in range(iterations):
        run(staged)
    return (time.perf_counter_ns() - t0) / iterations


def harness_ns(runner: Runner, x: np.ndarray, iterations: int) -> tuple[float, float, float]:
    """(wall ns per iteration of time_runner, mean and median recorded sample in ns)."""
    config = TimingConfig(warmup_ms=0.0, warmup_iterations=0, min_duration_ms=0.0,
                          min_iterations=iterations, max_duration_ms=float("inf"))
    t0 = time.perf_counter_ns()
    samples = time_runner(runner, x, config).latency_ms
    wall = time.perf_counter_ns() - t0
    if len(samples) != iterations:
        raise RuntimeError(f"time_runner ran {len(samples)} iterations, not {iterations}")
    return wall / iterations, float(np.mean(samples)) * 1e6, float(np.median(samples)) * 1e6


def measure(work: str, iterations: int, repeats: int) -> Overhead:
    x = np.ones((1, 256), dtype=np.float32)
    bare, wall, mean, median = [], [], [], []
    with TrivialRunner(work) as runner:
        staged = runner.stage(x)
        bare_loop_ns(runner, staged, iterations // 10)  # warm the interpreter's caches
        for _ in range(repeats):  # interleaved, so background load hits both alike
            bare.append(bare_loop_ns(runner, staged, iterations))
            w, m, d = harness_ns(runner, x, iterations)
            wall.append(w)
            mean.append(m)
            median.append(d)
    b, h = statistics.median(bare), statistics.median(wall)
    return Overhead(work, iterations, repeats, b, h, h - b, statistics.median(mean),
                    statistics.median(median))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iterations", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)

    results = [measure(work, args.iterations, args.repeats) for work in ("noop", "add")]
    print(f"harness overhead: {args.iterations} iterations, median of {args.repeats} repeats")
    print(f"{'run()':<6} {'bare ns/it':>11} {'harness ns/it':>14} {'overhead ns/it':>15} "
          f"{'sample mean ns':>15} {'sample median ns':>17}")
    for r in results:
        print(f"{r.work:<6} {r.bare_ns:>11.1f} {r.harness_ns:>14.1f} {r.overhead_ns:>15.1f} "
              f"{r.sample_mean_ns:>15.1f} {r.sample_median_ns:>17.1f}")
    if args.json:
        args.json.write_text(json.dumps({"benchmark": "harness_overhead",
                                         "results": [asdict(r) for r in results]}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
