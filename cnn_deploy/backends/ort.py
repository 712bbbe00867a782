"""The ONNX Runtime backend (CPU here; CUDA and TensorRT execution providers where present).

ONNX Runtime falls back to the CPU silently when a provider's libraries are missing, so
the providers a session really got (``get_providers()``) are checked, never assumed.
On a GPU provider ``run`` includes the host<->device copies and ends synchronised (numpy
in, numpy out), so the harness times it with the host clock: one end-to-end figure, no
separate H2D / compute / D2H phases.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cnn_deploy.backends.base import (
    MAX_DEVICES,
    MAX_THREADS,
    Availability,
    Backend,
    LayerTime,
    Option,
    Runner,
    Signature,
    Target,
)
from cnn_deploy.errors import BackendError, ModelError
from cnn_deploy.onnxfile import image_signature, load_onnx

if TYPE_CHECKING:
    import onnx

OPT_LEVELS = {"disable": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC",
              "extended": "ORT_ENABLE_EXTENDED", "all": "ORT_ENABLE_ALL"}
# EXTENDED beat the default ALL by ~20 % on conv-heavy nets on a 2-core CPU (issue 2).
DEFAULT_OPT_LEVEL = "extended"
PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider",
             "tensorrt": "TensorrtExecutionProvider"}
# Where the TensorRT EP keeps the engines it builds (it rebuilds for minutes otherwise).
DEFAULT_TRT_CACHE = Path("engines") / "ort-trt-cache"


def provider_options(options: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """The ``providers=`` list for an InferenceSession, with documented provider options.

    CUDA EP: ``device_id``. TensorRT EP: ``device_id``, ``trt_fp16_enable``,
    ``trt_engine_cache_enable`` / ``trt_engine_cache_path``; the CUDA EP follows it so that
    nodes TensorRT cannot take still run on the GPU (as ONNX Runtime's docs recommend).
    """
    provider = options["provider"]
    if provider == "cpu":
        return [(PROVIDERS["cpu"], {})]
    cuda = {"device_id": int(options.get("device_id") or 0)}
    if provider == "cuda":
        return [(PROVIDERS["cuda"], cuda)]
    cache = options.get("trt_cache")
    trt: dict[str, Any] = {"device_id": cuda["device_id"],
                           "trt_fp16_enable": bool(options.get("fp16")),
                           "trt_engine_cache_enable": bool(cache)}
    if cache:
        trt["trt_engine_cache_path"] = str(cache)
    return [(PROVIDERS["tensorrt"], trt), (PROVIDERS["cuda"], cuda)]


def import_ort() -> Any:
    try:
        import onnxruntime
    except ImportError:
        raise BackendError("onnxruntime is not installed: pip install onnxruntime "
                           "(or onnxruntime-gpu on a CUDA machine, never both)") from None
    return onnxruntime


class OrtRunner(Runner):
    """``options``: opt_level (disable|basic|extended|all), threads, provider (cpu|cuda|tensorrt);
    on a GPU provider also device_id (0); on tensorrt fp16 (false) and trt_cache (a folder
    for the EP's engine cache, default engines/ort-trt-cache; none to rebuild every time)."""

    backend = "onnxruntime"

    def __init__(self, path: Path, options: dict[str, Any] | None = None) -> None:
        # Parsed and checked as the command line's are: unknown keys and bad values refused.
        super().__init__(BACKEND.resolve(options or {}))
        self.path = Path(path)
        self.options.setdefault("opt_level", DEFAULT_OPT_LEVEL)
        if self.options.get("threads") is None:
            self.options["threads"] = default_threads()
        self.options.setdefault("provider", "cpu")
        if self.options["provider"] == "cpu":  # GPU-only options: not recorded for a CPU row
            for key in ("device_id", "fp16", "trt_cache"):
                self.options.pop(key, None)
        else:
            for key, value in (("device_id", 0), ("fp16", False)):
                if self.options.get(key) is None:
                    self.options[key] = value
            self.options.setdefault("trt_cache", str(DEFAULT_TRT_CACHE))  # None: no cache
        if self.options["provider"] != "tensorrt":
            self.options.pop("trt_cache", None)
            self.options.pop("fp16", None)
        self.device = ("cpu" if self.options["provider"] == "cpu"
                       else f"cuda:{self.options['device_id']}")
        self._session: Any = None
        self._signature: Signature | None = None

    @property
    def label(self) -> str:
        o = self.options
        if o["provider"] == "cpu":
            spin = " no-spin" if o.get("spinning") is False else ""
            return f"onnxruntime {o['opt_level']} {o['threads']}t{spin}"
        fp16 = " fp16" if o.get("fp16") else ""
        return f"onnxruntime {PROVIDERS[o['provider']]}{fp16} {o['opt_level']} {self.device}"

    def _session_options(self, ort: Any) -> Any:
        """The recorded options as ORT SessionOptions (timing and profiling sessions alike)."""
        so = ort.SessionOptions()
        so.graph_optimization_level = getattr(ort.GraphOptimizationLevel,
                                              OPT_LEVELS[self.options["opt_level"]])
        so.intra_op_num_threads = int(self.options["threads"])
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.log_severity_level = 3
        if self.options.get("spinning") is not None:  # ORT's default: spin (on)
            so.add_session_config_entry("session.intra_op.allow_spinning",
                                        "1" if self.options["spinning"] else "0")
        return so

    def _activate(self) -> None:
        ort = import_ort()
        proto = load_onnx(self.path)
        self._signature = image_signature(proto, self.path)
        so = self._session_options(ort)
        wanted = PROVIDERS[self.options["provider"]]
        if wanted != PROVIDERS["cpu"] and hasattr(ort, "preload_dlls"):
            # A worker that imported only onnxruntime may not find the CUDA/cuDNN libraries pip
            # installed (nvidia-*-cu12/13 packages): ORT >= 1.21 loads them from site-packages.
            ort.preload_dlls()
        if wanted not in ort.get_available_providers():
            raise BackendError(f"{wanted} is not in this onnxruntime build "
                               f"({ort.get_device()}): install onnxruntime-gpu instead of "
                               "onnxruntime for the CUDA/TensorRT providers")
        providers = provider_options(self.options)
        for _, opts in providers:
            if opts.get("trt_engine_cache_path"):
                Path(opts["trt_engine_cache_path"]).mkdir(parents=True, exist_ok=True)
        try:
            self._session = ort.InferenceSession(proto.SerializeToString(), so,
                                                 providers=providers)
        except Exception as exc:  # onnxruntime raises its own pybind exception types
            raise ModelError(f"onnxruntime cannot load {self.path}: {str(exc)[:300]}") from None
        got = self._session.get_providers()
        if got[0] != wanted:
            raise BackendError(f"onnxruntime fell back from {wanted} to {got[0]} (its libraries "
                               "are missing or incompatible): fix the CUDA/cuDNN install or "
                               "use --backend onnxruntime with the cpu provider")

    def _deactivate(self) -> None:
        self._session = None

    @property
    def signature(self) -> Signature:
        if self._signature is None:
            raise RuntimeError("runner not active")
        return self._signature

    def stage(self, x: np.ndarray) -> Any:
        return {self.signature.input_name: np.ascontiguousarray(x)}

    def run(self, staged: Any) -> Any:
        try:
            return self._session.run(None, staged)[0]
        except Exception as exc:  # onnxruntime's RuntimeException on allocation failure
            if "alloc" in str(exc).lower():
                raise MemoryError(str(exc)) from None
            raise

    def to_numpy(self, output: Any) -> np.ndarray:
        return np.asarray(output)

    # -- per-layer profiling -----------------------------------------------------
    def profile_layers(self, x: np.ndarray, runs: int) -> list[LayerTime]:
        """A second session with ``enable_profiling``; ``runs`` + 1 runs, the first (warm-up)
        dropped. Each node's ``*_kernel_time`` event gives its time; fused nodes (FusedConv,
        FusedGemm) name their constituents from the optimised graph ORT writes out."""
        import json

        from cnn_deploy.files import temp_folder

        if not self._active:
            raise RuntimeError("use the runner inside a `with` block")
        if self.options["provider"] != "cpu":
            # On the CUDA provider ORT's profiler times each node's kernel launch on the host,
            # not the kernel; the TensorRT provider shows one fused node for the whole graph.
            raise BackendError(f"per-layer profiling on {PROVIDERS[self.options['provider']]} does "
                               "not measure the GPU kernels: profile onnxruntime on the cpu "
                               "provider, or a TensorRT engine with --engine")
        self.check_input(x)
        ort = import_ort()
        with temp_folder("ortprof-") as tmp:
            so = self._session_options(ort)
            so.enable_profiling = True
            so.profile_file_prefix = str(Path(tmp) / "ort")
            optimised = Path(tmp) / "optimised.onnx"
            if self.options["provider"] == "cpu":  # compiled GPU nodes cannot be saved
                so.optimized_model_filepath = str(optimised)
            # The timing session's intra-op threads spin after each run and would compete with
            # the profiled session's for a 2-core CPU: park it while profiling.
            parked, self._session = self._session, None
            try:
                session = ort.InferenceSession(load_onnx(self.path).SerializeToString(), so,
                                               providers=provider_options(self.options))
                feed = self.stage(x)
                for _ in range(runs + 1):
                    session.run(None, feed)
                events = json.loads(Path(session.end_profiling()).read_text())
                del session
            finally:
                self._session = parked
            fused = fused_constituents(load_onnx(optimised, load_weights=False)
                                       if optimised.is_file() else None)
        return ort_layer_times(events, fused, skip=1)


def fused_constituents(proto: onnx.ModelProto | None) -> dict[str, tuple[str, ...]]:
    """Node name -> the ops fused into it, read from ORT's optimised graph: FusedConv and
    FusedGemm carry their activation in an ``activation`` attribute (Conv + Relu)."""
    out: dict[str, tuple[str, ...]] = {}
    for node in proto.graph.node if proto is not None else ():
        if not node.op_type.startswith("Fused"):
            continue
        base = node.op_type.removeprefix("Fused")
        act = next((a.s.decode() for a in node.attribute if a.name == "activation"), "")
        out[node.name] = (base, act) if act else (base,)
    return out


def ort_layer_times(events: list[dict[str, Any]], fused: dict[str, tuple[str, ...]],
                    skip: int = 1) -> list[LayerTime]:
    """ORT profile events -> one LayerTime per node per run, the first ``skip`` runs dropped.

    A run is a ``model_run`` Session event; a node's time is its ``<node>_kernel_time``
    event (``cat == "Node"``, ``dur`` in µs, ``args.op_name``), assigned to the run whose
    interval holds its start.
    """
    import bisect

    starts = sorted(e["ts"] for e in events
                    if e.get("cat") == "Session" and e.get("name") == "model_run")
    out: list[LayerTime] = []
    suffix = "_kernel_time"
    for e in sorted(events, key=lambda e: e.get("ts", 0)):
        if e.get("cat") != "Node" or not str(e.get("name", "")).endswith(suffix):
            continue
        run = bisect.bisect_right(starts, e["ts"]) - 1 - skip
        if run < 0:
            continue
        name = e["name"][: -len(suffix)]
        op = str(e.get("args", {}).get("op_name", "?"))
        constituents = fused.get(name, ())
        if not constituents and op.startswith("Fused"):
            constituents = (op.removeprefix("Fused"), "activation")
        out.append(LayerTime(name, op, float(e["dur"]) / 1000.0, run, constituents))
    return out


def default_threads() -> int:
    """Cores this process may use (the container's limit, not the host's)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        return os.cpu_count() or 1


# -- the registry entry ------------------------------------------------------------
def probe() -> list[Availability]:
    """The CPU, CUDA and TensorRT execution providers: in this build, and really used by a
    session (ONNX Runtime falls back to the CPU silently when a provider's libraries fail)."""
    import importlib.util

    if importlib.util.find_spec("onnxruntime") is None:
        why = "package missing: pip install onnxruntime (or onnxruntime-gpu, never both)"
        return [Availability("onnxruntime", p, False, why, gpu=p != PROVIDERS["cpu"])
                for p in PROVIDERS.values()]
    ort = import_ort()
    available = ort.get_available_providers()
    rows = []
    for provider in PROVIDERS.values():
        gpu = provider != PROVIDERS["cpu"]
        if provider not in available:
            why = (f"not in this onnxruntime {ort.__version__} build: install onnxruntime-gpu "
                   "instead of onnxruntime (never both)")
            rows.append(Availability("onnxruntime", provider, False, why, gpu))
            continue
        got = _session_providers(provider)
        if got and got[0] == provider:
            rows.append(Availability("onnxruntime", provider, True,
                                     f"onnxruntime {ort.__version__}", gpu))
        else:
            rows.append(Availability("onnxruntime", provider, False,
                                     f"silently falls back to {got[0] if got else '?'}: its "
                                     "CUDA/cuDNN/TensorRT libraries are missing or incompatible",
                                     gpu))
    return rows


def _session_providers(provider: str) -> list[str]:
    """Providers a real session gets when asked for ``provider`` (falls back silently)."""
    import onnx
    from onnx import TensorProto, helper

    ort = import_ort()
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "probe",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = min(model.ir_version, 9)
    onnx.checker.check_model(model)
    so = ort.SessionOptions()
    so.log_severity_level = 4
    try:
        sess = ort.InferenceSession(model.SerializeToString(), so, providers=[provider])
    except Exception:  # a provider that cannot even start: report as unusable, not crash
        return []
    return list(sess.get_providers())


def _runner(target: Target, options: dict[str, Any]) -> Runner:
    assert target.onnx is not None  # the registry checked `needs`
    return OrtRunner(target.onnx, options)


def _profile_graph(unfused: bool, options: dict[str, Any]) -> tuple[dict[str, Any], str]:
    if unfused:
        return {"opt_level": "basic"}, ("onnxruntime at opt level basic: Conv, Relu, MaxPool and "
                                        "Gemm run as separate nodes (unfused)")
    level = options.get("opt_level") or DEFAULT_OPT_LEVEL
    return {"opt_level": level}, (f"onnxruntime at opt level {level}: the deployed graph, "
                                  "Conv+Relu fused into FusedConv, Gemm+Relu into FusedGemm")


BACKEND = Backend(
    name="onnxruntime",
    summary="ONNX Runtime: CPU, CUDA and TensorRT execution providers",
    needs="onnx",
    probe=probe,
    runner=_runner,
    options=(
        Option("opt_level", "str", DEFAULT_OPT_LEVEL, "graph optimisation level",
               choices=tuple(OPT_LEVELS)),
        Option("threads", "int", None, "intra-op threads (default: the cores this process may "
               "use)", minimum=1, maximum=MAX_THREADS, optional=True),
        Option("spinning", "bool", None, "intra-op threads spin-wait between ops "
               "(session.intra_op.allow_spinning; default: ORT's, on); off leaves the cores to "
               "other threads, e.g. a stream's capture", optional=True),
        Option("provider", "str", "cpu", "execution provider", choices=tuple(PROVIDERS)),
        Option("device_id", "int", None, "GPU index for the cuda/tensorrt providers", minimum=0,
               maximum=MAX_DEVICES, optional=True),
        Option("fp16", "bool", None, "TensorRT provider: allow fp16 kernels", optional=True),
        Option("trt_cache", "str", str(DEFAULT_TRT_CACHE), "TensorRT provider: engine cache "
               "folder (none: rebuild every time)", optional=True),
    ),
    aliases=("ort", "onnx"),
    devices=("cpu", "cuda"),
    profiles=True,
    device_options=lambda device: {"provider": "cpu" if device == "cpu" else "cuda"},
    probe_target=lambda options: PROVIDERS[options.get("provider") or "cpu"],
    default=1,
    packages=("onnxruntime", "onnxruntime-gpu"),
    profile_graph=lambda unfused, options: _profile_graph(unfused, options),
    # spinning intra-op threads keep both cores of a 2-core CPU busy between runs, so a
    # stream's decode waited for them (FFV1 640x480: 2.3 vs 1.4 ms, 28 vs 32 tiles/ms inline)
    pipeline_options={"spinning": False},
    # the CPU provider's settings (the GPU providers are tuned by their own builders)
    tune_space={"opt_level": ("basic", "extended", "all"), "threads": (None, 1),
                "spinning": (None, False)},
)

