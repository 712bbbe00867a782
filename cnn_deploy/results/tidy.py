"""The one record reader for analysis: result files -> one tidy list of flat rows.

Report, compare, sweep resume and the predictor all read records through here. Bench
records become one row each; profile records one row per category. Version-1 records
are read as they are (fields added since are optional).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cnn_deploy.results import store

Rows = list[dict[str, Any]]
ACCURACIES = ("90", "95", "97")


def load(paths: Sequence[Path]) -> tuple[list[dict[str, Any]], list[str]]:
    """Every record of ``paths`` and one line per damaged line skipped; a file without a single
    record (empty, another kind of file, all lines damaged) is an error: nothing to analyse."""
    from cnn_deploy.errors import ResultsError

    got = [store.read(path) for path in paths]
    for path, found in zip(paths, got, strict=True):
        if not found.records:
            why = f" ({len(found.skipped)} lines skipped, the first: {found.skipped[0]})" \
                if found.skipped else " (it is empty)"
            raise ResultsError(f"{path} holds no cnn_deploy records{why}: give a results file "
                               "that `cnndeploy bench`, `sweep` or `profile` wrote")
    return [r for g in got for r in g.records], [s for g in got for s in g.skipped]


def tidy(records: Sequence[dict[str, Any]]) -> Rows:
    """Bench records -> one row each; profile records -> one row per category."""
    rows: Rows = []
    for r in records:
        model = _dict(r, "model")
        spec = _dict(model, "spec")
        device = _dict(r, "device")
        backend = _dict(r, "backend")
        base = {"kind": r.get("kind"), "net": spec.get("name") or model.get("name"),
                "conv_layers": spec.get("conv_layers"), "fc_layers": spec.get("fc_layers"),
                "depth": spec.get("depth"), "neurons": spec.get("neurons"),
                # records from before these varied name the thesis's 5x5 valid convs, 2x2 pool
                **({k: spec.get(k, d) for k, d in (("kernel", 5), ("padding", 0), ("pool", 2))}
                   if spec else {"kernel": None, "padding": None, "pool": None}),
                "backend": backend.get("label"), "backend_name": backend.get("name"),
                "baseline": (bool(backend["baseline"]) if "baseline" in backend
                             else "[baseline]" in str(backend.get("label") or "")),  # older records
                "batch": r.get("batch"), "device": _device_name(device),
                "setting": _setting(device, backend, _dict(r, "versions")),
                "backend_options": _dict(backend, "options"),
                "backend_version": _dict(r, "versions").get(str(backend.get("name"))),
                "has_device": bool(device), "run_id": r.get("run_id"),
                "cache_mb": _cache_mb(device, backend),
                "simd_lanes": _simd_lanes(device, backend),
                **_peak_fields(device)}
        if r.get("kind") == "bench":
            sweep = _dict(r, "sweep")
            tta = _dict(r, "time_to_accuracy")
            stats = _dict(r, "stats")
            ci = _dict(r, "ci95").get("tiles_per_ms")
            ci = ci if isinstance(ci, list) and len(ci) == 2 else [None, None]
            samples = r.get("samples_ms")
            rows.append({**base, "precision": r.get("precision"), "scenario": r.get("scenario"),
                         "ci_lo": ci[0], "ci_hi": ci[1],
                         # for intervals over several records (repeats, passes) of one cell
                         "samples_ms": samples if isinstance(samples, list) else None,
                         "wall_ms": r.get("wall_ms"),
                         "requested_batch": r.get("requested_batch", r.get("batch")),
                         "tiles_per_ms": stats.get("tiles_per_ms"),
                         "median_ms": stats.get("median_ms"), "p90_ms": stats.get("p90_ms"),
                         "cell": r.get("cell"), "sweep_group": sweep.get("group"),
                         "test_accuracy": _number(r.get("test_accuracy")),
                         "sweep_method": sweep.get("method"), "drift": sweep.get("drift"),
                         **{f"tta_{a}": tta.get(a) for a in ACCURACIES}})
        elif r.get("kind") == "profile":
            batch = r.get("batch") or 1
            conv = [(layer.get("arch_layers") or "", layer.get("time_ms") or 0.0)
                    for layer in r.get("layers") or [] if "conv" in (layer.get("category") or "")
                    or "conv" in (layer.get("constituents") or "")]
            layers = [(str(layer.get("arch_layers") or ""), _number(layer.get("time_ms")) or 0.0)
                      for layer in r.get("layers") or [] if isinstance(layer, dict)]
            summed, unprofiled = _number(r.get("layer_sum_ms")), _number(r.get("unprofiled_ms"))
            for t in r.get("categories") or []:
                rows.append({**base, "category": t["category"],
                             "us_per_tile": t["time_ms"] * 1000.0 / batch,
                             "conv_layer_times": conv, "layer_times": layers,
                             "precision": r.get("precision"),
                             # profiled layer times x this = the unprofiled run's time
                             "profile_scale": unprofiled / summed if summed and unprofiled
                             and summed > 0 and unprofiled > 0 else None})
    return rows


Passes = list[tuple[list[float], int, float | None]]


def cell_passes(path: Path) -> dict[str, Passes]:
    """Each sweep cell key's records in ``path``: (samples_ms, batch, wall_ms) per record (a
    pass; samples empty and batch 0 where a record lacks them); a missing file has none, a
    cut line is skipped."""
    out: dict[str, Passes] = {}
    if not path.is_file():
        return out
    for r in store.read(path).records:
        key, samples, batch = r.get("cell"), r.get("samples_ms"), r.get("batch")
        if isinstance(key, str):
            out.setdefault(key, []).append((samples if isinstance(samples, list) else [],
                                            batch if isinstance(batch, int) else 0,
                                            r.get("wall_ms")))
    return out


def done_cells(path: Path) -> set[str]:
    """Sweep cell keys already in ``path`` (a missing file: none; a cut line is skipped)."""
    return set(cell_passes(path))


def _peak_fields(device: dict[str, Any]) -> dict[str, Any]:
    """The GPU's published peaks the record carries (older records: looked up by name)."""
    gpu = _dict(device, "gpu")
    peak: dict[str, Any] | None = _dict(gpu, "peak") or None
    if peak is None and gpu.get("name"):
        from cnn_deploy.peaks import gpu_peak

        peak = gpu_peak(str(gpu["name"]))
    peak = peak or {}
    return {"peak_fp32_tflops": peak.get("fp32_tflops"), "peak_fp16_tflops": peak.get("fp16_tflops"),
            "peak_bandwidth_gbs": peak.get("bandwidth_gbs")}


def _device_name(device: dict[str, Any]) -> Any:
    """The device's slug; records written before engine folders and records shared one GPU
    name carry 'cuda-<gpu slug>', read as the GPU slug alone so both runs group together."""
    slug = device.get("slug") or device.get("cpu")
    if isinstance(slug, str) and slug.startswith("cuda-") and device.get("kind") == "cuda":
        return slug.removeprefix("cuda-")
    return slug


def _setting(device: dict[str, Any], backend: dict[str, Any], versions: dict[str, Any]) -> str:
    """What a figure was measured on and with, in one line: the device record's hardware, the
    backend's package version and the options it ran with (tuned ones included)."""
    gpu = _dict(device, "gpu")
    hardware = gpu.get("name") or device.get("cpu") or "?"
    cpus = f", {device['logical_cpus']} CPUs" if device.get("logical_cpus") else ""
    name = str(backend.get("name"))
    options = ", ".join(f"{k}={v}" for k, v in sorted(_dict(backend, "options").items())
                        if v is not None)
    return (f"{hardware}{cpus}; {name} {versions.get(name, '')}".rstrip()
            + (f" ({options})" if options else ""))


def _cache_mb(device: dict[str, Any], backend: dict[str, Any]) -> float | None:
    """The last-level cache the backend's weights pass through, in MB: the GPU's L2 for a
    CUDA backend, else the CPU's last level (None where the record does not say)."""
    gpu = _dict(device, "gpu")
    size = gpu.get("l2_cache_bytes") if _on_gpu(backend) else device.get("llc_bytes")
    number = _number(size)
    return number / 1e6 if number and number > 0 else None


def _on_gpu(backend: dict[str, Any]) -> bool:
    return str(backend.get("device") or "").startswith("cuda")  # 'cuda', 'cuda:1'


def _simd_lanes(device: dict[str, Any], backend: dict[str, Any]) -> int | None:
    """The CPU's fp32 vector lanes for a CPU backend (None on a GPU, or where not recorded)."""
    lanes = device.get("simd_lanes")
    if _on_gpu(backend) or isinstance(lanes, bool) or not isinstance(lanes, int) \
            or not 0 < lanes <= 1024:
        return None
    return lanes


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _dict(record: dict[str, Any], key: str) -> dict[str, Any]:
    """A nested object of a record, or {} when absent or not an object (a hand-edited line)."""
    value = record.get(key)
    return value if isinstance(value, dict) else {}
