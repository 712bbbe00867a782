"""The native TensorRT backend: a serialized plan run with cuda-python streams and buffers.

Loading is lazy (``PlanFromPath`` in Polygraphy's terms): the plan is read, checked
against this GPU and TensorRT, and deserialized in ``__enter__``. Inputs are staged into
pinned host memory outside the timed region; a run is H2D copy, ``execute_async_v3`` (or
the replay of a CUDA graph of it) and D2H copy, all asynchronous on one stream.
TensorRT 10.x and 11.x are served by the same code; where they differ the code asks
``hasattr``, never the version string. Every TensorRT name used is listed in
``RUNTIME_API`` and checked against the real packages by tests/test_tensorrt_runtime.py.
"""

from __future__ import annotations

import importlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cnn_deploy.backends.base import (
    Availability,
    Backend,
    LayerTime,
    Option,
    PhaseTimer,
    Runner,
    Signature,
    Target,
)
from cnn_deploy.errors import BackendError, BenchError, EngineError

# Attributes of the tensorrt module, and of its runtime classes, that this module uses.
RUNTIME_API = (
    "__name__", "__version__", "Runtime", "Runtime.deserialize_cuda_engine",
    "Runtime.engine_host_code_allowed",  # Core/Runtime.html (10.x, 11.x): default False
    "TensorIOMode.INPUT", "nptype",
    "ICudaEngine.create_execution_context", "ICudaEngine.num_io_tensors",
    "ICudaEngine.get_tensor_name", "ICudaEngine.get_tensor_mode", "ICudaEngine.get_tensor_dtype",
    "ICudaEngine.get_tensor_shape", "ICudaEngine.get_tensor_profile_shape",
    "IExecutionContext.set_input_shape", "IExecutionContext.get_tensor_shape",
    "IExecutionContext.set_tensor_address", "IExecutionContext.execute_async_v3",
    # per-layer profiling (profile_layers): Core/Profiler.html, ExecutionContext.html, Engine.html
    "IProfiler", "IProfiler.__init__", "IExecutionContext.profiler",
    "IExecutionContext.enqueue_emits_profile", "IExecutionContext.report_to_profiler",
    "ICudaEngine.create_engine_inspector", "LayerInformationFormat.JSON",
)
# Bound only by the full ``tensorrt`` package: pyCore.cpp declares EngineInspector inside
# ``#if EXPORT_ALL_BINDINGS``, which the lean build leaves out (its create_engine_inspector returns
# an object Python cannot convert). Documented in Core/EngineInspector.html for 10.x and 11.x; the
# code asks ``hasattr(trt, "EngineInspector")`` first and names layers from their names without it.
FULL_ONLY_API = ("EngineInspector", "EngineInspector.execution_context",
                 "EngineInspector.get_engine_information")
# Looked up with hasattr: at least one of each group exists in every supported release
# (TensorRT 11 removed ``device_memory_size``; ``_v2`` appeared in 10.1).
RUNTIME_API_ALTERNATIVES = (("ICudaEngine.device_memory_size_v2", "ICudaEngine.device_memory_size"),)
INSTALL_HINT = "pip install tensorrt"
REBUILD = "cnndeploy build <model>.onnx"


def import_trt() -> Any:
    """The full ``tensorrt`` package, else the runtime-only ``tensorrt_lean``."""
    for name in ("tensorrt", "tensorrt_lean"):
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    raise BackendError(f"TensorRT is not installed: {INSTALL_HINT}")


def read_plan(path: Path) -> bytes:
    """A plan file's bytes, or an EngineError saying how to get a good one."""
    if not path.is_file():
        raise EngineError(f"engine file not found: {path}: build it with `{REBUILD}`")
    data = path.read_bytes()
    from cnn_deploy.engine import MIN_PLAN_BYTES

    if len(data) < MIN_PLAN_BYTES:
        raise EngineError(f"engine file {path} is {len(data)} bytes, too small to be a TensorRT "
                          f"plan (truncated copy?): rebuild it with `{REBUILD}`")
    return data


def _compat_notes(plan: Path, version: str, gpu: str, cc: tuple[int, int]) -> list[str]:
    """cnn_deploy.engine.check_compatible: notes, or EngineError on another GPU or version."""
    from cnn_deploy.engine import check_compatible

    return list(check_compatible(plan, version, gpu, cc))


@dataclass
class _IO:
    name: str
    dtype: np.dtype
    host: Any = None  # cuda.HostBuffer
    device: Any = None  # cuda.DeviceBuffer
    view: np.ndarray | None = None  # the pinned host memory shaped for the staged batch


@dataclass(frozen=True)
class _Staged:
    shape: tuple[int, ...]


class TrtRunner(Runner):
    """``options``: cuda_graph (replay a CUDA graph of the enqueue), stream_ordered
    (allocate device buffers with cudaMallocAsync on the runner's stream)."""

    backend = "tensorrt"

    def __init__(self, plan: Path, options: dict[str, Any] | None = None) -> None:
        super().__init__(options, device="cuda")
        self.plan = Path(plan)
        # Validated against BACKEND.options by the registry; direct callers get the same check.
        self.options = BACKEND.resolve(self.options)
        self.trt_version = ""
        self._trt: Any = None
        self._logger: Any = None
        self._runtime: Any = None
        self._engine: Any = None
        self._context: Any = None
        self._stream: Any = None
        self._copy_streams: tuple[Any, ...] = ()  # (input, output) for the timed, phased run
        self._sync_events: list[Any] = []
        self._inputs: list[_IO] = []
        self._outputs: list[_IO] = []
        self._capacity = 0  # batch the buffers are sized for
        self._graph: Any = None  # cuda.Graph of the enqueue for the staged shape
        self._graph_shape: tuple[int, ...] | None = None
        self._timers: list[Any] = []
        self._signature: Signature | None = None
        self._profile: tuple[int, int, int] | None = None
        self._slots: list[Any] = []  # trt_slots.Slot: double buffers for submit/collect

    @property
    def label(self) -> str:
        extra = (" cuda-graph" if self.options["cuda_graph"] else "") + (
            " spin" if self.options["spin"] else "")
        return f"tensorrt {self.plan.stem}{extra}"

    @property
    def signature(self) -> Signature:
        if self._signature is None:
            raise RuntimeError("runner not active")
        return self._signature

    @property
    def profile_batches(self) -> tuple[int, int, int]:
        """(min, opt, max) batch of optimisation profile 0."""
        if self._profile is None:
            raise RuntimeError("runner not active")
        return self._profile

    def batch_limits(self) -> tuple[int, int] | None:
        low, _, high = self.profile_batches
        return low, high

    # -- loading -----------------------------------------------------------------------
    def _activate(self) -> None:
        from cnn_deploy import cuda

        data = read_plan(self.plan)  # before any import: a bad path needs no GPU to report
        trt = self._trt = import_trt()
        self.trt_version = str(trt.__version__)
        # Ask CUDA first: without a driver TensorRT still hands out a Runtime, which crashes.
        props = cuda.device_properties()
        self.notes = _compat_notes(self.plan, self.trt_version, props.name, props.compute_capability)
        try:
            self._load(trt, data)
        except BaseException:
            self._deactivate()
            raise

    def _load(self, trt: Any, data: bytes) -> None:
        from cnn_deploy import cuda
        from cnn_deploy.engine import capturing_logger

        # Never the default trt.Logger: it prints to stdout. This one outlives the runtime.
        logger = self._logger = capturing_logger(trt)
        runtime = self._runtime = trt.Runtime(logger)
        # A version-compatible plan embeds the lean runtime as host code, which the runtime runs
        # only when allowed (default False; trtexec's sampleEngines.cpp and Polygraphy's
        # EngineFromBytes allow it). -o tensorrt.host_code=false refuses such plans.
        runtime.engine_host_code_allowed = bool(self.options["host_code"])
        engine = self._engine = runtime.deserialize_cuda_engine(data)
        self.notes.extend(f"TensorRT: {w}" for w in logger.warnings)
        if engine is None:
            said = "; ".join(logger.errors[-3:])
            raise EngineError(f"{trt.__name__} {self.trt_version} cannot deserialize {self.plan}"
                              + (f" (TensorRT: {said})" if said else "")
                              + ": the file is corrupt or was built by another TensorRT version"
                              + (" (the lean runtime loads only version-compatible plans)"
                                 if trt.__name__ == "tensorrt_lean" else "")
                              + ("" if self.options["host_code"] else
                                 "; a version-compatible plan needs -o tensorrt.host_code=true")
                              + f": rebuild it here with `{REBUILD}`")
        context = self._context = engine.create_execution_context()
        if context is None:
            raise EngineError(f"TensorRT could not create an execution context for {self.plan} "
                              "(out of GPU memory?)")
        for i in range(engine.num_io_tensors):
            name = engine.get_tensor_name(i)
            io = _IO(name, np.dtype(trt.nptype(engine.get_tensor_dtype(name))))
            (self._inputs if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
             else self._outputs).append(io)
        if len(self._inputs) != 1 or not self._outputs:
            raise EngineError(f"{self.plan} has {len(self._inputs)} inputs and "
                              f"{len(self._outputs)} outputs; cnn_deploy runs one-input networks")
        first = self._inputs[0]
        shape = tuple(None if d < 0 else int(d) for d in engine.get_tensor_shape(first.name))
        if shape[0] is None:
            lo, opt, hi = engine.get_tensor_profile_shape(first.name, 0)
            self._profile = (int(lo[0]), int(opt[0]), int(hi[0]))
        else:
            self._profile = (shape[0], shape[0], shape[0])
        self._signature = Signature(first.name, shape, first.dtype.name, self._outputs[0].name)
        if hasattr(engine, "device_memory_size_v2"):  # TensorRT >= 10.1, the only one in 11
            self.notes.append(f"engine scratch memory {engine.device_memory_size_v2} bytes")
        elif hasattr(engine, "device_memory_size"):
            self.notes.append(f"engine scratch memory {engine.device_memory_size} bytes")
        self._stream = cuda.Stream()  # compute: enqueue, graphs, and everything when not timed
        # trtexec's Iteration uses three streams so the H2D copy of iteration i + 1 overlaps
        # the compute of iteration i (sampleInference.cpp, StreamType kINPUT/kCOMPUTE/kOUTPUT)
        self._copy_streams = (cuda.Stream(), cuda.Stream())

    def _deactivate(self) -> None:
        for stream in (self._stream, *self._copy_streams):  # nothing in flight on freed memory
            if stream is not None and stream.raw is not None:
                stream.synchronize()
        self._free_buffers()
        for slot in self._slots:
            slot.close()
        self._slots = []
        for timer in self._timers:
            timer.close()
        self._timers = []
        for event in self._sync_events:
            event.close()
        self._sync_events = []
        # context before engine before runtime
        self._context = self._engine = self._runtime = self._logger = None
        if self._stream is not None:
            self._stream.close()
            self._stream = None
        for stream in self._copy_streams:
            stream.close()
        self._copy_streams = ()
        self._inputs, self._outputs = [], []
        self._signature = self._profile = None

    def _free_buffers(self) -> None:
        self._drop_graph()
        for io in (*self._inputs, *self._outputs):
            for buf in (io.host, io.device):
                if buf is not None:
                    buf.close()
            io.host = io.device = io.view = None
        self._capacity = 0

    # -- staging -------------------------------------------------------------------------
    def stage(self, x: np.ndarray) -> Any:
        """Set the shape, fill the pinned input; the handle is valid until the next stage()."""
        self.check_input(x)
        batch = int(x.shape[0])
        context = self._context
        first = self._inputs[0]
        if not context.set_input_shape(first.name, tuple(x.shape)):
            raise BenchError(f"TensorRT rejected input shape {tuple(x.shape)} for {self.plan}")
        if batch > self._capacity:
            self._allocate(batch, tuple(x.shape))
        first.view = first.host.array(tuple(x.shape), first.dtype)
        np.copyto(first.view, x)
        for io in self._outputs:
            io.view = io.host.array(tuple(context.get_tensor_shape(io.name)), io.dtype)
        for io in (*self._inputs, *self._outputs):
            context.set_tensor_address(io.name, io.device.ptr)
        staged = _Staged(tuple(x.shape))
        if not self.options["transfers"]:  # trtexec --noDataTransfers: the input goes over once
            self._copy(self._inputs, "h2d")
            self._stream.synchronize()
        if self.options["cuda_graph"] and staged.shape != self._graph_shape:
            self._capture(staged)
        return staged

    def _allocate(self, batch: int, shape: tuple[int, ...]) -> None:
        """Pinned host and device buffers for ``batch`` tiles; they are reused below it."""
        from cnn_deploy import cuda

        for pending in (self._stream, *self._copy_streams):  # no copy still using the old ones
            pending.synchronize()
        self._free_buffers()
        stream = self._stream if self.options["stream_ordered"] else None
        context = self._context
        for io in (*self._inputs, *self._outputs):
            io_shape = shape if io is self._inputs[0] else tuple(context.get_tensor_shape(io.name))
            nbytes = int(np.prod(io_shape, dtype=np.int64)) * io.dtype.itemsize
            try:
                io.host, io.device = cuda.HostBuffer(nbytes), cuda.DeviceBuffer(nbytes, stream)
            except BackendError as exc:
                if "Memory" in str(exc):  # cudaErrorMemoryAllocation: let bench say "smaller batch"
                    raise MemoryError(str(exc)) from None
                raise
        if stream is not None:  # stream-ordered allocations, first touched on the copy streams
            stream.synchronize()
        self._capacity = batch

    def _capture(self, staged: _Staged) -> None:
        """Enqueue once and wait (TensorRT's shape-dependent setup), then capture the enqueue.

        A graph fixes shapes, tensor addresses and the context's state, so there is one, for
        the shape staged last; a new shape or new buffers mean a new capture.
        """
        from cnn_deploy import cuda

        self._drop_graph()
        self._execute()
        self._stream.synchronize()
        graph = cuda.Graph(self._stream)
        try:
            with graph.capture():
                self._execute()
        except (BackendError, EngineError) as exc:
            # Not every engine can be captured (trtexec falls back the same way): run the
            # plain enqueue, and say why in the record.
            graph.close()
            said = "; ".join(self._logger.errors[-2:]) if self._logger is not None else ""
            self.notes.append(f"CUDA graph capture failed for batch {staged.shape[0]} ({exc}"
                              + (f"; TensorRT: {said}" if said else "")
                              + "): timed with the plain enqueue instead")
            self._graph_shape = staged.shape  # do not retry this shape
            return
        except BaseException:
            graph.close()
            raise
        self._graph, self._graph_shape = graph, staged.shape

    def _drop_graph(self) -> None:
        if self._graph is not None:
            self._graph.close()
        self._graph = self._graph_shape = None

    # -- running ---------------------------------------------------------------------------
    def _execute(self) -> None:
        if not self._context.execute_async_v3(self._stream.handle):
            raise BackendError(f"TensorRT enqueue failed for {self.plan} (see the TensorRT log)")

    def _enqueue(self, staged: _Staged) -> None:
        if self._graph is not None and staged.shape == self._graph_shape:
            self._graph.launch()
        else:
            self._execute()

    def _copy(self, ios: list[_IO], kind: str, stream: Any = None) -> None:
        from cnn_deploy import cuda

        for io in ios:
            assert io.view is not None
            host = io.view.ctypes.data
            dst, src = (io.device.ptr, host) if kind == "h2d" else (host, io.device.ptr)
            cuda.memcpy_async(dst, src, io.view.nbytes, kind, stream or self._stream)

    def run(self, staged: Any) -> Any:
        transfers = self.options["transfers"]
        if transfers:
            self._copy(self._inputs, "h2d")
        self._enqueue(staged)
        if transfers:
            self._copy(self._outputs, "d2h")
        return self._outputs[0].view

    def run_phased(self, staged: Any, timer: PhaseTimer) -> Any:
        """trtexec's Iteration::query: H2D on the input stream, the enqueue on the compute
        stream once the copy is done, D2H on the output stream once the compute is done, with
        an event at each start and end, so the phases are trtexec's (GPU compute excludes the
        wait for the previous iteration; 'queue' phases hold the waits; latency is the span)."""
        from cnn_deploy import cuda

        transfers = self.options["transfers"]
        if not isinstance(timer, cuda.EventTimer) or not self._copy_streams:
            return super().run_phased(staged, timer)  # a foreign timer: one stream, in order
        in_stream, out_stream = self._copy_streams
        if transfers:
            timer.mark("start", in_stream)
            self._copy(self._inputs, "h2d", in_stream)
            self._stream.wait(timer.mark("h2d", in_stream))
            timer.mark("queue_compute", self._stream)
        else:
            timer.mark("start", self._stream)
        t0 = time.perf_counter_ns()
        self._enqueue(staged)
        self.last_enqueue_ms = (time.perf_counter_ns() - t0) / 1e6
        computed = timer.mark("compute", self._stream)
        if transfers:
            out_stream.wait(computed)
            timer.mark("queue_d2h", out_stream)
            self._copy(self._outputs, "d2h", out_stream)
            timer.mark("d2h", out_stream)
        return self._outputs[0].view

    def infer(self, x: np.ndarray) -> np.ndarray:
        if not self.options["transfers"]:
            raise BenchError("-o tensorrt.transfers=false times the compute alone: the outputs "
                             "never come back, so nothing can be classified or checked; drop it")
        return super().infer(x)

    # -- double-buffered batches (a stream): trt_slots ------------------------------------
    def slots(self) -> int:
        return 2 if self.options["transfers"] else 1

    def submit(self, x: np.ndarray, slot: int) -> Any:
        """Batch ``x`` into buffer set ``slot``: H2D, enqueue and D2H queued on the three
        streams (a plain enqueue: a CUDA graph is bound to one set of addresses)."""
        from cnn_deploy.backends import trt_slots

        if self.slots() == 1:
            return super().submit(x, slot)
        self.check_input(x)
        if self._graph is not None:  # captured for other addresses: stage() captures anew
            self._drop_graph()
        if not self._slots:
            self._slots = trt_slots.make_slots(self.slots(), blocking=not self.options["spin"])
        context, first = self._context, self._inputs[0]
        if not context.set_input_shape(first.name, tuple(x.shape)):
            raise BenchError(f"TensorRT rejected input shape {tuple(x.shape)} for {self.plan}")
        outputs = [(io.name, io.dtype, tuple(context.get_tensor_shape(io.name))) for io in self._outputs]
        nbytes = {first.name: x.nbytes, **{name: int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
                                           for name, dtype, shape in outputs}}
        buffers = self._slots[slot]
        buffers.ensure(int(x.shape[0]), nbytes, self._stream if self.options["stream_ordered"] else None)
        trt_slots.submit(buffers, x, input_name=first.name, input_dtype=first.dtype, outputs=outputs,
                         set_address=context.set_tensor_address, enqueue=self._execute,
                         compute=self._stream, streams=self._copy_streams)
        return slot

    def collect(self, handle: Any) -> np.ndarray:
        from cnn_deploy.backends import trt_slots

        if not isinstance(handle, int) or not self._slots:
            return super().collect(handle)
        return trt_slots.collect(self._slots[handle], self._outputs[0].name)

    def phase_timer(self) -> PhaseTimer | None:
        from cnn_deploy import cuda

        # Events created on first use; waiting on them blocks (trtexec's default) or spins.
        blocking = not self.options["spin"]
        timer = cuda.EventTimer(self._stream, new_event=lambda: cuda.Event(blocking=blocking))
        self._timers.append(timer)
        return timer

    def synchronize(self) -> None:
        if self.options["spin"]:
            for stream in (self._stream, *self._copy_streams):
                stream.synchronize()  # cudaStreamSynchronize spins by default
            return
        from cnn_deploy import cuda

        # trtexec's default: wait on an event created with cudaEventBlockingSync (the thread
        # sleeps) rather than spinning in cudaStreamSynchronize
        if not self._sync_events:
            self._sync_events = [cuda.Event(blocking=True)
                                 for _ in (self._stream, *self._copy_streams)]
        for stream, event in zip((self._stream, *self._copy_streams), self._sync_events,
                                 strict=True):
            event.record(stream)
            event.synchronize()

    def free_memory_bytes(self) -> int | None:
        from cnn_deploy import cuda

        return cuda.memory_info()[0]

    def to_numpy(self, output: Any) -> np.ndarray:
        return np.array(output, copy=True)  # the pinned buffer is overwritten by the next run

    # -- per-layer profiling ---------------------------------------------------------------
    def profile_layers(self, x: np.ndarray, runs: int) -> list[LayerTime]:
        """``runs`` enqueues of ``x`` under an IProfiler, after one that is not kept.

        With ``enqueue_emits_profile`` off the enqueue stays asynchronous and records CUDA events
        per layer; ``report_to_profiler()`` after the stream is synchronised turns the previous
        enqueue's events into one ``report_layer_time`` call per layer (NvInferRuntime.h,
        IExecutionContext::setEnqueueEmitsProfile / reportToProfiler). The CUDA graph, if any, is
        not used: the profiler times the plain enqueue. LayerTime.op is the inspector's
        ``LayerType`` and ``constituents`` the ONNX nodes fused into the layer, where the engine
        was built with detailed profiling verbosity; else both come from the layer name.
        """
        from cnn_deploy.backends.trt_layers import constituent_names

        if runs < 1:
            raise BenchError(f"per-layer profiling needs at least 1 run, got {runs}")
        if not self._active:
            raise RuntimeError("use the runner inside a `with` block")
        self.stage(x)
        self._copy(self._inputs, "h2d")
        info = self._layer_information()
        profiler = _layer_profiler(self._trt)
        context = self._context
        context.profiler = profiler
        context.enqueue_emits_profile = False
        samples: list[LayerTime] = []
        try:
            for run in range(-1, runs):  # run -1 warms up and is dropped
                profiler.records.clear()
                self._execute()
                self._stream.synchronize()
                if not context.report_to_profiler():
                    raise BackendError(f"TensorRT reported no layer times for {self.plan} "
                                       "(see the TensorRT log)")
                if run < 0:
                    continue
                for name, ms in profiler.records:
                    layer = info.get(name, {})
                    samples.append(LayerTime(name, str(layer.get("LayerType", "")), ms, run,
                                             constituent_names(name, layer)))
        finally:
            context.enqueue_emits_profile = True
            context.profiler = None
        return samples

    def _layer_information(self) -> dict[str, dict[str, Any]]:
        """The engine inspector's layers by name; empty where the package has no inspector."""
        from cnn_deploy.backends.trt_layers import parse_layer_information

        trt = self._trt
        if not hasattr(trt, "EngineInspector"):  # tensorrt_lean: see FULL_ONLY_API
            self.notes.append(f"{trt.__name__} has no engine inspector: layer categories come "
                              "from layer names alone")
            return {}
        inspector = self._engine.create_engine_inspector()
        inspector.execution_context = self._context  # resolves the staged shapes
        text = inspector.get_engine_information(trt.LayerInformationFormat.JSON)
        return {layer["Name"]: layer for layer in parse_layer_information(text)}


def _layer_profiler(trt: Any) -> Any:
    """An IProfiler that keeps (layer name, ms) in the order TensorRT reports them."""

    class LayerProfiler(trt.IProfiler):
        def __init__(self) -> None:
            trt.IProfiler.__init__(self)
            self.records: list[tuple[str, float]] = []

        def report_layer_time(self, layer_name: str, ms: float) -> None:
            self.records.append((layer_name, float(ms)))

    return LayerProfiler()


# -- the registry entry ------------------------------------------------------------
def probe() -> list[Availability]:
    """The native runtime: TensorRT (full or lean), cuda-python and a visible GPU."""
    from cnn_deploy import cuda

    def row(usable: bool, why: str) -> list[Availability]:
        return [Availability("tensorrt", "cuda", usable, why, gpu=True)]

    if not (_installed("tensorrt") or _installed("tensorrt_lean")):
        return row(False, f"package missing: {INSTALL_HINT}")
    if not (_installed("cuda.bindings") or _installed("cuda.cudart")):
        return row(False, f"cuda-python missing (streams and buffers): {cuda.INSTALL_HINT}")
    try:
        if cuda.device_count() == 0:
            return row(False, "no GPU: CUDA sees no device (driver missing or no GPU)")
        props = cuda.device_properties(0)
        trt = import_trt()
    except BackendError as exc:
        return row(False, str(exc))
    cc = "{}{}".format(*props.compute_capability)
    return row(True, f"{trt.__name__} {trt.__version__}, {props.name} (sm_{cc})")


def _installed(module: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a missing parent package, or a broken install
        return False


def _runner(target: Target, options: dict[str, Any]) -> Runner:
    assert target.engine is not None  # the registry checked `needs`
    return TrtRunner(target.engine, options)


BACKEND = Backend(
    name="tensorrt",
    summary="native TensorRT 10.x / 11.x engines (cnndeploy build) with cuda-python",
    needs="engine",
    probe=probe,
    runner=_runner,
    options=(
        Option("cuda_graph", "bool", False, "replay a CUDA graph of the enqueue"),
        Option("stream_ordered", "bool", False, "allocate device buffers with cudaMallocAsync"),
        Option("host_code", "bool", True, "let the runtime run the host code a version-"
               "compatible plan embeds (as trtexec and Polygraphy do)"),
        Option("transfers", "bool", True, "copy input and output every iteration (false: the "
               "engine alone, as trtexec --noDataTransfers; outputs are then not read back)"),
        Option("spin", "bool", False, "wait for the GPU by spinning (trtexec --useSpinWait); "
               "default: blocking sync, trtexec's default"),
    ),
    aliases=("trt",),
    devices=("cuda",),
    probe_target=lambda options: "cuda",
    profiles=True,
    packages=("tensorrt", "tensorrt-lean", "cuda-python", "cuda-bindings"),
    # trtexec's --useCudaGraph and --useSpinWait: on a small engine the launch and the wait
    # are a large share of the time
    tune_space={"cuda_graph": (False, True), "spin": (False, True)},
    # builderOptimizationLevel (IBuilderConfig.builder_optimization_level, 0..5, default 3):
    # 4 and 5 search more tactics; below 3 only builds faster
    build_space={"opt_level": (3, 4, 5)},
)

