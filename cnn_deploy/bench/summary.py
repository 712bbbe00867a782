"""Cells of several processes combined into table rows: the median process's figures, the
spread across processes, and the speed-up over the baseline row."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cnn_deploy.bench import intervals
from cnn_deploy.bench.plan import Measurement
from cnn_deploy.bench.timing import Stats, TimingConfig


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
    ci: tuple[float, float] | None = None  # 95 % interval of tiles/ms (processes, iterations)

    @property
    def halfwidth(self) -> float | None:
        """The interval's half-width relative to tiles/ms (0.05: +-5 %)."""
        return intervals.relative_halfwidth(self.ci, self.stats.tiles_per_ms)


def summarise_cells(cells: list[Measurement], config: TimingConfig = TimingConfig()) -> list[Summary]:
    groups: dict[tuple[int, int], list[Measurement]] = {}
    for cell in cells:
        groups.setdefault((cell.row, cell.batch), []).append(cell)
    baseline_tpm = {c.batch: _median_cell(g).stats.tiles_per_ms
                    for (_, _), g in groups.items() for c in g[:1] if c.baseline}
    out = []
    for (row, batch), group in sorted(groups.items()):
        mid = _median_cell(group)
        tpms = tuple(c.stats.tiles_per_ms for c in group)
        spread = (max(tpms) - min(tpms)) / float(np.median(tpms)) if len(tpms) > 1 else 0.0
        warnings = list(dict.fromkeys(w for c in group for w in c.warnings))
        if spread > config.spread_threshold:
            warnings.append(f"tiles/ms differs by {spread:.0%} across {len(group)} fresh processes "
                            f"({min(tpms):.1f}..{max(tpms):.1f}): bimodal or unstable figure")
        ci = intervals.process_ci([(c.samples_ms, c.batch, c.wall_ms) for c in group])
        half = intervals.relative_halfwidth(ci, mid.stats.tiles_per_ms)
        if ci is not None and half is not None and half > intervals.WIDE:
            warnings.append(f"tiles/ms is known to +-{half:.0%} only (95 % interval {ci[0]:.3g}.."
                            f"{ci[1]:.3g} over {len(group)} process(es)): raise --duration or "
                            "--processes before quoting it")
        base = baseline_tpm.get(batch)
        out.append(Summary(row, mid.label, mid.backend, batch, mid.stats, len(group), tpms,
                           spread, mid.stats.tiles_per_ms / base if base else None,
                           mid.baseline, tuple(warnings),
                           tuple(dict.fromkeys(n for c in group for n in c.notes)),
                           (ci[0], ci[1]) if ci else None))
    return out


def _median_cell(group: list[Measurement]) -> Measurement:
    ordered = sorted(group, key=lambda c: c.stats.tiles_per_ms)
    return ordered[(len(ordered) - 1) // 2]
