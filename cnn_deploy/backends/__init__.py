"""Backend registry: which backends exist, which are usable here, and why not in one line."""

from __future__ import annotations

import difflib
import importlib.util
from dataclasses import dataclass

from cnn_deploy.errors import BackendError

BACKENDS = ("torch", "onnxruntime")
_ALIASES = {"pytorch": "torch", "ort": "onnxruntime", "onnx": "onnxruntime"}


@dataclass(frozen=True)
class Availability:
    backend: str
    target: str  # device or execution provider
    usable: bool
    why: str  # one line: what it is when usable, why not otherwise


def parse_backends(text: str) -> list[str]:
    """'onnxruntime,torch' -> ['onnxruntime', 'torch']; unknown names raise with a suggestion."""
    names: list[str] = []
    for raw in filter(None, (t.strip().lower() for t in text.split(","))):
        name = _ALIASES.get(raw, raw)
        if name not in BACKENDS:
            close = difflib.get_close_matches(name, [*BACKENDS, *_ALIASES], n=1)
            hint = f" Did you mean '{_ALIASES.get(close[0], close[0])}'?" if close else ""
            raise BackendError(f"unknown backend '{raw}': choose from {', '.join(BACKENDS)}.{hint}"
                               " (`cnndeploy backends` lists what is usable here)")
        if name not in names:
            names.append(name)
    if not names:
        raise BackendError(f"no backend given: choose from {', '.join(BACKENDS)}")
    return names


def probe_all() -> list[Availability]:
    return [*_probe_torch(), *_probe_onnxruntime(), _probe_tensorrt()]


def _probe_torch() -> list[Availability]:
    if importlib.util.find_spec("torch") is None:
        why = "package missing: pip install torch==2.13.0 (CPU build)"
        return [Availability("torch", "cpu", False, why), Availability("torch", "cuda", False, why)]
    import torch

    rows = [Availability("torch", "cpu", True, f"torch {torch.__version__}, "
                         f"{torch.get_num_threads()} threads")]
    if torch.version.cuda is None:
        rows.append(Availability("torch", "cuda", False,
                                 "this torch is a CPU-only build (no CUDA)"))
    elif not torch.cuda.is_available():
        rows.append(Availability("torch", "cuda", False,
                                 "no GPU: torch sees no CUDA device (driver missing or no GPU)"))
    else:
        rows.append(Availability("torch", "cuda", True, torch.cuda.get_device_name(0)))
    return rows


def _probe_onnxruntime() -> list[Availability]:
    providers = ("CPUExecutionProvider", "CUDAExecutionProvider", "TensorrtExecutionProvider")
    if importlib.util.find_spec("onnxruntime") is None:
        why = "package missing: pip install onnxruntime (or onnxruntime-gpu, never both)"
        return [Availability("onnxruntime", p, False, why) for p in providers]
    import onnxruntime as ort

    available = ort.get_available_providers()
    rows = []
    for provider in providers:
        if provider not in available:
            why = (f"not in this onnxruntime {ort.__version__} build: install onnxruntime-gpu "
                   "instead of onnxruntime (never both)")
            rows.append(Availability("onnxruntime", provider, False, why))
            continue
        got = _session_providers(provider)
        if got and got[0] == provider:
            rows.append(Availability("onnxruntime", provider, True,
                                     f"onnxruntime {ort.__version__}"))
        else:
            rows.append(Availability("onnxruntime", provider, False,
                                     f"silently falls back to {got[0] if got else '?'}: its "
                                     "CUDA/cuDNN/TensorRT libraries are missing or incompatible"))
    return rows


def _session_providers(provider: str) -> list[str]:
    """Providers a real session gets when asked for ``provider`` (falls back silently)."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

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


def _probe_tensorrt() -> Availability:
    """The native runtime: TensorRT (full or lean), cuda-python and a visible GPU."""
    from cnn_deploy import cuda
    from cnn_deploy.backends.tensorrt import INSTALL_HINT, import_trt

    if not (_installed("tensorrt") or _installed("tensorrt_lean")):
        return Availability("tensorrt", "cuda", False, f"package missing: {INSTALL_HINT}")
    if not (_installed("cuda.bindings") or _installed("cuda.cudart")):
        return Availability("tensorrt", "cuda", False,
                            f"cuda-python missing (streams and buffers): {cuda.INSTALL_HINT}")
    try:
        if cuda.device_count() == 0:
            return Availability("tensorrt", "cuda", False,
                                "no GPU: CUDA sees no device (driver missing or no GPU)")
        props = cuda.device_properties(0)
        trt = import_trt()
    except BackendError as exc:
        return Availability("tensorrt", "cuda", False, str(exc))
    cc = "{}{}".format(*props.compute_capability)
    return Availability("tensorrt", "cuda", True,
                        f"{trt.__name__} {trt.__version__}, {props.name} (sm_{cc})")


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a missing parent package, or a broken install
        return False
