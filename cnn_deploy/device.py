"""The environment record stored beside every measurement: machine, OS, library versions."""

from __future__ import annotations

import functools
import importlib.metadata
import os
import platform
import re
from pathlib import Path
from typing import Any

LIBRARIES = ("cnn-deploy", "numpy", "torch", "onnx", "onnxruntime", "onnxruntime-gpu",
             "tensorrt", "cuda-python")


@functools.cache
def device_record() -> dict[str, Any]:
    """What this process runs on; cheap, imports no heavy package."""
    cores = _affinity()
    record: dict[str, Any] = {
        "kind": "cpu",
        "cpu": cpu_model(),
        "machine": platform.machine(),
        "logical_cpus": os.cpu_count(),
        "usable_cpus": cores,
        "memory_bytes": _meminfo("MemTotal"),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "env": {k: os.environ[k] for k in ("OMP_NUM_THREADS", "OPENBLAS_CORETYPE",
                                           "MKL_NUM_THREADS") if k in os.environ},
    }
    jetson = Path("/etc/nv_tegra_release")
    if jetson.is_file():
        record["jetson_release"] = jetson.read_text(errors="replace").splitlines()[0][:200]
    record["slug"] = device_slug(record)
    return record


def library_versions() -> dict[str, str]:
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def cpu_model() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return platform.processor() or platform.machine()
    match = re.search(r"^(?:model name|Hardware|Model)\s*:\s*(.+)$", text, re.MULTILINE)
    return match.group(1).strip() if match else platform.processor() or platform.machine()


def device_slug(record: dict[str, Any]) -> str:
    """A folder-safe name for this device, e.g. 'cpu-amd-epyc-7b13-2c'."""
    name = re.sub(r"\((?:R|TM)\)|CPU|Processor|@.*$", "", str(record.get("cpu", "cpu")))
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:40]
    return f"{record.get('kind', 'cpu')}-{slug}-{record.get('usable_cpus')}c"


def available_memory_bytes() -> int | None:
    return _meminfo("MemAvailable")


def _meminfo(key: str) -> int | None:
    try:
        text = Path("/proc/meminfo").read_text()
    except OSError:
        return None
    match = re.search(rf"^{key}:\s+(\d+) kB", text, re.MULTILINE)
    return int(match.group(1)) * 1024 if match else None


def _affinity() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        return os.cpu_count() or 1
