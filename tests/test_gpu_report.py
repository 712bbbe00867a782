"""GPU reporting that runs without a GPU: trtexec-style statistics and warnings from synthetic
cells, `bench --engine` refusing cleanly on a CPU machine, the device record with and without
NVML, the ONNX Runtime GPU provider options, and the engine accuracy check's batching."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from rich.console import Console
from typer.testing import CliRunner

from cnn_deploy import device
from cnn_deploy.backends.base import Target
from cnn_deploy.backends.ort import provider_options
from cnn_deploy.bench import accuracy, targets
from cnn_deploy.bench.phases import gpu_report, gpu_reports, gpu_warnings, phase_stats
from cnn_deploy.bench.plan import Measurement
from cnn_deploy.bench.timing import summarise
from cnn_deploy.cli import app, render
from cnn_deploy.errors import BackendError, BenchError

from fakes import ScriptedRunner, hide_gpus


def gpu_cell(compute: list[float], *, h2d: float = 0.01, d2h: float = 0.01, enqueue: float = 0.05,
             latency: float | None = None, batch: int = 100, row: int = 0, process: int = 0) -> Measurement:
    n = len(compute)
    samples = [latency if latency is not None else c + h2d + d2h + 0.02 for c in compute]
    return Measurement(row, "tensorrt fp16", "tensorrt", {}, "cuda", batch, batch, samples, 3,
                summarise(samples, batch), [], [], "mnist test digits", 100.0, process,
                enqueue_ms=[enqueue] * n,
                phases_ms={"h2d": [h2d] * n, "compute": list(compute), "d2h": [d2h] * n})


STEADY = [1.0] * 20


# -- statistics -------------------------------------------------------------------
def test_phase_statistics_are_computed_from_each_phase_samples() -> None:
    compute = [float(v) for v in range(1, 101)]  # 1..100 ms
    stats = phase_stats(gpu_cell(compute, h2d=0.2, d2h=0.3, enqueue=0.4))
    assert list(stats) == ["compute", "h2d", "d2h", "enqueue", "latency"]
    c = stats["compute"]
    assert (c.median_ms, c.min_ms, c.max_ms) == (50.5, 1.0, 100.0)
    assert c.p90_ms == pytest.approx(np.percentile(compute, 90))
    assert c.p99_ms == pytest.approx(np.percentile(compute, 99))
    assert stats["h2d"].median_ms == pytest.approx(0.2)
    assert stats["d2h"].max_ms == pytest.approx(0.3)
    assert stats["enqueue"].median_ms == pytest.approx(0.4)
    assert stats["latency"].median_ms == pytest.approx(50.5 + 0.5 + 0.02)


def test_tiles_per_ms_from_compute_and_from_end_to_end_differ() -> None:
    report = gpu_report(gpu_cell(STEADY, latency=2.0, batch=100))
    assert report.tiles_per_ms_compute == pytest.approx(100.0)  # 100 tiles / 1 ms of compute
    assert report.tiles_per_ms_end_to_end == pytest.approx(50.0)  # 100 tiles / 2 ms end to end


def test_a_cpu_cell_has_no_gpu_report() -> None:
    cell = gpu_cell(STEADY)
    cell.phases_ms = None
    with pytest.raises(ValueError, match="not a GPU cell"):
        phase_stats(cell)
    assert gpu_reports([cell]) == []


def test_a_runner_marking_only_compute_gets_no_copy_rows_or_copy_warning() -> None:
    cell = gpu_cell(STEADY)
    cell.phases_ms = {"compute": STEADY}
    report = gpu_report(cell)
    assert "h2d" not in report.stats and "d2h" not in report.stats
    assert not any(w.startswith("copy-bound") for w in report.warnings)


# -- trtexec's three warnings -------------------------------------------------------
def kinds(cell: Measurement) -> set[str]:
    return {w.split(":")[0] for w in gpu_warnings(phase_stats(cell))}


def test_no_warning_for_a_steady_compute_bound_cell() -> None:
    assert kinds(gpu_cell(STEADY, h2d=0.1, d2h=0.1, enqueue=0.2)) == set()


@pytest.mark.parametrize(("enqueue", "warned"), [(1.0, True), (1.5, True), (0.99, False)])
def test_enqueue_bound_when_median_enqueue_reaches_median_compute(enqueue: float,
                                                                 warned: bool) -> None:
    assert ("enqueue-bound" in kinds(gpu_cell(STEADY, enqueue=enqueue))) is warned


@pytest.mark.parametrize(("h2d", "d2h", "warned"), [(0.6, 0.4, True), (0.9, 0.3, True),
                                                    (0.5, 0.4, False)])
def test_copy_bound_when_h2d_plus_d2h_reach_compute(h2d: float, d2h: float, warned: bool) -> None:
    assert ("copy-bound" in kinds(gpu_cell(STEADY, h2d=h2d, d2h=d2h))) is warned


def test_unstable_when_gpu_compute_varies_more_than_trtexecs_threshold() -> None:
    noisy = [1.0, 1.07] * 10  # CV ~3.4 %: over trtexec's 2.5 % (since TensorRT 10.9)
    quiet = [1.0, 1.04] * 10  # CV ~2.0 %: would have warned at the old 1 %
    assert "unstable GPU compute" in kinds(gpu_cell(noisy))
    assert "unstable GPU compute" not in kinds(gpu_cell(quiet))


def test_one_report_per_row_and_batch_from_the_median_process() -> None:
    cells = [gpu_cell(STEADY, latency=lat, process=i) for i, lat in enumerate((3.0, 1.0, 2.0))]
    cells.append(gpu_cell(STEADY, batch=10, row=1))
    reports = gpu_reports(cells)
    assert [(r.row, r.batch) for r in reports] == [(0, 100), (1, 10)]
    assert reports[0].process == 2  # 2 ms: the median of 1, 2 and 3 ms
    assert reports[0].to_dict()["stats"]["latency"]["median_ms"] == pytest.approx(2.0)


def test_gpu_table_shows_each_quantity_and_both_tiles_per_ms() -> None:
    console = Console(record=True, width=200)
    console.print(render.gpu_table(gpu_report(gpu_cell(STEADY, latency=2.0, batch=100))))
    text = console.export_text()
    for row in ("GPU compute", "H2D copy", "D2H copy", "host enqueue", "end-to-end host latency"):
        assert row in text
    assert "100.0 tiles/ms from GPU compute" in text and "50.0 tiles/ms end to end" in text


# -- bench --engine on a machine without a GPU ----------------------------------------
def test_bench_engine_without_a_gpu_says_so_in_one_line(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    hide_gpus(monkeypatch)
    plan = tmp_path / "lenet_3c1f_fp16.plan"
    plan.write_bytes(b"not an engine")
    result = CliRunner().invoke(app, ["bench", "--engine", str(plan), "--no-save"])
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    assert "`--engine` needs an NVIDIA GPU" in lines[0]
    assert "torch (cpu)" in lines[0] and "onnxruntime (CPUExecutionProvider)" in lines[0]


def test_bench_engine_refuses_a_model_file_as_well(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["bench", "model.onnx", "--engine", "x.plan"])
    assert result.exit_code == 1
    assert "--engine names the network already" in result.stderr


def test_engine_rows_without_a_gpu_say_why_each_is_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    hide_gpus(monkeypatch)
    target = Target("lenet_1c1f", spec=targets.spec_from_engine_name(Path("lenet_1c1f_fp16.plan")),
                    engine=Path("lenet_1c1f_fp16.plan"))
    with pytest.raises(BenchError, match="no backend asked for is usable here") as caught:
        targets.build_rows(target, targets.default_backends(target, {}), {})
    assert "no torch rows" in str(caught.value) and "tensorrt skipped" in str(caught.value)
    with pytest.raises(BackendError, match="unknown backend"):
        targets.build_rows(target, ["tensorrt"], {"tensorflow": {}})


def test_network_and_profile_come_from_engine_names_and_sidecars() -> None:
    spec = targets.spec_from_engine_name(Path("engines/x/lenet_3c1f_fp16.plan"))
    assert spec is not None and spec.name == "lenet_3c1f"
    assert targets.spec_from_engine_name(Path("resnet50.plan")) is None


# -- the device record ------------------------------------------------------------------
CPU_KEYS = {"kind", "cpu", "machine", "logical_cpus", "usable_cpus", "memory_bytes", "llc_bytes",
            "simd_lanes", "os", "python", "env", "slug"}


@pytest.fixture
def no_gpu(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(device, "_NVIDIA_DRIVER", tmp_path / "no-driver")
    monkeypatch.setattr(device, "JETSON_RELEASE", tmp_path / "no-jetson")


@pytest.fixture
def fake_driver(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "version").write_text("NVRM version: fake\n")
    monkeypatch.setattr(device, "_NVIDIA_DRIVER", tmp_path / "version")
    monkeypatch.setattr(device, "JETSON_RELEASE", tmp_path / "no-jetson")


def test_device_record_on_a_cpu_has_no_gpu_fields(no_gpu: None) -> None:
    record = device.device_record.__wrapped__()  # type: ignore[attr-defined]
    assert set(record) == CPU_KEYS
    assert record["kind"] == "cpu" and record["slug"].startswith("cpu-")
    assert device.energy_mj() is None


def test_gpu_record_without_nvidia_ml_py_does_not_crash(fake_driver: None,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # `import pynvml` raises ImportError
    record = device.device_record.__wrapped__()  # type: ignore[attr-defined]
    assert record["kind"] == "cuda"
    assert device.NVML_MISSING in record["gpu"]["notes"]
    assert "power_w" not in record["gpu"] and "sm_clock_mhz" not in record["gpu"]
    assert device.energy_mj() is None


class FakeNvml:
    """The part of pynvml that device.py calls; `unsupported` names calls raising NVMLError."""

    NVML_CLOCK_SM, NVML_CLOCK_MEM, NVML_TEMPERATURE_GPU = 1, 2, 0

    class NVMLError(Exception):
        pass

    def __init__(self, unsupported: tuple[str, ...] = (), init_fails: bool = False) -> None:
        self.unsupported, self.init_fails, self.open = unsupported, init_fails, 0

    def _check(self, name: str) -> None:
        if name in self.unsupported:
            raise self.NVMLError(f"{name}: Not Supported")

    def nvmlInit(self) -> None:
        if self.init_fails:
            raise self.NVMLError("Driver Not Loaded")
        self.open += 1

    def nvmlShutdown(self) -> None:
        self.open -= 1

    def nvmlDeviceGetHandleByIndex(self, index: int) -> str:
        return f"gpu{index}"

    def nvmlDeviceGetHandleByPciBusId(self, bus: str) -> str:
        # two GPUs in PCI order; CUDA_VISIBLE_DEVICES=1 makes CUDA device 0 the second one
        buses = {"00000000:17:00.0": "gpu0", "00000000:65:00.0": "gpu1"}
        if bus.upper().zfill(16) not in {k.upper() for k in buses}:
            raise self.NVMLError("Not Found")
        return {k.upper(): v for k, v in buses.items()}[bus.upper().zfill(16)]

    def nvmlDeviceGetName(self, handle: str) -> bytes:
        return b"NVIDIA H100 80GB HBM3"

    def nvmlDeviceGetCudaComputeCapability(self, handle: str) -> tuple[int, int]:
        return (9, 0)

    def nvmlSystemGetDriverVersion(self) -> str:
        return "560.35.03"

    def nvmlDeviceGetClockInfo(self, handle: str, clock: int) -> int:
        return {1: 1755, 2: 2619}[clock]

    def nvmlDeviceGetMaxClockInfo(self, handle: str, clock: int) -> int:
        return {1: 1980, 2: 2619}[clock]

    def nvmlDeviceGetTemperature(self, handle: str, sensor: int) -> int:
        return 41

    def nvmlDeviceGetPowerUsage(self, handle: str) -> int:
        self._check("power")
        return 123_456  # mW

    def nvmlDeviceGetEnforcedPowerLimit(self, handle: str) -> int:
        return 700_000

    def nvmlDeviceGetCurrentClocksEventReasons(self, handle: str) -> int:
        return 0x4 | 0x20

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: str) -> int:
        self._check("energy")
        return 9_000_000_123


def test_gpu_record_from_nvml_fields(fake_driver: None) -> None:
    nvml = FakeNvml()
    record = device.gpu_record(0, nvml)
    assert record["name"] == "NVIDIA H100 80GB HBM3" and record["compute_capability"] == "9.0"
    assert (record["sm_clock_mhz"], record["sm_clock_max_mhz"]) == (1755, 1980)
    assert (record["memory_clock_mhz"], record["memory_clock_max_mhz"]) == (2619, 2619)
    assert record["power_w"] == pytest.approx(123.456) and record["power_limit_w"] == 700.0
    assert record["temperature_c"] == 41 and record["driver"] == "560.35.03"
    assert record["throttle_reasons"] == ["sw_power_cap", "sw_thermal_slowdown"]
    assert nvml.open == 0  # every nvmlInit was shut down again
    slug = device.device_slug({"kind": "cuda", "gpu": record})
    assert slug == "nvidia-h100-80gb-hbm3-sm90"  # the engine folder's name too
    assert device.energy_mj(0, nvml) == 9_000_000_123.0


def test_an_unsupported_nvml_counter_is_left_out_with_a_note(fake_driver: None) -> None:
    nvml = FakeNvml(unsupported=("power", "energy"))
    record = device.gpu_record(0, nvml)
    assert "power_w" not in record and record["power_limit_w"] == 700.0
    assert any("power_w" in n for n in record["notes"])
    assert device.energy_mj(0, nvml) is None
    failing = device.gpu_record(0, FakeNvml(init_fails=True))
    assert any("NVML unavailable" in n for n in failing["notes"]) and "sm_clock_mhz" not in failing


def test_nvpmodel_power_mode_is_parsed() -> None:
    assert device.parse_nvpmodel("NV Power Mode: MAXN\n0\n") == "MAXN"
    assert device.parse_nvpmodel("NV Power Mode: 15W\n2\n") == "15W"
    assert device.parse_nvpmodel("nvpmodel: command failed") is None


# -- ONNX Runtime GPU providers ---------------------------------------------------------
def test_onnxruntime_provider_options_use_the_documented_names() -> None:
    assert provider_options({"provider": "cpu"}) == [("CPUExecutionProvider", {})]
    assert provider_options({"provider": "cuda", "device_id": 1}) == [
        ("CUDAExecutionProvider", {"device_id": 1})]
    trt = provider_options({"provider": "tensorrt", "fp16": True, "trt_cache": "cache"})
    assert trt[0] == ("TensorrtExecutionProvider", {
        "device_id": 0, "trt_fp16_enable": True, "trt_engine_cache_enable": True,
        "trt_engine_cache_path": "cache"})
    assert trt[1] == ("CUDAExecutionProvider", {"device_id": 0})  # for nodes TensorRT refuses
    no_cache = provider_options({"provider": "tensorrt", "trt_cache": None})
    assert no_cache[0][1]["trt_engine_cache_enable"] is False


# -- the engine accuracy check ------------------------------------------------------------
def test_engine_accuracy_compares_top1_with_the_reference(mnist: Any) -> None:
    label_of = {t.tobytes(): int(c) for t, c in zip(mnist.test_images[:1000],
                                                    mnist.test_labels[:1000], strict=True)}

    def perfect(x: np.ndarray) -> np.ndarray:
        return np.array([label_of[t.astype(np.uint8).reshape(28, 28).tobytes()] for t in x])

    def zeros(x: np.ndarray) -> np.ndarray:
        return np.zeros(len(x), dtype=int)

    engine = ScriptedRunner(zeros, fixed_batch=300)
    result = accuracy.agreement(engine, ScriptedRunner(perfect), mnist, tiles=1000, batch=256)
    share_of_zeros = float(np.mean(mnist.test_labels[:1000] == 0))
    assert result.tiles == 1000
    assert result.reference_accuracy == 1.0
    assert result.accuracy == pytest.approx(share_of_zeros)
    assert result.top1_agreement == pytest.approx(share_of_zeros)
    assert result.delta == pytest.approx(share_of_zeros - 1.0)
    assert engine.seen == [300, 300, 300, 300]  # the last 100 tiles padded to the fixed batch


def test_nvml_finds_the_cuda_device_by_pci_bus_id(monkeypatch: pytest.MonkeyPatch) -> None:
    """NVML counts GPUs in PCI order; CUDA device 0 under CUDA_VISIBLE_DEVICES=1 is NVML's 1."""
    nvml = FakeNvml()
    monkeypatch.setattr(device, "_pci_bus_id", lambda index: "0000:65:00.0")
    assert device.nvml_handle(nvml, 0) == "gpu1"
    monkeypatch.setattr(device, "_pci_bus_id", lambda index: None)  # no cuda-python: by index
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    notes: list[str] = []
    assert device.nvml_handle(nvml, 0, notes) == "gpu0"
    assert "may not be CUDA device 0" in notes[0]
