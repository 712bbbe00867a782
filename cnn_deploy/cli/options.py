"""Parsing of list-like and key=value options shared by several commands."""

from __future__ import annotations

from typing import Any

from cnn_deploy.bench import TimingConfig
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


def parse_options(items: list[str] | None) -> dict[str, dict[str, Any]]:
    """['torch.memory_format=contiguous', 'onnxruntime.threads=1'] -> nested dict."""
    options: dict[str, dict[str, Any]] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        backend, dot, name = key.partition(".")
        if not sep or not dot or not name:
            raise BenchError(f"--option takes BACKEND.KEY=VALUE (e.g. onnxruntime.opt_level=all), "
                             f"got '{item}'")
        options.setdefault(backend.strip().lower(), {})[name.strip()] = _value(value.strip())
    return options


def _value(text: str) -> Any:
    lowered = text.lower()
    if lowered in ("true", "yes", "on"):
        return True
    if lowered in ("false", "no", "off"):
        return False
    if lowered in ("none", "default"):
        return None
    try:
        return int(text)
    except ValueError:
        return text


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
    if any(v < 0 for v in changes.values()):
        raise BenchError("--duration, --warmup and --iterations must not be negative")
    from dataclasses import replace

    return replace(base, **changes)
