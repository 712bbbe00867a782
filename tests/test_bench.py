"""The timing harness: statistics, stopping rules, warnings, combining processes."""

from __future__ import annotations

import numpy as np
import pytest

from cnn_deploy.bench.plan import Measurement
from cnn_deploy.bench.summary import summarise_cells
from cnn_deploy.bench.timing import Stats, TimingConfig, stability_warnings, summarise, time_runner

from fakes import FakeClockRunner, FakeGpuRunner


def test_summarise_known_samples() -> None:
    samples = [1.0, 2.0, 3.0, 4.0, 10.0]
    s = summarise(samples, batch=100)
    assert s.iterations == 5
    assert s.median_ms == 3.0
    assert s.min_ms == 1.0 and s.max_ms == 10.0
    assert s.p90_ms == pytest.approx(np.percentile(samples, 90))
    assert s.total_ms == 20.0
    # thesis eq. 12 generalised: tiles / wall ms of the timed runs
    assert s.tiles_per_ms == pytest.approx(5 * 100 / 20.0)
    assert s.cv == pytest.approx(np.std(samples) / 4.0)


def test_thesis_eq12_for_20_runs() -> None:
    # 20 runs of batch 1024 taking 0.5 s in total -> 20*1024 / (1000*0.5) tiles/ms
    s = summarise([25.0] * 20, batch=1024)
    assert s.tiles_per_ms == pytest.approx(20 * 1024 / (1000 * 0.5))


def test_warmup_is_not_counted_and_stops_on_duration_and_count() -> None:
    runner = FakeClockRunner([5.0] * 3 + [1.0] * 1000)  # 3 slow warm-up runs
    config = TimingConfig(warmup_ms=12.0, warmup_iterations=2, min_duration_ms=50.0,
                          min_iterations=10)
    timed = time_runner(runner, np.zeros((1, 1, 28, 28), np.float32), config, clock=runner.clock)
    samples, warm = timed.latency_ms, timed.warmup_iterations
    assert warm == 3  # 2 iterations were not 12 ms yet; the third reached 15 ms
    assert all(s == pytest.approx(1.0) for s in samples)
    assert len(samples) == 50  # duration (50 ms) binds after the count (10)


def test_min_iterations_binds_when_runs_are_slow() -> None:
    runner = FakeClockRunner([100.0])
    config = TimingConfig(warmup_ms=0, warmup_iterations=0, min_duration_ms=10.0,
                          min_iterations=7)
    timed = time_runner(runner, np.zeros((1, 1, 28, 28), np.float32), config, clock=runner.clock)
    samples, warm = timed.latency_ms, timed.warmup_iterations
    assert (len(samples), warm) == (7, 0)


def test_max_duration_caps_a_huge_cell() -> None:
    runner = FakeClockRunner([400.0])
    config = TimingConfig(warmup_ms=0, warmup_iterations=0, min_duration_ms=0,
                          min_iterations=100, max_duration_ms=1000.0)
    samples = time_runner(runner, np.zeros((1, 1, 28, 28), np.float32), config,
                          clock=runner.clock).latency_ms
    assert len(samples) == 3


def test_warnings_for_spread_and_drift() -> None:
    config = TimingConfig()
    steady = [1.0] * 30
    assert stability_warnings(steady, summarise(steady, 1), config) == []
    drifting = list(np.linspace(1.0, 1.3, 30))
    warnings = stability_warnings(drifting, summarise(drifting, 1), config)
    assert any(w.startswith("drift +") for w in warnings)
    noisy = [1.0, 2.0] * 15
    assert any("coefficient of variation" in w
               for w in stability_warnings(noisy, summarise(noisy, 1), config))


def _cell(row: int, label: str, batch: int, ms: float, process: int) -> Measurement:
    samples = [ms] * 10
    stats: Stats = summarise(samples, batch)
    return Measurement(row, label, "fake", {}, "cpu", batch, batch, samples, 0, stats, [], [], "noise",
                1.0, process, baseline="[baseline]" in label)


def test_combining_processes_reports_median_spread_and_speedup() -> None:
    cells = [_cell(0, "torch eager NCHW [baseline]", 64, 2.0, p) for p in range(3)]
    cells += [_cell(1, "onnxruntime", 64, ms, p) for p, ms in enumerate([1.0, 0.45, 1.05])]
    rows = {s.label: s for s in summarise_cells(cells)}
    base, ort = rows["torch eager NCHW [baseline]"], rows["onnxruntime"]
    assert base.baseline and base.spread == 0.0 and not base.warnings
    assert ort.processes == 3
    assert ort.stats.median_ms == 1.0  # the median process, not the fastest
    assert ort.speedup == pytest.approx(2.0)
    assert ort.spread == pytest.approx((64 / 0.45 - 64 / 1.05) / 64.0)
    assert any("bimodal" in w for w in ort.warnings)


def test_phased_timing_separates_enqueue_latency_and_device_phases() -> None:
    runner = FakeGpuRunner([0.0])
    config = TimingConfig(warmup_ms=0, warmup_iterations=1, min_duration_ms=0, min_iterations=4)
    out = time_runner(runner, np.zeros((2, 1, 28, 28), np.float32), config, clock=runner.clock)
    assert out.warmup_iterations == 1
    assert out.latency_ms == [5.0] * 4
    assert out.phases_ms == {"h2d": [1.0] * 4, "compute": [3.0] * 4, "d2h": [1.0] * 4}
    assert out.enqueue_ms is not None and len(out.enqueue_ms) == 4


def test_a_cpu_runner_has_host_latency_only() -> None:
    config = TimingConfig(warmup_ms=0, warmup_iterations=0, min_duration_ms=0, min_iterations=3)
    out = time_runner(FakeClockRunner([2.0]), np.zeros((1, 1, 28, 28), np.float32), config)
    assert len(out.latency_ms) == 3 and out.enqueue_ms is None and out.phases_ms is None


def test_overlapped_timing_hides_the_enqueue_as_trtexec_does() -> None:
    """Enqueue 3 ms, device 5 ms: one at a time an iteration takes 8 ms; with two in flight
    the GPU never waits for the host, so the throughput is one iteration per 5 ms."""
    from cnn_deploy.bench.timing import time_overlapped

    from fakes import AsyncGpuRunner

    config = TimingConfig(warmup_ms=0, warmup_iterations=1, min_duration_ms=500.0,
                          min_iterations=10)
    x = np.zeros((4, 1, 28, 28), np.float32)
    gpu = AsyncGpuRunner(enqueue_ms=3.0, device_ms=5.0)
    overlapped = time_overlapped(gpu, x, config, clock=gpu.clock)
    assert overlapped.wall_ms is not None
    stats = summarise(overlapped.latency_ms, 4, overlapped.wall_ms)
    assert stats.tiles_per_ms == pytest.approx(4 / 5.0, rel=0.02)
    assert set(overlapped.latency_ms) == {5.0}  # H2D + compute + D2H, as trtexec's Latency
    assert overlapped.enqueue_ms == [3.0] * len(overlapped.latency_ms)
    assert overlapped.phases_ms == {"h2d": [1.0] * len(overlapped.latency_ms),
                                    "compute": [3.0] * len(overlapped.latency_ms),
                                    "d2h": [1.0] * len(overlapped.latency_ms)}
    one_at_a_time = AsyncGpuRunner(enqueue_ms=3.0, device_ms=5.0)
    serial = time_runner(one_at_a_time, x, config, clock=one_at_a_time.clock)
    assert summarise(serial.latency_ms, 4).tiles_per_ms == pytest.approx(4 / 8.0, rel=0.02)
    fake_cpu = FakeClockRunner([1.0])
    cpu = time_overlapped(fake_cpu, x, config, clock=fake_cpu.clock)  # nothing to overlap on a CPU
    assert cpu.wall_ms is None and cpu.enqueue_ms is None and len(cpu.latency_ms) >= 10
