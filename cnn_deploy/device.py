"""The environment record stored beside every measurement: machine, OS, library versions.

On an NVIDIA GPU the record gains a ``gpu`` block: name, compute capability, SM count,
SM/memory clocks (current and max), temperature, power draw and limit, driver version and
clock-throttle reasons, read through NVML (``pip install nvidia-ml-py``, imported as
``pynvml``) and, for name / compute capability / SMs, ``torch.cuda`` when NVML is absent.
On a Jetson (``/etc/nv_tegra_release``) it also holds the power mode (``nvpmodel -q``) and
what jetson-stats (``jtop``) reports. Every part is optional: a missing library or a
counter the device does not support leaves its fields out and says so in ``notes``.
``energy_mj()`` reads NVML's energy counter, so a caller can compute tiles per joule.
"""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
import os
import platform
import re
import shutil
import subprocess
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

# Always recorded; each backend adds its own packages (cnn_deploy.backends.registry.packages).
LIBRARIES = ("cnn-deploy", "numpy", "onnx")


@functools.cache
def device_record(gpu_index: int = 0) -> dict[str, Any]:
    """What this process runs on (CUDA device ``gpu_index`` where there is a GPU); cheap,
    imports no heavy package."""
    cores = _affinity()
    record: dict[str, Any] = {
        "kind": "cpu",
        "cpu": cpu_model(),
        "machine": platform.machine(),
        "logical_cpus": os.cpu_count(),
        "usable_cpus": cores,
        "memory_bytes": _meminfo("MemTotal"),
        "llc_bytes": cpu_llc_bytes(),
        "simd_lanes": cpu_simd_lanes(),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "env": {k: os.environ[k] for k in ("OMP_NUM_THREADS", "OPENBLAS_CORETYPE",
                                           "MKL_NUM_THREADS") if k in os.environ},
    }
    jetson = JETSON_RELEASE.is_file()
    if jetson:
        record["jetson_release"] = JETSON_RELEASE.read_text(errors="replace").splitlines()[0][:200]
    if gpu_present():
        record["kind"] = "cuda"
        record["gpu"] = gpu_record(gpu_index)
        from cnn_deploy.peaks import gpu_peak

        peak = gpu_peak(str(record["gpu"].get("name", "")), _board())
        if peak is not None:
            record["gpu"]["peak"] = peak
        if jetson:
            record["jetson"] = jetson_record()
    record["slug"] = device_slug(record)
    return record


def cpu_llc_bytes(root: Path = Path("/sys/devices/system/cpu/cpu0/cache")) -> int | None:
    """The size of the CPU's last-level cache (the highest level sysfs lists), or None."""
    best: tuple[int, int] | None = None
    try:
        for index in root.glob("index*"):
            level = int((index / "level").read_text())
            text = (index / "size").read_text().strip().upper()
            unit = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1)
            size = int(text.rstrip("KMG")) * unit
            if best is None or (level, size) > best:
                best = (level, size)
    except (OSError, ValueError):
        return None
    return best[1] if best else None


def cpu_simd_lanes(cpuinfo: Path = Path("/proc/cpuinfo")) -> int | None:
    """fp32 lanes of the CPU's widest vector register: 16 with AVX-512, 8 with AVX/AVX2, 4 with
    SSE2 or NEON (an SVE unit's length varies: NEON's 4 is the floor), else None. oneDNN lays a
    conv's channels out in blocks of this many (nChw16c on AVX-512): what the latency model
    pads channels to."""
    try:
        text = cpuinfo.read_text(errors="replace")
    except OSError:
        return None
    match = re.search(r"^(?:flags|Features)\s*:(.*)$", text, re.MULTILINE)
    flags = set(match.group(1).split()) if match else set()
    for lanes, names in ((16, {"avx512f"}), (8, {"avx", "avx2"}), (4, {"sse2", "asimd", "neon"})):
        if flags & names:
            return lanes
    return None


def library_versions(packages: Iterable[str] = ()) -> dict[str, str]:
    """Installed versions of the always-recorded libraries and of ``packages``."""
    versions = {}
    for name in dict.fromkeys((*LIBRARIES, *packages)):
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
    """A folder-safe name for this device, e.g. 'cpu-amd-epyc-7b13-2c' or, on a GPU,
    'nvidia-h100-80gb-hbm3-sm90': the same :func:`gpu_slug` names the engine folder."""
    gpu = record.get("gpu") or {}
    if record.get("kind") == "cuda" and gpu.get("name"):
        parts = re.findall(r"\d+", str(gpu.get("compute_capability") or ""))[:2]
        if len(parts) < 2:  # unknown compute capability: the name alone, no made-up sm00
            return gpu_slug(str(gpu["name"]), None)
        return gpu_slug(str(gpu["name"]), (int(parts[0]), int(parts[1])))
    name = re.sub(r"\((?:R|TM)\)|CPU|Processor|@.*$", "", str(record.get("cpu", "cpu")))
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:40]
    return f"{record.get('kind', 'cpu')}-{slug}-{record.get('usable_cpus')}c"


def gpu_slug(name: str, cc: tuple[int, int] | None) -> str:
    """'NVIDIA H100 80GB HBM3', (9, 0) -> 'nvidia-h100-80gb-hbm3-sm90': the one name of a GPU
    model, for engine folders (engines are per GPU model and compute capability) and records."""
    base = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:48] or "gpu"
    return base if cc is None else f"{base}-sm{cc[0]}{cc[1]}"


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


# -- GPU -----------------------------------------------------------------------
JETSON_RELEASE = Path("/etc/nv_tegra_release")
_NVIDIA_DRIVER = Path("/proc/driver/nvidia/version")
NVML_MISSING = "nvidia-ml-py not installed (pip install nvidia-ml-py): no clocks, power or energy"
# nvmlClocksEventReason* bits (named nvmlClocksThrottleReason* before NVML 12.2); the values
# are NVML's and do not change.
THROTTLE_REASONS = {0x1: "gpu_idle", 0x2: "applications_clocks_setting", 0x4: "sw_power_cap",
                    0x8: "hw_slowdown", 0x10: "sync_boost", 0x20: "sw_thermal_slowdown",
                    0x40: "hw_thermal_slowdown", 0x80: "hw_power_brake_slowdown",
                    0x100: "display_clock_setting"}


def gpu_present() -> bool:
    """An NVIDIA driver is loaded (desktop/datacentre) or this is a Jetson; imports nothing."""
    return _NVIDIA_DRIVER.is_file() or JETSON_RELEASE.is_file()


def _import_pynvml() -> Any:
    try:
        import pynvml
    except ImportError:
        return None
    return pynvml


def gpu_record(index: int = 0, nvml: Any = None) -> dict[str, Any]:
    """GPU ``index`` as NVML sees it (``nvml`` is the pynvml module; imported when None),
    with torch.cuda as the fallback for name, compute capability and SM count."""
    nvml = nvml if nvml is not None else _import_pynvml()
    record: dict[str, Any] = {"index": index}
    notes: list[str] = []
    if nvml is None:
        notes.append(NVML_MISSING)
    else:
        try:
            nvml.nvmlInit()
        except nvml.NVMLError as exc:
            notes.append(f"NVML unavailable ({exc}): no clocks, power or energy")
        else:
            try:
                record.update(_nvml_fields(nvml, index, notes))
            finally:
                _nvml_shutdown(nvml)
    _torch_fields(record, index, notes)
    try:
        from cnn_deploy.cuda import device_properties

        record["l2_cache_bytes"] = device_properties(index).l2_cache_bytes or None
    except Exception:  # no cuda-python, or no driver: the cache size stays unknown
        pass
    if notes:
        record["notes"] = notes
    return record


def nvml_handle(nvml: Any, index: int, notes: list[str] | None = None) -> Any:
    """NVML's handle for CUDA device ``index``, matched by PCI bus id: NVML numbers GPUs in PCI
    order while CUDA follows CUDA_DEVICE_ORDER and CUDA_VISIBLE_DEVICES, so the same index can
    name two different GPUs. Falls back to NVML's index (with a note) where the bus id is
    unknown. Raises NVMLError when NVML has no such GPU."""
    bus = _pci_bus_id(index)
    if bus is not None:
        try:
            return nvml.nvmlDeviceGetHandleByPciBusId(bus)
        except nvml.NVMLError:
            pass
    if notes is not None and os.environ.get("CUDA_VISIBLE_DEVICES"):
        notes.append(f"NVML GPU {index} taken by index: with CUDA_VISIBLE_DEVICES set it may "
                     f"not be CUDA device {index} (cuda-python gives the PCI bus id to match)")
    return nvml.nvmlDeviceGetHandleByIndex(index)


def _pci_bus_id(index: int) -> str | None:
    from cnn_deploy.cuda import pci_bus_id  # only with a GPU: cuda-python loads on first call

    return pci_bus_id(index)


def _nvml_fields(nvml: Any, index: int, notes: list[str]) -> dict[str, Any]:
    """Every field NVML gives for this device; one that raises NVMLError is left out."""
    try:
        handle = nvml_handle(nvml, index, notes)
    except nvml.NVMLError as exc:
        notes.append(f"NVML has no GPU {index} ({exc})")
        return {}
    clock = {"sm": nvml.NVML_CLOCK_SM, "memory": nvml.NVML_CLOCK_MEM}
    reads: dict[str, Callable[[], Any]] = {
        "name": lambda: _text(nvml.nvmlDeviceGetName(handle)),
        "compute_capability": lambda: "{}.{}".format(*nvml.nvmlDeviceGetCudaComputeCapability(handle)),
        "driver": lambda: _text(nvml.nvmlSystemGetDriverVersion()),
        "sm_clock_mhz": lambda: nvml.nvmlDeviceGetClockInfo(handle, clock["sm"]),
        "sm_clock_max_mhz": lambda: nvml.nvmlDeviceGetMaxClockInfo(handle, clock["sm"]),
        "memory_clock_mhz": lambda: nvml.nvmlDeviceGetClockInfo(handle, clock["memory"]),
        "memory_clock_max_mhz": lambda: nvml.nvmlDeviceGetMaxClockInfo(handle, clock["memory"]),
        "temperature_c": lambda: nvml.nvmlDeviceGetTemperature(handle, nvml.NVML_TEMPERATURE_GPU),
        "power_w": lambda: nvml.nvmlDeviceGetPowerUsage(handle) / 1000.0,  # mW
        "power_limit_w": lambda: nvml.nvmlDeviceGetEnforcedPowerLimit(handle) / 1000.0,
        "throttle_reasons": lambda: throttle_reasons(_throttle_bits(nvml, handle)),
    }
    fields: dict[str, Any] = {}
    unsupported = []
    for key, read in reads.items():
        try:
            fields[key] = read()
        except nvml.NVMLError:
            unsupported.append(key)
    if unsupported:
        notes.append(f"NVML does not report {', '.join(unsupported)} on this device")
    return fields


def _throttle_bits(nvml: Any, handle: Any) -> int:
    # nvidia-ml-py renamed the call in 12.2; older ones only have the throttle name.
    read = getattr(nvml, "nvmlDeviceGetCurrentClocksEventReasons", None)
    if read is None:
        read = nvml.nvmlDeviceGetCurrentClocksThrottleReasons
    return int(read(handle))


def throttle_reasons(bits: int) -> list[str]:
    """NVML's clock-event bit mask -> names, e.g. 0x24 -> ['sw_power_cap', 'sw_thermal_slowdown']."""
    return [name for bit, name in THROTTLE_REASONS.items() if bits & bit]


def _torch_fields(record: dict[str, Any], index: int, notes: list[str]) -> None:
    """Name, compute capability and SM count from torch.cuda where NVML did not give them."""
    if "sm_count" in record and "name" in record:
        return
    if importlib.util.find_spec("torch") is None:
        return
    import torch

    if not torch.cuda.is_available():
        if "name" not in record:
            notes.append("torch sees no CUDA device: GPU name and SM count unknown")
        return
    props = torch.cuda.get_device_properties(index)
    record.setdefault("name", props.name)
    record.setdefault("compute_capability", f"{props.major}.{props.minor}")
    record.setdefault("sm_count", props.multi_processor_count)
    record.setdefault("memory_bytes", props.total_memory)


def _nvml_shutdown(nvml: Any) -> None:
    try:
        nvml.nvmlShutdown()
    except nvml.NVMLError:  # already shut down elsewhere: nothing to release
        return


def _text(value: str | bytes) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def energy_mj(index: int = 0, nvml: Any = None) -> float | None:
    """GPU ``index``'s energy counter in millijoules (since the driver loaded), or None when
    NVML, the GPU or the counter (Volta and newer) is missing. Read it before and after a
    run: tiles per joule = tiles / ((after - before) / 1000)."""
    nvml = nvml if nvml is not None else _import_pynvml()
    if nvml is None or not gpu_present():
        return None
    try:
        nvml.nvmlInit()
    except nvml.NVMLError:
        return None
    try:
        handle = nvml_handle(nvml, index)
        return float(nvml.nvmlDeviceGetTotalEnergyConsumption(handle))
    except nvml.NVMLError:
        return None
    finally:
        _nvml_shutdown(nvml)


def _board() -> str:
    """The board's model name where the device tree has one (a Jetson), else ''."""
    try:
        return Path("/proc/device-tree/model").read_text(errors="replace").strip("\0 \n")
    except OSError:
        return ""


def jetson_record(timeout_s: float = 5.0) -> dict[str, Any]:
    """The Jetson's power mode (``nvpmodel -q``) and what jetson-stats' jtop reports."""
    record: dict[str, Any] = {}
    notes: list[str] = []
    nvpmodel = shutil.which("nvpmodel")
    if nvpmodel is None:
        notes.append("nvpmodel not found: power mode unknown")
    else:
        try:
            done = subprocess.run([nvpmodel, "-q"], capture_output=True, text=True,
                                  timeout=timeout_s, check=True)
        except (subprocess.TimeoutExpired, subprocess.CalledProcessError, OSError) as exc:
            notes.append(f"nvpmodel -q failed ({exc.__class__.__name__}): power mode unknown")
        else:
            mode = parse_nvpmodel(done.stdout)
            if mode:
                record["power_mode"] = mode
    record.update(_jtop_fields(notes))
    if notes:
        record["notes"] = notes
    return record


def parse_nvpmodel(text: str) -> str | None:
    """'NV Power Mode: MAXN\n0\n' -> 'MAXN'."""
    match = re.search(r"NV Power Mode:\s*(\S.*)", text)
    return match.group(1).strip() if match else None


def _jtop_fields(notes: list[str]) -> dict[str, Any]:
    try:
        from jtop import JtopException, jtop
    except ImportError:
        notes.append("jetson-stats not installed (pip install jetson-stats): no jtop readings")
        return {}
    try:
        with jtop() as jetson:
            if not jetson.ok():
                notes.append("jtop connected but returned no reading")
                return {}
            stats = {str(k): _plain(v) for k, v in dict(jetson.stats).items()}
            return {"jtop": {"stats": stats, "nvpmodel": str(jetson.nvpmodel)}}
    except JtopException as exc:
        notes.append(f"jtop service unreachable ({exc}): is jtop.service running?")
        return {}


def _plain(value: Any) -> Any:
    """jtop's datetimes and timedeltas as text, so the record stays JSON."""
    return value if isinstance(value, int | float | str | bool) or value is None else str(value)
