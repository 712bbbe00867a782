"""Benchmarking a TensorRT engine: its target, rows, batch profile and accuracy check.

What `cnndeploy bench --engine` needs beyond the CPU pipeline in :mod:`cnn_deploy.pipeline`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cnn_deploy.arch import NetSpec
from cnn_deploy.backends import Availability, probe_all
from cnn_deploy.backends.pytorch import BASELINE_OPTIONS, DEFAULT_OPTIONS
from cnn_deploy.bench import Row, Target
from cnn_deploy.errors import BenchError, CnnDeployError, DataError, ModelError, SpecError

if TYPE_CHECKING:
    from cnn_deploy.backends.base import Runner
    from cnn_deploy.data import Mnist

CPU_TARGETS = ("cpu", "CPUExecutionProvider")
ENGINE_BACKENDS = ("tensorrt", "torch", "onnxruntime")


def require_gpu(what: str = "`--engine`") -> list[Availability]:
    """The GPU backends usable here, or one line saying none is and what can run instead."""
    probed = probe_all()
    gpu = [a for a in probed if a.usable and a.target not in CPU_TARGETS]
    if not gpu:
        here = ", ".join(f"{a.backend} ({a.target})" for a in probed if a.usable) or "none"
        why = next((a.why for a in probed if a.backend == "torch" and a.target == "cuda"), "")
        raise BenchError(f"{what} needs an NVIDIA GPU and none is usable here ({why}); "
                         f"backends usable here: {here} (bench the ONNX file on them instead)")
    return gpu


def _read_sidecar(engine: Path, notes: list[str]) -> Any:
    try:
        from cnn_deploy.engine import read_sidecar
    except ImportError:
        notes.append("this version cannot read engine sidecars (cnn_deploy.engine missing): "
                     "the network is taken from the engine's file name")
        return None
    sidecar = read_sidecar(engine)
    if sidecar is None:
        notes.append(f"{engine.name} has no JSON sidecar: the network is taken from its file "
                     "name and the engine is loaded unchecked")
    return sidecar


def engine_profile(sidecar: Any) -> tuple[int, int] | None:
    """(min, max) batch of an engine's optimisation profile from its sidecar, if recorded."""
    low, high = getattr(sidecar, "min_batch", None), getattr(sidecar, "max_batch", None)
    return (int(low), int(high)) if low is not None and high is not None else None


def resolve_engine_target(engine: Path) -> tuple[Target, list[str]]:
    """A TensorRT plan -> a Target whose spec and ONNX file come from its sidecar (else from
    its name, ``<net>_<precision>.plan``), so torch baselines of the same network run too."""
    from cnn_deploy.export import read_metadata, spec_from_metadata

    require_gpu()
    if not engine.is_file():
        raise ModelError(f"no engine at {engine}: build one with `cnndeploy build "
                         "models/<net>.onnx` (engines/<device>/<net>_<precision>.plan)")
    notes: list[str] = []
    sidecar = _read_sidecar(engine, notes)
    onnx: Path | None = None
    spec: NetSpec | None = None
    checkpoint: Path | None = None
    trained = False
    source = getattr(sidecar, "source_onnx", None)
    if source is not None:
        candidates = [Path(str(source)), engine.parent / str(source)]
        onnx = next((c for c in candidates if c.is_file()), None)
        if onnx is None:
            notes.append(f"the engine's source ONNX {source} is gone: no onnxruntime row, "
                         "and the network is taken from the engine's file name")
    if onnx is not None:
        meta = read_metadata(onnx)
        spec = spec_from_metadata(meta)
        trained = "test_accuracy" in meta
        if "checkpoint" in meta and (onnx.parent / meta["checkpoint"]).is_file():
            checkpoint = onnx.parent / meta["checkpoint"]
    if spec is None:
        spec = spec_from_engine_name(engine)
    if spec is None:
        notes.append(f"{engine.name} names no cnn_deploy network: no torch baseline rows")
    elif checkpoint is None:
        notes.append("no checkpoint for the torch rows: they use untrained weights of the same "
                     "network (speed does not depend on them)")
    name = spec.name if spec is not None else engine.stem
    return Target(name, onnx, spec, checkpoint, trained, engine), notes


def spec_from_engine_name(engine: Path) -> NetSpec | None:
    """'lenet_3c1f_fp16.plan' -> lenet_3c1f; None for a name that is no network."""
    stem = re.sub(r"_(fp32|fp16|bf16|int8|fp8)$", "", engine.stem)
    try:
        return NetSpec.from_name(stem)
    except SpecError:
        return None


def check_engine_batches(engine: Path, batches: Sequence[int]) -> None:
    """Refuse batches outside the engine's profile before any timing (the runner refuses too)."""
    profile = engine_profile(_read_sidecar(engine, []))
    if profile is None:
        return
    low, high = profile
    outside = [b for b in batches if not low <= b <= high]
    if outside:
        raise BenchError(f"batch {', '.join(map(str, outside))} is outside {engine.name}'s "
                         f"optimisation profile {low}..{high}: use --batch within it or rebuild "
                         f"the engine with `cnndeploy build` and a larger max batch")


def build_engine_rows(target: Target,
                      options: dict[str, dict[str, Any]]) -> tuple[list[Row], list[str]]:
    """TensorRT (the engine) beside torch eager CUDA NCHW (the baseline) and torch CUDA
    channels-last of the same network; onnxruntime only when given options (e.g.
    ``-o onnxruntime.provider=tensorrt``)."""
    unknown = set(options) - set(ENGINE_BACKENDS)
    if unknown:
        raise BenchError(f"options for unknown backend(s) {', '.join(sorted(unknown))}: "
                         f"prefix options with one of {', '.join(ENGINE_BACKENDS)}")
    notes: list[str] = []
    rows: list[Row] = []
    torch_options = dict(options.get("torch", {}))
    torch_options.setdefault("device", "cuda")
    cuda = {a.target: a for a in probe_all() if a.backend == "torch"}.get("cuda")
    if target.spec is None:
        pass  # resolve_engine_target said so
    elif str(torch_options["device"]).startswith("cuda") and (cuda is None or not cuda.usable):
        notes.append(f"no torch rows: {cuda.why if cuda else 'torch is not installed'}")
    else:
        baseline = {**BASELINE_OPTIONS, "device": torch_options["device"]}
        rows.append(Row("torch", baseline))
    rows.append(Row("tensorrt", dict(options.get("tensorrt", {}))))
    if rows[0].backend == "torch" and {**DEFAULT_OPTIONS, **torch_options} != rows[0].options:
        rows.append(Row("torch", torch_options))
    if "onnxruntime" in options:
        if target.onnx is None:
            notes.append("onnxruntime skipped: the engine's source ONNX file is unknown")
        else:
            rows.append(Row("onnxruntime", {"provider": "cuda", **options["onnxruntime"]}))
    return rows, notes


@dataclass(frozen=True)
class EngineAccuracy:
    """Top-1 of a runner (the engine) against PyTorch on the same real test digits."""

    tiles: int
    top1_agreement: float  # share of tiles where both pick the same class
    accuracy: float  # the runner's top-1 accuracy on the labels
    reference_accuracy: float  # PyTorch's

    @property
    def delta(self) -> float:
        return self.accuracy - self.reference_accuracy


def engine_accuracy(runner_factory: Callable[[], Runner], data: Mnist,
                    reference_factory: Callable[[], Runner], *, tiles: int = 2000,
                    batch: int = 256) -> EngineAccuracy:
    """Classify the first ``tiles`` test digits (raw 0..255 pixels) with both runners."""
    from cnn_deploy.data import to_float

    images = to_float(data.test_images[:tiles], normalise=False)
    labels = data.test_labels[:len(images)]
    got = _top1(runner_factory, images, batch)
    want = _top1(reference_factory, images, batch)
    return EngineAccuracy(len(images), float(np.mean(got == want)), float(np.mean(got == labels)),
                          float(np.mean(want == labels)))


def _top1(factory: Callable[[], Runner], images: np.ndarray, batch: int) -> np.ndarray:
    """Predicted classes in batches of the runner's fixed batch or ``batch``; the last batch
    is padded by repeating tiles, so it stays inside an engine's profile."""
    with factory() as runner:
        size = runner.signature.fixed_batch or min(batch, len(images))
        dtype = np.dtype(runner.signature.dtype)
        out = []
        for start in range(0, len(images), size):
            chunk = images[start:start + size]
            padded = np.resize(chunk, (size, *chunk.shape[1:])) if len(chunk) < size else chunk
            logits = runner.infer(np.ascontiguousarray(padded, dtype=dtype))
            out.append(np.asarray(logits).argmax(axis=1)[:len(chunk)])
    return np.concatenate(out)


def check_engine_accuracy(target: Target, data: str | None = None, batch: int = 256,
                          options: dict[str, Any] | None = None,
                          ) -> tuple[EngineAccuracy | None, str | None]:
    """The engine's top-1 against PyTorch (CPU, fp32) on real digits, or why it was skipped."""
    from cnn_deploy.data import load_mnist

    if target.engine is None or target.spec is None:
        return None, "engine accuracy check skipped: the engine names no cnn_deploy network"
    try:
        require_gpu("the engine accuracy check")
        mnist = load_mnist(data)
    except (BenchError, DataError) as exc:
        return None, f"engine accuracy check skipped: {str(exc).split(';')[0]}"
    engine_row = Row("tensorrt", dict(options or {}))
    reference = Row("torch", {**BASELINE_OPTIONS, "device": "cpu"})
    try:
        result = engine_accuracy(lambda: engine_row.runner(target), mnist,
                                 lambda: reference.runner(target), batch=batch)
    except CnnDeployError as exc:
        return None, f"engine accuracy check skipped: {exc}"
    note = None if target.checkpoint else ("untrained weights: only the top-1 agreement with "
                                           "PyTorch is meaningful, not the accuracies")
    return result, note
