"""The native TensorRT backend without a GPU: its API contract and its pure logic.

The contract: every TensorRT name backends/tensorrt.py uses is listed in RUNTIME_API (read
from the source with ``ast``), and every listed name exists in the real runtime-only
package ``tensorrt_lean`` of TensorRT 10.x and 11.x. The lean package installs and imports
without a GPU; scripts/setup.sh puts one release in each of .trt/10 and .trt/11 and the
check runs in a subprocess with PYTHONPATH pointing there. Runtime *classes* are checked,
not instances, since those need a GPU.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

from cnn_deploy.backends import tensorrt as trt_backend
from cnn_deploy.backends.base import check_batch_range
from cnn_deploy.backends.tensorrt import (
    FULL_ONLY_API,
    RUNTIME_API,
    RUNTIME_API_ALTERNATIVES,
    TrtRunner,
    import_trt,
    read_plan,
)
from cnn_deploy.errors import BackendError, BenchError, EngineError

from contracts import CONTRACT_DIR, missing_names

REPO = Path(__file__).resolve().parents[1]
SOURCE = Path(trt_backend.__file__)
# Names in the source that stand for TensorRT objects, and the class whose attributes they use.
ROOTS = {"trt": "", "self._trt": "", "engine": "ICudaEngine", "self._engine": "ICudaEngine",
         "context": "IExecutionContext", "self._context": "IExecutionContext",
         "runtime": "Runtime", "self._runtime": "Runtime", "inspector": "EngineInspector"}

# Resolves dotted names on a module (``Class.attr`` on the class) and prints what is missing.


def _dotted(node: ast.AST) -> str | None:
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return None


def used_trt_names(source: str) -> set[str]:
    """Every TensorRT attribute the source touches, as RUNTIME_API spells it."""
    used: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        chain = None
        if isinstance(node, ast.Attribute):
            chain = _dotted(node)
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
              and node.func.id in ("hasattr", "getattr") and len(node.args) >= 2
              and isinstance(node.args[1], ast.Constant) and isinstance(node.args[1].value, str)):
            root = _dotted(node.args[0])
            chain = f"{root}.{node.args[1].value}" if root else None
        if chain is None:
            continue
        for root, cls in sorted(ROOTS.items(), key=lambda kv: -len(kv[0])):
            if chain.startswith(root + "."):
                rest = chain[len(root) + 1:]
                used.add(f"{cls}.{rest}" if cls else rest)
                break
    # keep only the longest chains: trt.Logger.WARNING also walks trt.Logger
    return {n for n in used if not any(o.startswith(n + ".") for o in used)}


def listed_names() -> set[str]:
    return {*RUNTIME_API, *FULL_ONLY_API, *(n for group in RUNTIME_API_ALTERNATIVES for n in group)}


# -- the source uses only listed names ----------------------------------------------
def test_the_backend_uses_only_names_listed_in_runtime_api() -> None:
    used = used_trt_names(SOURCE.read_text())
    assert used - listed_names() == set()
    assert "IExecutionContext.execute_async_v3" in used  # the walk sees through self._context
    assert "Runtime.engine_host_code_allowed" in used and "TensorIOMode.INPUT" in used


def test_runtime_api_lists_no_name_the_backend_does_not_use() -> None:
    used = used_trt_names(SOURCE.read_text())
    prefixes = {n.rsplit(".", 1)[0] for n in used if "." in n}
    assert listed_names() - used - prefixes == set()


def test_the_source_walk_catches_an_unlisted_call() -> None:
    bad = SOURCE.read_text() + "\n\ndef _x(context):\n    context.enqueue_v2(0)\n"
    assert used_trt_names(bad) - listed_names() == {"IExecutionContext.enqueue_v2"}


# -- the listed names exist in the real packages ------------------------------------
def contract(folder: str, names: tuple[str, ...] = RUNTIME_API) -> dict[str, Any]:
    return missing_names(folder, "tensorrt_lean", names, RUNTIME_API_ALTERNATIVES)


@pytest.mark.parametrize("major", ["10", "11"])
def test_every_runtime_name_exists_in_tensorrt_lean(major: str) -> None:
    result = contract(major)
    assert result["version"].split(".")[0] == major
    assert result["missing"] == []


def test_the_contract_check_reports_a_missing_name() -> None:
    result = contract("11", (*RUNTIME_API, "IExecutionContext.execute_async_v9"))
    assert result["missing"] == ["IExecutionContext.execute_async_v9"]


@pytest.mark.parametrize("major", ["10", "11"])
def test_the_engine_inspector_is_bound_only_by_the_full_package(major: str) -> None:
    """Why profile_layers asks hasattr(trt, "EngineInspector"): the lean runtime has the factory
    ICudaEngine.create_engine_inspector but not the class it returns."""
    names = ("ICudaEngine.create_engine_inspector", *FULL_ONLY_API)
    assert contract(major, names)["missing"] == list(FULL_ONLY_API)


def test_tensorrt_11_dropped_the_name_10_had() -> None:
    """Why the hasattr: device_memory_size exists in 10.x only, its _v2 in both."""
    old, new = "ICudaEngine.device_memory_size", "ICudaEngine.device_memory_size_v2"
    assert contract("10", (old, new))["missing"] == []
    assert contract("11", (old, new))["missing"] == [old]


# -- pure logic, no TensorRT needed ------------------------------------------------------
def test_a_runner_with_batch_limits_takes_batches_inside_them_only() -> None:
    from fakes import ScriptedRunner

    class Bounded(ScriptedRunner):
        def batch_limits(self) -> tuple[int, int] | None:
            return 2, 8

    with Bounded(lambda x: np.zeros(len(x), dtype=int)) as runner:
        for batch in (2, 8):
            assert runner.infer(np.zeros((batch, 1, 28, 28), np.float32)).shape == (batch, 10)
        with pytest.raises(BenchError, match=r"batch 9 is outside scripted's batch profile 2\.\.8"):
            runner.infer(np.zeros((9, 1, 28, 28), np.float32))


def test_a_batch_above_the_profile_names_the_range_and_the_rebuild_flag() -> None:
    with pytest.raises(BenchError, match=r"batch 8192 is outside net.plan's batch profile "
                                         r"1\.\.4096.*--max-batch 8192"):
        check_batch_range([8192], (1, 4096), "net.plan")


def test_a_batch_below_the_profile_says_so() -> None:
    with pytest.raises(BenchError, match=r"batch 4 is outside .* 8\.\.64\b.*smaller minimum batch"):
        check_batch_range([4], (8, 64), "net.plan")


def test_a_missing_plan_is_an_engine_error_without_tensorrt(tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    _block_trt(monkeypatch)
    plan = tmp_path / "lenet_1c1f_fp16.plan"
    runner = TrtRunner(plan)
    with pytest.raises(EngineError, match=r"engine file not found: .*lenet_1c1f_fp16\.plan: "
                                          r"build it with `cnndeploy build"):
        runner.__enter__()
    assert not runner._active


def test_a_truncated_plan_is_an_engine_error_without_tensorrt(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _block_trt(monkeypatch)
    plan = tmp_path / "net.plan"
    plan.write_bytes(b"\x00" * 100)
    with pytest.raises(EngineError, match=r"is 100 bytes, too small .*truncated.*rebuild"):
        TrtRunner(plan).__enter__()
    plan.write_bytes(b"\x00" * 4096)
    assert len(read_plan(plan)) == 4096


def test_import_trt_names_the_install_command_when_neither_package_imports(
        monkeypatch: pytest.MonkeyPatch) -> None:
    _block_trt(monkeypatch)
    with pytest.raises(BackendError, match=r"TensorRT is not installed: pip install tensorrt"):
        import_trt()


def test_import_trt_prefers_the_full_package_and_falls_back_to_lean(
        monkeypatch: pytest.MonkeyPatch) -> None:
    full, lean = ModuleType("tensorrt"), ModuleType("tensorrt_lean")
    monkeypatch.setitem(sys.modules, "tensorrt", full)
    monkeypatch.setitem(sys.modules, "tensorrt_lean", lean)
    assert import_trt() is full
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    assert import_trt() is lean


def test_a_plan_that_exists_needs_tensorrt_then_cuda_python(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    plan = tmp_path / "net.plan"
    plan.write_bytes(b"\x01" * 4096)
    _block_trt(monkeypatch)
    with pytest.raises(BackendError, match="pip install tensorrt"):
        TrtRunner(plan).__enter__()
    monkeypatch.setitem(sys.modules, "tensorrt_lean", ModuleType("tensorrt_lean"))
    sys.modules["tensorrt_lean"].__version__ = "10.16.1"  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "cuda", None)
    monkeypatch.setitem(sys.modules, "cuda.bindings", None)
    from cnn_deploy import cuda

    cuda.runtime.cache_clear()
    try:
        with pytest.raises(BackendError, match=r"cuda-python is not installed: pip install cuda-python"):
            TrtRunner(plan).__enter__()
    finally:
        cuda.runtime.cache_clear()


def test_unknown_options_are_refused_and_defaults_filled(tmp_path: Path) -> None:
    runner = TrtRunner(tmp_path / "net.plan", {"cuda_graph": True})
    assert runner.options == {"cuda_graph": True, "stream_ordered": False, "host_code": True,
                              "transfers": True, "spin": False}
    assert runner.backend == "tensorrt" and runner.device == "cuda"
    assert runner.label == "tensorrt net cuda-graph"
    with pytest.raises(BackendError, match=r"unknown option 'tensorrt.graph': tensorrt takes "
                                           r"tensorrt.cuda_graph, tensorrt.stream_ordered, "
                                           r"tensorrt.host_code, tensorrt.transfers, "
                                           r"tensorrt.spin\. "
                                           r"Did you mean 'tensorrt.cuda_graph'\?"):
        TrtRunner(tmp_path / "net.plan", {"graph": True})
    with pytest.raises(BackendError, match=r"tensorrt.stream_ordered=maybe: expected true or false"):
        TrtRunner(tmp_path / "net.plan", {"stream_ordered": "maybe"})


def test_the_probe_says_what_is_missing_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(trt_backend, "_installed", lambda module: False)
    (row,) = trt_backend.probe()
    assert (row.backend, row.target, row.usable, row.gpu) == ("tensorrt", "cuda", False, True)
    assert row.why == "package missing: pip install tensorrt"
    monkeypatch.setattr(trt_backend, "_installed", lambda module: module == "tensorrt_lean")
    assert trt_backend.probe()[0].why.startswith("cuda-python missing")


def test_the_probe_sees_no_gpu_with_the_real_packages() -> None:
    folders = [CONTRACT_DIR / "11", CONTRACT_DIR / "cuda13"]
    if not all(f.is_dir() for f in folders):
        pytest.skip("run scripts/setup.sh to install the contract packages under .trt/")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(map(str, folders))}
    code = ("from cnn_deploy import cuda; from cnn_deploy.backends.tensorrt import probe\n"
            "try:\n    print(cuda.device_count())\nexcept Exception as exc:\n"
            "    print('driver too old')\nprint(probe()[0].why)")
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    count, why = done.stdout.strip().splitlines()[-2:]
    if count == "driver too old":  # a GPU whose driver predates CUDA 13: the probe says so
        assert why.startswith("the NVIDIA driver supports CUDA up to"), why
        return
    if count != "0":
        pytest.skip("this machine has a GPU")
    assert why == "no GPU: CUDA sees no device (driver missing or no GPU)"


def _block_trt(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make ``import tensorrt`` and ``import tensorrt_lean`` fail as if not installed."""
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    monkeypatch.setitem(sys.modules, "tensorrt_lean", None)


# -- on a GPU with TensorRT: a real engine ----------------------------------------------
@pytest.mark.gpu
@pytest.mark.tensorrt
@pytest.mark.slow
def test_a_built_engine_matches_onnxruntime(trained: Any, tmp_path: Path) -> None:
    from cnn_deploy.backends.ort import OrtRunner
    from cnn_deploy.engine import BuildOptions, build_engine

    options = BuildOptions(min_batch=1, opt_batch=64, max_batch=128)
    plan, _sidecar = build_engine(trained.onnx, options, tmp_path / "lenet_1c1f_fp32.plan")
    x = np.random.default_rng(0).uniform(0, 255, (64, 1, 28, 28)).astype(np.float32)
    with OrtRunner(trained.onnx) as ort_runner:
        want = ort_runner.infer(x)
    for run_options in ({}, {"cuda_graph": True}, {"stream_ordered": True}):
        with TrtRunner(plan, run_options) as runner:
            assert runner.profile_batches == (1, 64, 128)
            np.testing.assert_allclose(runner.infer(x), want, rtol=1e-3, atol=1e-3)
            np.testing.assert_allclose(runner.infer(x[:5]), want[:5], rtol=1e-3, atol=1e-3)
            timer = runner.phase_timer()
            assert timer is not None
            staged = runner.stage(x)
            runner.run_phased(staged, timer)
            runner.synchronize()
            phases = timer.elapsed_ms()
            assert set(phases) == {"h2d", "compute", "d2h"}
            assert all(ms > 0 for ms in phases.values())
            with pytest.raises(BenchError, match="--max-batch 129"):
                runner.stage(np.zeros((129, 1, 28, 28), np.float32))


# -- behaviour the lean packages cannot show without a GPU (trt.Runtime segfaults without a
# driver), through a recording fake whose names the contract tests check in the real packages --
class _Severity:
    INTERNAL_ERROR, ERROR, WARNING, INFO, VERBOSE = range(5)


class _RecordingTrt(ModuleType):
    """Records what the runner does to a Runtime, in order."""

    def __init__(self) -> None:
        super().__init__("tensorrt_lean")
        self.__version__ = "10.16.1.11"
        self.calls: list[str] = []
        calls = self.calls

        class ILogger:
            Severity = _Severity

            def __init__(self) -> None:
                calls.append("ILogger.__init__")

        class Runtime:
            def __init__(self, logger: Any) -> None:
                calls.append(f"Runtime({type(logger).__name__})")
                self.logger = logger
                self._host_code = False

            @property
            def engine_host_code_allowed(self) -> bool:
                return self._host_code

            @engine_host_code_allowed.setter
            def engine_host_code_allowed(self, value: bool) -> None:
                calls.append(f"engine_host_code_allowed={value}")
                self._host_code = value

            def deserialize_cuda_engine(self, data: bytes) -> None:
                calls.append("deserialize_cuda_engine")
                self.logger.log(_Severity.WARNING, "plan built with another TensorRT version")
                self.logger.log(_Severity.ERROR, "Serialization assertion failed: magic tag")
                return None

        self.ILogger, self.Runtime = ILogger, Runtime


@pytest.mark.parametrize("host_code", [True, False])
def test_host_code_is_allowed_before_deserialising_and_the_log_is_captured(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str],
        host_code: bool) -> None:
    from cnn_deploy import cuda

    fake = _RecordingTrt()
    monkeypatch.setattr(trt_backend, "import_trt", lambda: fake)
    monkeypatch.setattr(cuda, "device_properties",
                        lambda index=None: cuda.DeviceProps(0, "NVIDIA H200", (9, 0), 132, 1 << 37))
    plan = tmp_path / "lenet_1c1f_fp32.plan"
    plan.write_bytes(b"\x01" * 1024)
    runner = TrtRunner(plan, {"host_code": host_code})
    with pytest.raises(EngineError) as caught:
        runner.__enter__()
    assert fake.calls == ["ILogger.__init__", "Runtime(CapturingLogger)",
                          f"engine_host_code_allowed={host_code}", "deserialize_cuda_engine"]
    message = str(caught.value)
    assert "(TensorRT: Serialization assertion failed: magic tag)" in message
    assert ("needs -o tensorrt.host_code=true" in message) is not host_code
    out, err = capfd.readouterr()
    assert out == "" and err == ""  # nothing printed: the logger keeps it
    assert not runner._active


@pytest.mark.parametrize("major", ["10", "11"])
def test_the_logger_severities_the_fake_uses_are_the_real_ones(major: str) -> None:
    names = ("ILogger.Severity.INTERNAL_ERROR", "ILogger.Severity.ERROR", "ILogger.Severity.WARNING",
             "Runtime.engine_host_code_allowed", "Runtime.deserialize_cuda_engine")
    assert contract(major, names)["missing"] == []


def test_a_timed_iteration_runs_on_three_streams_in_trtexecs_order(tmp_path: Path) -> None:
    """H2D on the input stream, the enqueue once the copy is done, D2H once the compute is done
    (sampleInference.cpp Iteration::query), with an event at each start and end."""
    from types import SimpleNamespace

    from cnn_deploy import cuda

    log: list[str] = []

    class FakeStream:
        def __init__(self, name: str) -> None:
            self.name = name

        def wait(self, event: Any) -> None:
            log.append(f"{self.name} waits for {event.phase}")

    class FakeEvent:
        def __init__(self) -> None:
            self.phase = "?"

        def record(self, stream: FakeStream) -> None:
            log.append(f"{self.phase} on {stream.name}")

    runner = TrtRunner(tmp_path / "net.plan")
    runner._stream, runner._copy_streams = FakeStream("compute"), (FakeStream("in"), FakeStream("out"))
    runner._outputs = [SimpleNamespace(view=np.zeros((2, 10), np.float32))]
    runner._copy = lambda ios, kind, stream=None: log.append(f"{kind} copy on {stream.name}")  # type: ignore[method-assign]
    runner._enqueue = lambda staged: log.append("enqueue on compute")  # type: ignore[method-assign]
    events: dict[str, FakeEvent] = {}

    def new_event() -> FakeEvent:
        events[str(len(events))] = event = FakeEvent()
        return event

    timer = cuda.EventTimer(new_event=new_event)
    real_mark = timer.mark

    def mark(phase: str, stream: Any = None) -> Any:
        timer._events.setdefault(phase, new_event()).phase = phase
        return real_mark(phase, stream)

    timer.mark = mark  # type: ignore[method-assign]
    runner.run_phased(object(), timer)
    assert log == ["start on in", "h2d copy on in", "h2d on in", "compute waits for h2d",
                   "queue_compute on compute", "enqueue on compute", "compute on compute",
                   "out waits for compute", "queue_d2h on out", "d2h copy on out", "d2h on out"]
