"""Parsing of list-like and key=value options shared by several commands."""

from __future__ import annotations

from typing import Any

from cnn_deploy.bench.timing import TimingConfig
from cnn_deploy.errors import BenchError


def parse_batches(text: str) -> list[int]:
    try:
        batches = [int(t) for t in text.replace(" ", "").split(",") if t]
    except ValueError:
        raise BenchError(f"--batch takes comma-separated integers like 1,16,256, got '{text}'") \
            from None
    if not batches or any(b < 1 for b in batches):
        raise BenchError(f"--batch values must be positive integers, got '{text}'")
    return batches


MAX_PROCESSES = 100  # fresh processes per cell: far beyond any use, short of a fork bomb


def processes(value: int | None, least: int = 1) -> int | None:
    """``--processes`` checked: ``least`` (0: in this process) .. MAX_PROCESSES."""
    if value is not None and not least <= value <= MAX_PROCESSES:
        raise BenchError(f"--processes must be within {least}..{MAX_PROCESSES}, got {value}")
    return value


def timing(duration: float | None, warmup: float | None, iterations: int | None,
           thesis: bool, quick: bool = False) -> TimingConfig:
    base = TimingConfig.thesis() if thesis else (TimingConfig.quick() if quick else TimingConfig())
    changes: dict[str, Any] = {}
    if duration is not None:
        changes["min_duration_ms"] = duration * 1000
    if warmup is not None:
        changes["warmup_ms"] = warmup * 1000
    if iterations is not None:
        changes["min_iterations"] = iterations
    import math

    if any(not math.isfinite(v) or v < 0 for v in changes.values()):
        raise BenchError("--duration, --warmup and --iterations must not be negative (nor nan "
                         "or infinite)")
    from dataclasses import replace

    return replace(base, **changes)
