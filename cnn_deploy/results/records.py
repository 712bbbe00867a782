"""The one record writer: every bench, sweep and profile record is built here, with the
schema version, the device record and the library versions, and appended to the store.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from cnn_deploy import __version__
from cnn_deploy.backends import registry
from cnn_deploy.backends.base import Target
from cnn_deploy.bench import intervals
from cnn_deploy.bench.plan import Measurement
from cnn_deploy.bench.timing import TimingConfig
from cnn_deploy.profile.run import Profile
from cnn_deploy.profile.table import category_totals
from cnn_deploy.results import store


def new_run_id() -> str:
    return time.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]


def environment(gpu_index: int = 0) -> tuple[dict[str, Any], dict[str, str]]:
    """(device record of CUDA device ``gpu_index``, library versions of the package and of
    every backend)."""
    from cnn_deploy.device import device_record, library_versions

    return device_record(gpu_index), library_versions(registry.packages())


def make_record(kind: str, run_id: str, payload: dict[str, Any], device: dict[str, Any],
                versions: dict[str, str]) -> dict[str, Any]:
    return {"schema": store.SCHEMA_VERSION, "kind": kind, "run_id": run_id,
            "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "tool": f"cnn_deploy {__version__}", "device": device, "versions": versions,
            **payload}


def model_fields(target: Target, onnx_sha: str | None) -> dict[str, Any]:
    return {**target.to_dict(), "onnx_sha256": onnx_sha}


def measurement_payload(cell: Measurement, *, model: dict[str, Any], timing: TimingConfig, precision: str,
                 processes: int, scenario: str = "offline", extra: dict[str, Any] | None = None
                 ) -> dict[str, Any]:
    """A bench record's payload for one measured cell (one process)."""
    payload: dict[str, Any] = {
        "model": model,
        "backend": {"name": cell.backend, "label": cell.label, "device": cell.device,
                    "options": cell.options, "baseline": cell.baseline, "applied": cell.applied},
        "scenario": "single-stream" if cell.batch == 1 else scenario,
        "precision": precision, "batch": cell.batch, "requested_batch": cell.requested_batch,
        "process": cell.process, "processes": max(processes, 1), "in_process": processes == 0,
        "timing": asdict(timing), "samples_ms": cell.samples_ms,
        "warmup_iterations": cell.warmup_iterations, "stats": cell.stats.to_dict(),
        # 95 % bootstrap intervals of this process's figures (bench.intervals)
        "ci95": intervals.sample_ci(cell.samples_ms, cell.batch, cell.wall_ms),
        "warnings": cell.warnings, "notes": cell.notes, "input": cell.input,
        "peak_rss_mb": cell.peak_rss_mb,
    }
    if cell.wall_ms is not None:  # overlapped (trtexec) timing: what tiles/ms is over
        payload["wall_ms"] = cell.wall_ms
    if cell.phases_ms is not None:
        payload["enqueue_ms"] = cell.enqueue_ms
        payload["phases_ms"] = cell.phases_ms
    return {**payload, **(extra or {})}


def loops_payload(loops: Sequence[Measurement]) -> list[dict[str, Any]] | None:
    """Every process's raw samples of a cell timed in several (the thesis's loops)."""
    if len(loops) < 2:
        return None
    return [{"process": c.process, "samples_ms": c.samples_ms,
             "tiles_per_ms": c.stats.tiles_per_ms} for c in loops]


def profile_payload(p: Profile) -> dict[str, Any]:
    """What a ``kind: "profile"`` record holds beside the device and versions."""
    return {"model": p.target.to_dict(), "backend": {"name": p.backend, "label": p.label,
                                                     "options": p.options},
            "batch": p.batch, "runs": p.runs, "graph": "fused" if p.fused else "unfused",
            "layers": p.table, "categories": category_totals(p.table),
            "layer_sum_ms": p.layer_sum_ms, "unprofiled_ms": p.unprofiled_ms,
            "unprofiled_samples_ms": p.unprofiled_samples_ms,
            "overhead_ratio": p.overhead_ratio, "input": p.input, "notes": p.notes}


class Writer:
    """Appends the records of one run (one run id, one device record) to a JSONL file."""

    def __init__(self, path: Path | None, gpu_index: int = 0) -> None:
        self.path = path
        self.gpu_index = gpu_index
        self.run_id = new_run_id()
        if path is not None:
            store.check_writable(path)  # before minutes of timing, not after
        self._env: tuple[dict[str, Any], dict[str, str]] | None = None

    @property
    def device(self) -> dict[str, Any]:
        return self._environment()[0]

    def _environment(self) -> tuple[dict[str, Any], dict[str, str]]:
        if self._env is None:
            self._env = environment(self.gpu_index)
        return self._env

    def append(self, kind: str, payload: dict[str, Any]) -> dict[str, Any]:
        device, versions = self._environment()
        record = make_record(kind, self.run_id, payload, device, versions)
        if self.path is not None:
            store.append(self.path, record)
        return record


def save_profiles(profiles: Sequence[Profile], path: Path) -> str:
    """Append one record per profile; returns the run id."""
    writer = Writer(path)
    for p in profiles:
        writer.append("profile", profile_payload(p))
    return writer.run_id
