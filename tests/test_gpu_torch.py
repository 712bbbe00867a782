"""The torch backend on CUDA: CUDA-event phases, CUDA graphs, parity with the CPU.

The `gpu` tests skip without an NVIDIA GPU (tests/conftest.py); the CPU tests pin down that
nothing changed for CPU runs.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from cnn_deploy.arch import NetSpec
from cnn_deploy.backends.torch import BASELINE_OPTIONS, TorchRunner
from cnn_deploy.bench.timing import TimingConfig, time_runner
from cnn_deploy.errors import BackendError

SPECS = ("lenet_1c1f", "lenet_5c1f", "lenet_1c5f", "lenet_3c3f")
BATCH = 1024


def tiles(batch: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 255, (batch, 1, 28, 28)).astype(np.float32)


def seeded_runner(name: str, options: dict[str, Any]) -> TorchRunner:
    """A runner whose untrained weights are the same every time (seeded before the build)."""
    import torch

    torch.manual_seed(0)
    runner = TorchRunner(NetSpec.from_name(name), None, options)
    runner.__enter__()
    return runner


# -- CPU: unchanged ---------------------------------------------------------------------
def test_torch_on_the_cpu_has_no_device_timer() -> None:
    with TorchRunner(NetSpec.from_name("lenet_1c1f")) as runner:
        assert runner.device == "cpu"
        assert runner.phase_timer() is None
        out = runner.infer(tiles(4))
    assert out.shape == (4, 10)


def test_cuda_graphs_need_the_cuda_device() -> None:
    with pytest.raises(BackendError, match=r"cuda_graph=true needs torch\.device=cuda"):
        TorchRunner(NetSpec.from_name("lenet_1c1f"), None, {"cuda_graph": True})


def test_the_baseline_is_eager_nchw_on_either_device() -> None:
    spec = NetSpec.from_name("lenet_1c1f")
    cuda = TorchRunner(spec, None, {**BASELINE_OPTIONS, "device": "cuda"})
    assert cuda.baseline and cuda.label == "torch eager cuda NCHW [baseline]"
    graph = TorchRunner(spec, None, {"device": "cuda", "cuda_graph": True})
    assert not graph.baseline and graph.label == "torch cuda-graph cuda channels-last"


# -- CUDA ----------------------------------------------------------------------------------
@pytest.fixture
def exact_fp32(monkeypatch: pytest.MonkeyPatch) -> None:
    """TF32 convolutions would differ from the CPU by more than 1e-3: compare in fp32."""
    import torch

    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)


@pytest.mark.gpu
@pytest.mark.parametrize("cuda_graph", [False, True], ids=["events", "cuda-graph"])
@pytest.mark.parametrize("name", SPECS)
def test_cuda_runner_times_phases_and_matches_the_cpu(name: str, cuda_graph: bool,
                                                      exact_fp32: None) -> None:
    x = tiles(BATCH)
    cpu = seeded_runner(name, {"memory_format": "contiguous"})
    gpu = seeded_runner(name, {"device": "cuda", "cuda_graph": cuda_graph})
    try:
        want = cpu.infer(x)
        timed = time_runner(gpu, x, TimingConfig.quick())
        got = gpu.infer(x)
    finally:  # last in, first out: each runner restores the inference mode it found
        gpu.__exit__(None, None, None)
        cpu.__exit__(None, None, None)
    assert set(timed.phases_ms) == {"h2d", "compute", "d2h"}
    n = len(timed.latency_ms)
    assert n >= TimingConfig.quick().min_iterations
    for phase, samples in timed.phases_ms.items():
        assert len(samples) == n and min(samples) > 0, phase
    assert min(timed.enqueue_ms) > 0
    # the host waited for the device: end to end covers the device phases
    device_ms = np.sum([timed.phases_ms[p] for p in ("h2d", "compute", "d2h")], axis=0)
    assert np.median(timed.latency_ms) >= 0.9 * np.median(device_ms)
    scale = max(1.0, float(np.abs(want).max()))
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-3 * scale)
    assert (got.argmax(1) == want.argmax(1)).mean() > 0.999


@pytest.mark.gpu
def test_benchmark_on_cuda_gives_trtexec_style_reports() -> None:
    from cnn_deploy.backends.base import Target
    from cnn_deploy.jobs import benchmark

    spec = NetSpec.from_name("lenet_1c1f")
    outcome = benchmark(Target(spec.name, None, spec), ["torch"], [BATCH],
                        options={"torch": {"device": "cuda", "cuda_graph": True}},
                        timing=TimingConfig.quick(), processes=0)
    labels = {c.label for c in outcome.cells}
    assert labels == {"torch eager cuda NCHW [baseline]", "torch cuda-graph cuda channels-last"}
    assert all(c.phases_ms is not None for c in outcome.cells)
    assert len(outcome.gpu) == 2
    for report in outcome.gpu:
        assert report.tiles_per_ms_compute >= report.tiles_per_ms_end_to_end > 0
