"""GPU timing read the way trtexec reports it: pure functions over measured cells.

A GPU cell (``Measurement.phases_ms`` is not None) carries, per timed iteration, the device time of
each phase from CUDA events (``h2d``, ``compute``, ``d2h``), the host's enqueue time and the
host's end-to-end latency (``Measurement.samples_ms``). This module turns them into one statistics
row per quantity (median, p90, p99, min, max), tiles/ms from GPU compute alone and from end
to end (thesis eq. 12 over the respective samples), and trtexec's three warnings:

- enqueue-bound: host enqueue takes at least as long as GPU compute, so the GPU waits for
  the host (CUDA graphs or a larger batch help);
- copy-bound: H2D + D2H take at least as long as GPU compute;
- unstable: the coefficient of variation of GPU compute exceeds 2.5 % (trtexec's threshold
  since TensorRT 10.9, sampleReporting.cpp; 1 % before).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from cnn_deploy.bench.plan import Measurement
from cnn_deploy.bench.timing import Stats, summarise

GPU_CV_THRESHOLD = 0.025  # trtexec's "GPU compute time is unstable" threshold since 10.9
# Rows of the report, in trtexec's order, with what each one measures.
QUANTITIES = {
    "compute": "GPU compute",
    "h2d": "H2D copy",
    "d2h": "D2H copy",
    "enqueue": "host enqueue",
    "latency": "end-to-end host latency",
}


@dataclass(frozen=True)
class GpuReport:
    """One GPU cell: statistics per quantity, tiles/ms two ways, and what to be wary of."""

    row: int
    label: str
    batch: int
    process: int
    stats: dict[str, Stats]  # keys from QUANTITIES; a phase the runner did not mark is absent
    tiles_per_ms_compute: float  # batch * iterations / summed GPU compute ms
    tiles_per_ms_end_to_end: float  # batch * iterations / summed end-to-end ms (or wall ms)
    warnings: tuple[str, ...]
    overlapped: bool = False  # trtexec's loop: latency is H2D + compute + D2H, tiles/ms over wall

    def to_dict(self) -> dict[str, object]:
        return {"row": self.row, "label": self.label, "batch": self.batch,
                "process": self.process,
                "stats": {k: s.to_dict() for k, s in self.stats.items()},
                "tiles_per_ms_compute": self.tiles_per_ms_compute,
                "tiles_per_ms_end_to_end": self.tiles_per_ms_end_to_end,
                "warnings": list(self.warnings), "overlapped": self.overlapped}


def is_gpu_cell(cell: Measurement) -> bool:
    return cell.phases_ms is not None


def phase_stats(cell: Measurement) -> dict[str, Stats]:
    """Statistics of every quantity a GPU cell measured (tiles/ms in each is eq. 12 over it)."""
    if cell.phases_ms is None:
        raise ValueError(f"{cell.label} batch {cell.batch} is not a GPU cell (no CUDA-event phases)")
    series: dict[str, list[float]] = {k: list(v) for k, v in cell.phases_ms.items() if v}
    if cell.enqueue_ms:
        series["enqueue"] = list(cell.enqueue_ms)
    series["latency"] = cell.samples_ms
    ordered = [k for k in QUANTITIES if k in series] + [k for k in series if k not in QUANTITIES]
    # Overlapped iterations: end-to-end tiles/ms over the wall time (trtexec's throughput)
    return {k: summarise(series[k], cell.batch, cell.wall_ms if k == "latency" else None)
            for k in ordered}


def gpu_warnings(stats: dict[str, Stats], cv_threshold: float = GPU_CV_THRESHOLD) -> list[str]:
    """trtexec's warnings from a cell's phase statistics (medians compared, as trtexec does)."""
    compute = stats.get("compute")
    if compute is None:
        return []
    out = []
    enqueue = stats.get("enqueue")
    if enqueue is not None and enqueue.median_ms >= compute.median_ms:
        out.append(f"enqueue-bound: host enqueue (median {enqueue.median_ms:.4f} ms) is not "
                   f"shorter than GPU compute ({compute.median_ms:.4f} ms), so the GPU waits for "
                   "the host; try CUDA graphs (-o torch.cuda_graph=true) or a larger batch")
    copies = [stats[k].median_ms for k in ("h2d", "d2h") if k in stats]
    if copies and sum(copies) >= compute.median_ms:
        out.append(f"copy-bound: H2D + D2H copies (median {sum(copies):.4f} ms) take at least "
                   f"as long as GPU compute ({compute.median_ms:.4f} ms); the figure measures "
                   "the PCIe/memory link more than the network")
    if compute.cv > cv_threshold:
        out.append(f"unstable GPU compute: coefficient of variation {compute.cv:.1%} > "
                   f"{cv_threshold:.0%}; lock the GPU clocks or close other GPU work")
    return out


def gpu_report(cell: Measurement, cv_threshold: float = GPU_CV_THRESHOLD) -> GpuReport:
    stats = phase_stats(cell)
    compute = stats.get("compute", stats["latency"])
    return GpuReport(cell.row, cell.label, cell.batch, cell.process, stats,
                     compute.tiles_per_ms, stats["latency"].tiles_per_ms,
                     tuple(gpu_warnings(stats, cv_threshold)), cell.wall_ms is not None)


def gpu_reports(cells: Iterable[Measurement], cv_threshold: float = GPU_CV_THRESHOLD) -> list[GpuReport]:
    """One report per GPU (row, batch): its median process by end-to-end tiles/ms."""
    groups: dict[tuple[int, int], list[Measurement]] = {}
    for cell in cells:
        if is_gpu_cell(cell):
            groups.setdefault((cell.row, cell.batch), []).append(cell)
    out = []
    for _, group in sorted(groups.items()):
        ordered = sorted(group, key=lambda c: c.stats.tiles_per_ms)
        out.append(gpu_report(ordered[(len(ordered) - 1) // 2], cv_threshold))
    return out
