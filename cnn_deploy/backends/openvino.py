"""The OpenVINO backend: the ONNX file read directly by OpenVINO's ONNX frontend, compiled for
its CPU plugin, run with one synchronous infer request.

What is timed. The model is compiled for one static batch: the first :meth:`stage` of a new
batch size reshapes the (dynamic-batch) model and recompiles it, outside the timed region, so
``run`` times what a deployment with that batch size would run, with no dynamic-shape
bookkeeping inside the plugin. ``stage`` wraps the batch in an ``openvino.Tensor`` sharing the
numpy memory and binds it to the request; ``run`` is ``InferRequest.infer()`` on that bound
input, returning the logits as a fresh numpy array (as onnxruntime's ``run`` does). Async
queues are never used: the harness times one synchronous request per batch.

Precision. OpenVINO's CPU plugin runs floating-point models in bf16 by default on CPUs with
AVX512-BF16 or AMX (it did here: INFERENCE_PRECISION_HINT read back bf16), which would time a
different, less exact computation than every other backend. The runner therefore pins
``INFERENCE_PRECISION_HINT`` to f32, and :attr:`OpenVinoRunner.applied` records what the
compiled model reports (hint, streams, threads, precision, the precisions its runtime graph
uses), so a record says what ran.

Options are documented OpenVINO properties: ``hint`` is PERFORMANCE_HINT, ``threads`` is
INFERENCE_NUM_THREADS and ``streams`` NUM_STREAMS (none: OpenVINO chooses). OpenVINO clamps
what it cannot honour (more threads than cores, more streams than threads); the read-back
shows it and the runner's ``notes`` say so.

The openvino package is imported only inside functions: listing the backend costs nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cnn_deploy.backends.base import (
    MAX_THREADS,
    Availability,
    Backend,
    LayerTime,
    Option,
    Runner,
    Signature,
    Target,
)
from cnn_deploy.backends.openvino_layers import (
    NodeMean,
    fused_constituents,
    model_graph,
    openvino_layer_times,
)
from cnn_deploy.errors import BackendError, ModelError
from cnn_deploy.onnxfile import image_signature, load_onnx

NAME = "openvino"
HINTS = ("latency", "throughput")
DEVICE = "CPU"  # the OpenVINO device name; the package's device is "cpu"
INSTALL = "pip install openvino (or pip install -e '.[cpu]')"

OPTIONS = (
    Option("hint", "str", "latency",
           "OpenVINO PERFORMANCE_HINT: latency (one stream with every thread) or throughput "
           "(several streams; one synchronous request runs on one stream's threads)",
           choices=HINTS),
    Option("threads", "int", None,
           "OpenVINO INFERENCE_NUM_THREADS, CPU threads in all (none: OpenVINO's default, "
           "every core it may use)", minimum=1, maximum=MAX_THREADS, optional=True),
    Option("streams", "int", None,
           "OpenVINO NUM_STREAMS, parallel execution streams (none: the hint's choice; "
           "OpenVINO caps it at the threads)", minimum=1, maximum=MAX_THREADS, optional=True),
)


def import_openvino() -> Any:
    """The openvino module, or a BackendError saying how to install it."""
    try:
        import openvino
    except ImportError as exc:
        if exc.name in (None, "openvino"):
            raise BackendError(f"openvino is not installed: {INSTALL}") from None
        raise BackendError(f"openvino cannot be imported ({exc}): reinstall it with "
                           "pip install --force-reinstall openvino") from None
    except OSError as exc:  # a wheel whose shared libraries do not load
        raise BackendError(f"openvino cannot be imported ({exc}): reinstall it with "
                           "pip install --force-reinstall openvino") from None
    return openvino


def openvino_version(ov: Any) -> str:
    """'2026.4.1' (the package's release, not the build string)."""
    try:
        from importlib.metadata import version

        return version("openvino")
    except Exception:  # a source build without metadata
        return str(getattr(ov, "__version__", "?")).split("-")[0]


def _is_allocation_failure(exc: BaseException) -> bool:
    text = str(exc).lower()
    return isinstance(exc, MemoryError) or "alloc" in text or "out of memory" in text


@dataclass
class _Staged:
    """A batch bound to the request of the model compiled for its batch size."""

    request: Any
    tensor: Any
    array: np.ndarray  # keeps the memory the tensor shares alive


class OpenVinoRunner(Runner):
    """``options``: hint (latency|throughput), threads (None: OpenVINO's default), streams
    (None: the hint's default). See the module docstring for what is compiled and timed."""

    backend = NAME

    def __init__(self, path: Path, options: dict[str, Any] | None = None) -> None:
        # Parsed and checked as the command line's are (unknown keys, bad values refused);
        # every key present afterwards, defaults filled.
        super().__init__(BACKEND.resolve(options or {}), device="cpu")
        self.path = Path(path)
        self._core: Any = None
        self._model: Any = None  # as read (dynamic batch); reshaped per compile
        self._compiled: Any = None
        self._request: Any = None
        self._batch: int | None = None  # the batch self._compiled was compiled for
        self._bound: _Staged | None = None  # the staged batch whose tensor the request holds
        self._signature: Signature | None = None

    # -- what ran ------------------------------------------------------------------
    @property
    def label(self) -> str:
        a, o = self.applied, self.options
        if not a:  # not compiled yet: what was asked
            threads = f" {o['threads']}t" if o["threads"] else ""
            streams = f" {o['streams']} streams" if o["streams"] else ""
            return f"{NAME} {o['hint']}{threads}{streams}"
        streams = f" {a['streams']} streams" if a["streams"] != 1 else ""
        precision = f" {a['precision']}" if a["precision"] != "f32" else ""
        return f"{NAME} {a['hint']} {a['threads']}t{streams}{precision}"

    def _unapplied(self) -> list[str]:
        """One line per asked setting OpenVINO did not apply as asked."""
        out: list[str] = []
        if not self.applied:
            return out
        for key in ("threads", "streams"):
            asked, got = self.options[key], self.applied[key]
            if asked is not None and asked != got:
                out.append(f"{NAME}.{key}={asked}: OpenVINO applied {got}")
        if self.applied["precision"] != "f32":
            out.append(f"OpenVINO ran in {self.applied['precision']}, not the f32 asked")
        return out

    # -- lifecycle ------------------------------------------------------------------
    def __enter__(self) -> OpenVinoRunner:  # typed as this class (``applied``, ``notes``)
        super().__enter__()
        return self

    def _activate(self) -> None:
        ov = import_openvino()
        self._signature = image_signature(load_onnx(self.path), self.path)
        self._core = ov.Core()
        if DEVICE not in self._core.available_devices:
            raise BackendError(f"openvino {openvino_version(ov)} sees no CPU device "
                               f"(devices: {', '.join(self._core.available_devices) or 'none'}): "
                               "reinstall openvino (its CPU plugin is missing)")
        try:
            self._model = self._core.read_model(str(self.path))
        except RuntimeError as exc:
            raise ModelError(f"openvino cannot read {self.path}: {_first_line(exc)}: re-export it "
                             "with `cnndeploy export`") from None
        # Compile once now so the label and ``applied`` say what runs before any batch.
        self._compile_for(self.signature.fixed_batch or 1)

    def _deactivate(self) -> None:
        self._release()
        self._model = self._core = None

    def _release(self) -> None:
        """Free the timing model (and its threads' memory); the next stage() recompiles."""
        self._request = self._compiled = self._bound = None
        self._batch = None

    @property
    def signature(self) -> Signature:
        if self._signature is None:
            raise RuntimeError("runner not active")
        return self._signature

    # -- compiling ------------------------------------------------------------------
    def _config(self, ov: Any, *, streams: int | None, threads: int | None,
                profiling: bool = False) -> dict[Any, Any]:
        props, hint = ov.properties, ov.properties.hint
        mode = {"latency": hint.PerformanceMode.LATENCY,
                "throughput": hint.PerformanceMode.THROUGHPUT}[self.options["hint"]]
        config: dict[Any, Any] = {hint.performance_mode: mode,
                                  hint.inference_precision: ov.Type.f32}
        if threads is not None:
            config[props.inference_num_threads] = int(threads)
        if streams is not None:
            config[props.num_streams] = int(streams)
        if profiling:
            config[props.enable_profiling] = True
        return config

    def _shaped_model(self, batch: int) -> Any:
        """The model with a static batch (a fixed-batch model as it is)."""
        if self.signature.fixed_batch is None:
            self._model.reshape(list(self.signature.example_shape(batch)))
        return self._model

    def _compile(self, model: Any, config: dict[Any, Any], batch: int) -> Any:
        try:
            return self._core.compile_model(model, DEVICE, config)
        except RuntimeError as exc:
            if _is_allocation_failure(exc):
                raise MemoryError(f"openvino could not compile {self.path.name} for batch {batch}: "
                                  f"{_first_line(exc)}") from None
            raise ModelError(f"openvino cannot compile {self.path} for its CPU plugin: "
                             f"{_first_line(exc)}") from None

    def _compile_for(self, batch: int) -> None:
        ov = import_openvino()
        self._release()  # one compiled model at a time: free the old one first
        model = self._shaped_model(batch)
        compiled = self._compile(model, self._config(ov, streams=self.options["streams"],
                                                     threads=self.options["threads"]), batch)
        self._compiled, self._request = compiled, compiled.create_infer_request()
        self._batch = batch
        self.applied = read_applied(ov, compiled, self._core)
        self.notes = self._unapplied()

    # -- the timed path -------------------------------------------------------------
    def stage(self, x: np.ndarray) -> Any:
        ov = import_openvino()
        self.check_input(x)  # a wrong shape or dtype fails here, not inside OpenVINO
        array = np.ascontiguousarray(x)
        if array.shape[0] != self._batch:
            self._compile_for(int(array.shape[0]))
        staged = _Staged(self._request, ov.Tensor(array, shared_memory=True), array)
        self._bind(staged)
        return staged

    def _bind(self, staged: _Staged) -> None:
        staged.request.set_input_tensor(staged.tensor)
        self._bound = staged

    def run(self, staged: Any) -> Any:
        if staged is not self._bound:  # another batch was staged since: bind this one again
            self._bind(staged)
        try:
            return staged.request.infer()[0]
        except RuntimeError as exc:
            if _is_allocation_failure(exc):
                raise MemoryError(_first_line(exc)) from None
            raise

    def to_numpy(self, output: Any) -> np.ndarray:
        return np.asarray(output)

    # -- per-layer profiling ----------------------------------------------------------
    def profile_layers(self, x: np.ndarray, runs: int) -> list[LayerTime]:
        """A second compiled model with PERF_COUNT on; ``runs`` + 1 inferences, the first
        (warm-up) dropped; one LayerTime per executed node and run.

        OpenVINO's CPU plugin reports, per node, the *running mean* over every inference since
        compiling, in whole µs (``total // count``). Per-run times are recovered from the running
        totals (count x mean, taken as the middle of the interval the truncation leaves): each
        is exact to within ``count`` µs, the mean over runs to within 1 µs.

        A timing model with several streams runs one synchronous request on one stream, with
        that stream's share of the threads; the profiled model is one stream with that share
        (several streams would spread the requests over graphs with separate counters).
        Fused nodes name the original ops they absorbed (:func:`fused_constituents`).
        """
        if not self._active:
            raise RuntimeError("use the runner inside a `with` block")
        if runs < 1:
            raise ValueError("runs must be at least 1")
        self.check_input(x)
        ov = import_openvino()
        batch = int(x.shape[0])
        applied = self.applied
        per_stream = max(1, int(applied["threads"]) // max(1, int(applied["streams"])))
        # The timing model's threads would only compete on a small CPU: free it while
        # profiling (the next stage() recompiles it).
        self._release()
        model = self._shaped_model(batch)
        original = model_graph(model)
        compiled = self._compile(model, self._config(ov, streams=1, threads=per_stream,
                                                     profiling=True), batch)
        array = np.ascontiguousarray(x)
        request = compiled.create_infer_request()
        request.set_input_tensor(ov.Tensor(array, shared_memory=True))
        executed = ov.ProfilingInfo.Status.EXECUTED
        snapshots: list[list[NodeMean]] = []
        try:
            for _ in range(runs + 1):
                request.infer()
                snapshots.append([NodeMean(p.node_name, p.node_type, p.status == executed,
                                           _microseconds(p.real_time))
                                  for p in request.get_profiling_info()])
        except RuntimeError as exc:
            if _is_allocation_failure(exc):
                raise MemoryError(_first_line(exc)) from None
            raise
        runtime = [(op.get_friendly_name(), _rt_text(op.get_rt_info(), "originalLayersNames"))
                   for op in compiled.get_runtime_model().get_ordered_ops()]
        del request, compiled
        return openvino_layer_times(snapshots, fused_constituents(runtime, original), skip=1)


def read_applied(ov: Any, compiled: Any, core: Any) -> dict[str, Any]:
    """What a compiled model reports it runs with (documented CompiledModel properties)."""
    props, hint = ov.properties, ov.properties.hint
    precision = compiled.get_property(hint.inference_precision)
    runtime_precisions = sorted({_rt_text(op.get_rt_info(), "runtimePrecision")
                                 for op in compiled.get_runtime_model().get_ordered_ops()
                                 if _rt_text(op.get_rt_info(), "layerType") not in ("Const", "Input",
                                                                                     "Output")} - {""})
    return {
        "openvino": openvino_version(ov),
        "device": str(core.get_property(DEVICE, props.device.full_name)),
        "hint": str(compiled.get_property(hint.performance_mode)).lower(),
        "streams": int(compiled.get_property(props.num_streams)),
        "threads": int(compiled.get_property(props.inference_num_threads)),
        "precision": _type_name(precision),
        "execution_mode": str(compiled.get_property(hint.execution_mode)).split(".")[-1],
        "cpu_pinning": bool(compiled.get_property(hint.enable_cpu_pinning)),
        "runtime_precisions": runtime_precisions,
    }


def _type_name(t: Any) -> str:
    get = getattr(t, "get_type_name", None)
    return str(get()) if callable(get) else str(t)


def _rt_text(rt: Any, key: str) -> str:
    try:
        return str(rt[key].astype(str))
    except Exception:  # key absent in this plugin version
        return ""


def _microseconds(delta: Any) -> int:
    """A datetime.timedelta (how pybind11 hands over std::chrono::microseconds) -> whole µs."""
    return int(delta.days) * 86_400_000_000 + int(delta.seconds) * 1_000_000 + int(delta.microseconds)


def _first_line(exc: BaseException) -> str:
    """OpenVINO's messages start with 'Exception from src/...cpp:N:' lines; keep the cause."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    useful = [ln for ln in lines if not ln.startswith(("Exception from ", "Check '"))]
    return (useful or lines or [exc.__class__.__name__])[0][:300]


# -- registry entry -------------------------------------------------------------------
def probe() -> list[Availability]:
    """One row: OpenVINO's CPU plugin, usable here or why not."""
    try:
        ov = import_openvino()
    except BackendError as exc:
        return [Availability(NAME, DEVICE, False, str(exc), gpu=False)]
    version = openvino_version(ov)
    try:
        core = ov.Core()
        devices = list(core.available_devices)
        if DEVICE not in devices:
            return [Availability(NAME, DEVICE, False,
                                 f"openvino {version} sees no CPU device (devices: "
                                 f"{', '.join(devices) or 'none'}): reinstall openvino", gpu=False)]
        name = str(core.get_property(DEVICE, ov.properties.device.full_name))
    except Exception as exc:  # a broken plugin install: say so, never raise from a probe
        return [Availability(NAME, DEVICE, False, f"openvino {version} cannot start: "
                             f"{_first_line(exc)}", gpu=False)]
    return [Availability(NAME, DEVICE, True, f"openvino {version}, {name}", gpu=False)]


def _runner(target: Target, options: dict[str, Any]) -> Runner:
    assert target.onnx is not None  # the registry checked `needs`
    return OpenVinoRunner(target.onnx, options)


BACKEND = Backend(
    name=NAME,
    summary="OpenVINO CPU plugin: the ONNX file compiled per batch size, one synchronous request",
    needs="onnx",
    probe=probe,
    runner=_runner,
    options=OPTIONS,
    aliases=("ov",),
    devices=("cpu",),
    profiles=True,
    packages=("openvino",),
    probe_target=lambda options: DEVICE,
    tune_space={"hint": ("latency", "throughput"), "threads": (None, 1)},
)
