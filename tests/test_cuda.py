"""cnn_deploy.cuda: the CUDA plumbing under the TensorRT backend.

Here (no GPU, no cuda-python in the venv): the module imports, says how to install
cuda-python when used, uses only the runtime names it lists in CUDA_API, those names exist
in the real cuda-python 12.x and 13.x bindings (installed under .trt/ by scripts/setup.sh;
they import without a GPU), and with those real bindings and no driver the errors come out
as BackendError with the CUDA error's name. On a GPU (``gpu`` marker): buffers, copies,
events and graphs do what they claim.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from cnn_deploy import cuda
from cnn_deploy.errors import BackendError, CnnDeployError

from contracts import CONTRACT_DIR, missing_names

REPO = Path(__file__).resolve().parents[1]

PROP_FIELDS = ("name", "major", "minor", "multiProcessorCount", "totalGlobalMem")


def used_runtime_names(source: str) -> set[str]:
    """First attributes taken from ``rt`` or ``runtime()``: the bindings' functions and types."""
    used = set()
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Attribute):
            continue
        base = node.value
        if (isinstance(base, ast.Name) and base.id == "rt") or (
                isinstance(base, ast.Call) and isinstance(base.func, ast.Name)
                and base.func.id == "runtime"):
            used.add(node.attr)
    return used


# -- without cuda-python ------------------------------------------------------------------
@pytest.fixture
def no_cuda_python(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setitem(sys.modules, "cuda", None)
    monkeypatch.setitem(sys.modules, "cuda.bindings", None)
    cuda.runtime.cache_clear()
    yield
    cuda.runtime.cache_clear()


def test_every_helper_names_the_install_command_without_cuda_python(no_cuda_python: None) -> None:
    for make in (cuda.Stream, cuda.Event, cuda.device_count, lambda: cuda.HostBuffer(16),
                 lambda: cuda.DeviceBuffer(16), cuda.device_properties):
        with pytest.raises(BackendError, match=r"cuda-python is not installed: pip install cuda-python"):
            make()


def test_the_module_imports_without_cuda_python(tmp_path: Path) -> None:
    code = ("import sys; sys.modules['cuda'] = None\n"
            "import cnn_deploy.cuda, cnn_deploy.backends.tensorrt\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorrt', 'cuda') and "
            "sys.modules[m] is not None))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_closing_twice_and_an_empty_timer_need_no_cuda(no_cuda_python: None) -> None:
    graph = cuda.Graph(stream=None)  # type: ignore[arg-type]
    graph.close()  # nothing captured: nothing to free, no CUDA call
    assert not graph.ready
    timer = cuda.EventTimer(stream=None)  # type: ignore[arg-type]
    assert timer.elapsed_ms() == {}
    timer.close()


# -- the names exist in the real bindings ----------------------------------------------
def test_cuda_py_uses_only_names_listed_in_cuda_api() -> None:
    used = used_runtime_names(Path(cuda.__file__).read_text())
    assert used == set(cuda.CUDA_API)
    assert "cudaGraphInstantiateWithFlags" in used


def _bindings_run(major: str, code: str) -> subprocess.CompletedProcess[str]:
    folder = CONTRACT_DIR / f"cuda{major}"
    if not (folder / "cuda" / "bindings").is_dir():
        pytest.skip(f"{folder} holds no cuda-python bindings: run scripts/setup.sh to install "
                    "the contract packages")
    env = {**os.environ, "PYTHONPATH": str(folder)}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    return done


def contract_names() -> list[str]:
    return [*cuda.CUDA_API, "cudaError_t.cudaSuccess",
            *(f"cudaMemcpyKind.{k}" for k in cuda._COPY_KINDS.values()),
            *(f"cudaStreamCaptureMode.{m}" for m in cuda._CAPTURE_MODES.values()),
            *(f"cudaDeviceProp.{f}" for f in PROP_FIELDS)]




@pytest.mark.parametrize("major", ["12", "13"])
def test_every_cuda_name_exists_in_cuda_python(major: str) -> None:
    result = missing_names(f"cuda{major}", "cuda.bindings.runtime", contract_names(),
                           version_of="cuda.bindings")
    assert result["version"].split(".")[0] == major
    assert result["missing"] == []


def test_the_cuda_contract_check_reports_a_missing_name() -> None:
    result = missing_names("cuda13", "cuda.bindings.runtime",
                           [*contract_names(), "cudaGraphInstantiateV9"])
    assert result["missing"] == ["cudaGraphInstantiateV9"]


NO_DRIVER = """
from cnn_deploy import cuda
from cnn_deploy.errors import BackendError
rt = cuda.runtime()
print(cuda.check(rt.cudaGetErrorName(rt.cudaError_t.cudaErrorNoDevice)).decode())
try:
    count = cuda.device_count()
except BackendError as exc:  # a GPU whose driver is older than these bindings
    count = "driver too old: " + str(exc)
print(count)
if count == 0:
    for make in (cuda.Stream, lambda: cuda.HostBuffer(64)):
        try:
            make()
        except BackendError as exc:
            print(exc)
"""


@pytest.mark.parametrize("major", ["12", "13"])
def test_with_real_bindings_and_no_driver_errors_name_the_cuda_error(major: str) -> None:
    lines = _bindings_run(major, NO_DRIVER).stdout.strip().splitlines()
    assert lines[0] == "cudaErrorNoDevice"  # check() returns the value of a successful call
    if lines[1].startswith("driver too old"):
        pytest.skip(f"a GPU with a driver older than cuda-python {major}: {lines[1]}")
    if lines[1] != "0":
        pytest.skip("this machine has a GPU")
    stream_error, host_error = lines[2:4]
    assert stream_error.startswith("cudaStreamCreateWithFlags failed with cudaError")
    assert "no usable NVIDIA GPU or driver here" in stream_error
    assert host_error.startswith("cudaMallocHost(64 bytes) failed with cudaError")


def test_cuda_errors_are_project_errors() -> None:
    assert issubclass(BackendError, CnnDeployError)


# -- on a GPU ------------------------------------------------------------------------------
@pytest.fixture
def rt() -> Any:
    try:
        return cuda.runtime()
    except BackendError as exc:
        pytest.skip(str(exc))


@pytest.mark.gpu
def test_device_properties_describe_gpu_0(rt: Any) -> None:
    assert cuda.device_count() >= 1
    props = cuda.device_properties(0)
    assert props.name and "\0" not in props.name
    assert props.compute_capability >= (5, 0)
    assert props.sm_count > 0 and props.memory_bytes > 2**28


@pytest.mark.gpu
@pytest.mark.parametrize("stream_ordered", [False, True])
def test_pinned_and_device_buffers_round_trip(rt: Any, stream_ordered: bool) -> None:
    x = np.random.default_rng(0).standard_normal((64, 1, 28, 28)).astype(np.float32)
    with cuda.Stream() as stream, cuda.HostBuffer(x.nbytes) as src, \
            cuda.HostBuffer(x.nbytes) as dst, \
            cuda.DeviceBuffer(x.nbytes, stream if stream_ordered else None) as dev:
        src.array(x.shape, x.dtype)[...] = x
        cuda.memcpy_async(dev.ptr, src.ptr, x.nbytes, "h2d", stream)
        cuda.memcpy_async(dst.ptr, dev.ptr, x.nbytes, "d2h", stream)
        stream.synchronize()
        np.testing.assert_array_equal(dst.array(x.shape, x.dtype), x)
        with pytest.raises(ValueError, match="needs"):
            src.array((65, 1, 28, 28), np.float32)
        dev.close()


@pytest.mark.gpu
def test_events_time_a_copy_and_are_reused(rt: Any) -> None:
    nbytes = 64 * 2**20
    with cuda.Stream() as stream, cuda.HostBuffer(nbytes) as host, \
            cuda.DeviceBuffer(nbytes) as dev, cuda.EventTimer(stream) as timer:
        for _ in range(3):
            timer.mark("start")
            cuda.memcpy_async(dev.ptr, host.ptr, nbytes, "h2d", stream)
            timer.mark("h2d")
            cuda.memcpy_async(host.ptr, dev.ptr, nbytes, "d2h", stream)
            timer.mark("d2h")
            phases = timer.elapsed_ms()
            assert list(phases) == ["h2d", "d2h"]
            assert all(ms > 0 for ms in phases.values())
        assert len(timer._events) == 3  # one event per phase name, not per iteration


@pytest.mark.gpu
def test_a_captured_graph_replays_a_copy(rt: Any) -> None:
    x = np.arange(4096, dtype=np.float32)
    with cuda.Stream() as stream, cuda.HostBuffer(x.nbytes) as host, \
            cuda.DeviceBuffer(x.nbytes) as a, cuda.DeviceBuffer(x.nbytes) as b, \
            cuda.Graph(stream) as graph:
        view = host.array(x.shape, x.dtype)
        view[...] = x
        cuda.memcpy_async(a.ptr, host.ptr, x.nbytes, "h2d", stream)
        stream.synchronize()
        with graph.capture():
            cuda.memcpy_async(b.ptr, a.ptr, x.nbytes, "d2d", stream)
        assert graph.ready
        view[...] = 0
        graph.launch()
        cuda.memcpy_async(host.ptr, b.ptr, x.nbytes, "d2h", stream)
        stream.synchronize()
        np.testing.assert_array_equal(view, x)
        # replay again after changing the source: the graph copies what is there now
        view[...] = x * 2
        cuda.memcpy_async(a.ptr, host.ptr, x.nbytes, "h2d", stream)
        graph.launch()
        view[...] = 0
        cuda.memcpy_async(host.ptr, b.ptr, x.nbytes, "d2h", stream)
        stream.synchronize()
        np.testing.assert_array_equal(view, x * 2)


DRIVER_TOO_OLD = """
from cnn_deploy import cuda
from cnn_deploy.errors import BackendError
rt = cuda.runtime()
print(cuda.runtime_cuda_version(), cuda.driver_cuda_version())
print(cuda.device_count())  # no driver at all: 0 devices, not an error
# A driver that supports CUDA 12.4 only, under CUDA 13 bindings:
rt.cudaDriverGetVersion = lambda: (rt.cudaError_t.cudaSuccess, 12040)
try:
    cuda.device_count()
except BackendError as exc:
    print(exc)
"""


def test_a_driver_too_old_for_the_bindings_is_said_so_not_no_gpu() -> None:
    lines = _bindings_run("13", DRIVER_TOO_OLD).stdout.strip().splitlines()
    runtime_version, driver = lines[0].split()
    assert runtime_version.startswith("13") and driver == "None"
    if lines[1] != "0":
        pytest.skip("this machine has a GPU")
    assert lines[2] == ("the NVIDIA driver supports CUDA up to 12.4 but this cuda-python is built "
                        "for CUDA 13.4: install the stack for your driver (pip install -e "
                        "'.[gpu-cu12]') or update the driver")


def test_an_error_inside_a_graph_capture_is_the_one_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    """The failed enqueue invalidates the capture, so cudaStreamEndCapture fails too; its error
    used to replace the cause. Names as in cuda-python (the contract tests check them)."""
    from types import SimpleNamespace

    from cnn_deploy.errors import EngineError

    success, invalidated = SimpleNamespace(name="cudaSuccess"), SimpleNamespace(
        name="cudaErrorStreamCaptureInvalidated")
    calls: list[str] = []
    rt = SimpleNamespace(
        cudaError_t=SimpleNamespace(cudaSuccess=success),
        cudaStreamCaptureMode=SimpleNamespace(cudaStreamCaptureModeThreadLocal=1),
        cudaStreamBeginCapture=lambda stream, mode: (calls.append("begin"), (success,))[1],
        cudaStreamEndCapture=lambda stream: (calls.append("end"), (invalidated, None))[1],
        cudaGetErrorString=lambda err: (success, b"operation failed due to a previous error"),
    )
    monkeypatch.setattr(cuda, "runtime", lambda: rt)
    graph = cuda.Graph(stream=SimpleNamespace(raw=7))  # type: ignore[arg-type]
    with pytest.raises(EngineError, match="enqueue failed"), graph.capture():
        raise EngineError("enqueue failed")
    assert calls == ["begin", "end"] and not graph.ready
    with pytest.raises(BackendError, match="cudaStreamEndCapture failed with "
                                           "cudaErrorStreamCaptureInvalidated"), graph.capture():
        pass  # nothing failed inside, but EndCapture did: that error is the one to report
