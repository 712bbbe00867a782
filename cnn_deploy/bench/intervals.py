"""Confidence intervals for every figure, by the bootstrap (percentile method, 95 %).

Within one process the iterations are resampled: tiles/ms (over their sum, or scaled to the
overlapped wall time), the median, p90 and p99. Across fresh processes the resampling is
hierarchical: processes are drawn with replacement, then each drawn process's iterations, and
the statistic is the median of the processes' tiles/ms, the figure a table shows. The process
level is what catches a bimodal runtime: one process's iterations agree with each other while
the next process runs at another level.

Seeded (the same samples give the same interval); pure numpy; cheap (the replicates are capped
so that a cell of 100,000 iterations costs as much as one of 1,000).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

LEVEL = 0.95
REPLICATES = 1000
WIDE = 0.05  # a figure whose 95 % interval is wider than +-5 % of it is marked
_MAX_DRAWS = 2_000_000  # replicates x iterations per bootstrap, to bound time and memory


def _bounds(values: np.ndarray) -> list[float]:
    tail = (1 - LEVEL) / 2 * 100
    lo, hi = np.percentile(values, [tail, 100 - tail])
    return [float(lo), float(hi)]


def _replicates(n: int) -> int:
    return int(max(200, min(REPLICATES, _MAX_DRAWS // max(n, 1))))


def sample_ci(samples_ms: Sequence[float], batch: int, wall_ms: float | None = None,
              seed: int = 0) -> dict[str, list[float]]:
    """95 % intervals of one process's figures: ``tiles_per_ms``, ``median_ms``, ``p90_ms``,
    ``p99_ms``; empty with fewer than 3 iterations."""
    s = np.asarray(samples_ms, dtype=np.float64)
    n = s.size
    if n < 3:
        return {}
    rng = np.random.default_rng(seed)
    draws = s[rng.integers(0, n, (_replicates(n), n))]
    # overlapped iterations: tiles/ms is over the wall time, which the sum overstates; keep
    # the measured ratio between the two for every replicate
    scale = (float(s.sum()) / wall_ms) if wall_ms else 1.0
    tiles = n * batch / draws.sum(axis=1) * scale
    return {"tiles_per_ms": _bounds(tiles), "median_ms": _bounds(np.median(draws, axis=1)),
            "p90_ms": _bounds(np.percentile(draws, 90, axis=1)),
            "p99_ms": _bounds(np.percentile(draws, 99, axis=1))}


def process_ci(processes: Sequence[tuple[Sequence[float], int, float | None]],
               seed: int = 0) -> list[float] | None:
    """95 % interval of the median process's tiles/ms, from (samples_ms, batch, wall_ms) per
    fresh process, resampling processes and then iterations; None without samples."""
    groups = [(np.asarray(s, dtype=np.float64), b, w) for s, b, w in processes if len(s) >= 1]
    if not groups:
        return None
    rng = np.random.default_rng(seed)
    reps = _replicates(max(g[0].size for g in groups) * len(groups))
    per_process = []  # (reps,) tiles/ms of each process's own resampled iterations
    for s, batch, wall in groups:
        scale = (float(s.sum()) / wall) if wall else 1.0
        draws = s[rng.integers(0, s.size, (reps, s.size))]
        per_process.append(s.size * batch / draws.sum(axis=1) * scale)
    table = np.stack(per_process, axis=1)  # (reps, processes)
    picks = rng.integers(0, len(groups), (reps, len(groups)))
    medians = np.median(np.take_along_axis(table, picks, axis=1), axis=1)
    return _bounds(medians)


def relative_halfwidth(ci: Sequence[float] | None, value: float) -> float | None:
    """Half the interval's width over the figure (0.05: +-5 %)."""
    if not ci or not value:
        return None
    return (ci[1] - ci[0]) / 2 / abs(value)


def overlap(a: Sequence[float] | None, b: Sequence[float] | None) -> bool:
    """Two intervals overlap (then their figures' order cannot be told at this noise level)."""
    return bool(a and b and a[0] <= b[1] and b[0] <= a[1])
