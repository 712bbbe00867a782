"""What to time, and on which rows: the one target resolver (a spec name, a checkpoint, an
ONNX file or a TensorRT engine) and the one rows builder (the baseline first, then each
backend at its defaults for the device, overridden by ``-o`` options).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from cnn_deploy.arch import NetSpec
from cnn_deploy.backends import registry
from cnn_deploy.backends.base import Availability, Backend, Target, check_batch_range
from cnn_deploy.bench.plan import BackendConfig
from cnn_deploy.errors import BenchError, ModelError, SpecError
from cnn_deploy.files import file_sha256, temp_folder
from cnn_deploy.onnxfile import image_signature, load_onnx, read_metadata


@contextlib.contextmanager
def resolve_target(model: Path | None, spec_name: str | None,
                   engine: Path | None = None) -> Iterator[tuple[Target, list[str]]]:
    """An ONNX file, a checkpoint, a spec name or a TensorRT engine -> a Target (exporting a
    temporary ONNX file when there is none), plus notes for the user."""
    notes: list[str] = []
    if engine is not None:
        if model is not None or spec_name is not None:
            raise BenchError("--engine names the network already: drop the model file / --spec")
        yield engine_target(engine)
        return
    if (model is None) == (spec_name is None):
        raise BenchError("give a model file (.onnx or .pt) or --spec NAME"
                         + (", not both" if model is not None else ""))
    with temp_folder() as tmp:
        if spec_name is not None:
            spec = NetSpec.from_name(spec_name)
            notes.append(f"{spec.name}: untrained weights (speed does not depend on them)")
            yield Target(spec.name, export_untrained(spec, Path(tmp)), spec, None, False), notes
            return
        assert model is not None
        if model.suffix == ".pt":
            yield checkpoint_target(model, Path(tmp)), notes
            return
        if model.suffix != ".onnx":
            raise ModelError(f"{model}: expected a .onnx or .pt file")
        yield onnx_target(model, notes), notes


def checkpoint_target(checkpoint: Path, folder: Path) -> Target:
    """A checkpoint, timed through the ONNX file exported from it: the one beside it when its
    metadata names this very checkpoint, else a fresh export into ``folder``."""
    from cnn_deploy.export import export_checkpoint
    from cnn_deploy.train import load_checkpoint

    spec = load_checkpoint(checkpoint)[0]
    onnx = checkpoint.with_suffix(".onnx")
    if not (onnx.is_file() and read_metadata(onnx).get("checkpoint_sha256")
            == file_sha256(checkpoint)):
        onnx = export_checkpoint(checkpoint, folder / (checkpoint.stem + ".onnx")).path
    return Target(spec.name, onnx, spec, checkpoint, True)


def onnx_target(model: Path, notes: list[str]) -> Target:
    from cnn_deploy.export import spec_from_metadata

    # the file's input contract checked here, before any row is timed (a worker would find out
    # only after the baseline rows were measured and appended)
    image_signature(load_onnx(model, load_weights=False), model)
    meta = read_metadata(model)
    found = spec_from_metadata(meta, model)
    checkpoint = model.parent / meta["checkpoint"] if "checkpoint" in meta else None
    if checkpoint is not None and not checkpoint.is_file():
        notes.append(f"checkpoint {checkpoint} not found: the torch rows use untrained "
                     "weights of the same network (speed does not depend on them)")
        checkpoint = None
    elif checkpoint is not None and meta.get("checkpoint_sha256") not in (
            None, file_sha256(checkpoint)):
        # Another checkpoint under the same name (retrained, or another network): torch
        # would time it under this file's name.
        notes.append(f"{checkpoint} is not the checkpoint {model.name} was exported from: the "
                     "torch rows use untrained weights of this file's network instead")
        checkpoint = None
    if found is None:
        notes.append(f"{model.name} carries no cnn_deploy spec: no torch rows (no PyTorch "
                     "module to time), so there is no torch-eager baseline")
    return Target(found.name if found else model.stem, model, found, checkpoint,
                  "test_accuracy" in meta)


def export_untrained(spec: NetSpec, folder: Path) -> Path:
    """The untrained network as ONNX (seeded: the same weights as its PyTorch rows)."""
    from cnn_deploy.export import export_spec

    return export_spec(spec, folder / f"{spec.name}.onnx").path


# -- TensorRT engines ----------------------------------------------------------------
def require_gpu(what: str = "`--engine`") -> list[Availability]:
    """The GPU backends usable here, or one line saying none is and what can run instead."""
    probed = registry.probe_all()
    gpu = registry.gpu_usable()
    if not gpu:
        here = ", ".join(f"{a.backend} ({a.target})" for a in probed if a.usable) or "none"
        why = next((a.why for a in probed if a.gpu and not a.usable), "")
        raise BenchError(f"{what} needs an NVIDIA GPU and none is usable here ({why}); "
                         f"backends usable here: {here} (bench the ONNX file on them instead)")
    return gpu


def engine_target(engine: Path) -> tuple[Target, list[str]]:
    """A TensorRT plan -> a Target whose spec and ONNX file come from its sidecar (else from
    its name, ``<net>_<precision>.plan``), so torch baselines of the same network run too."""
    from cnn_deploy.engine import read_sidecar
    from cnn_deploy.export import spec_from_metadata

    require_gpu()
    if not engine.is_file():
        raise ModelError(f"no engine at {engine}: build one with `cnndeploy build "
                         "models/<net>.onnx` (engines/<device>/<net>_<precision>.plan)")
    notes: list[str] = []
    sidecar = read_sidecar(engine)
    if sidecar is None:
        notes.append(f"{engine.name} has no JSON sidecar: the network is taken from its file "
                     "name and the engine is loaded unchecked")
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
        spec = spec_from_metadata(meta, onnx)
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


def check_batches(target: Target, batches: Sequence[int]) -> None:
    """Refuse batches outside an engine's profile (from its sidecar) before any timing."""
    if target.engine is None:
        return
    from cnn_deploy.engine import read_sidecar

    sidecar = read_sidecar(target.engine)
    low, high = getattr(sidecar, "min_batch", None), getattr(sidecar, "max_batch", None)
    if low is not None and high is not None:
        check_batch_range(batches, (int(low), int(high)), target.engine.name)


# -- rows --------------------------------------------------------------------------
def default_backends(target: Target, options: dict[str, dict[str, Any]]) -> list[str]:
    """The backends a table shows when none are named, plus any backend given options (``-o
    openvino.hint=throughput`` adds OpenVINO): for an engine, the backend that loads it beside
    the baseline; otherwise the registry's default backends."""
    if target.engine is None:
        first = registry.defaults()
    else:
        first = [registry.first_loading("engine").name, registry.baseline_backend().name]
    return list(dict.fromkeys([*first, *(registry.get(b).name for b in options)]))


def build_rows(target: Target, backends: Sequence[str],
               options: dict[str, dict[str, Any]]) -> tuple[list[BackendConfig], list[str]]:
    """The rows to time: the baseline (torch eager NCHW, on the device the torch rows use)
    first, then each backend at its defaults for the target's device (the GPU for an
    engine), overridden by ``options`` (``{"torch": {...}, ...}``)."""
    options = registry.check_options(options)
    names = registry.parse_backends(backends)
    base = registry.baseline_backend()
    # One rule for every target: options name backends that are timed; the baseline backend's
    # options may also just place the baseline (-o torch.device=cuda -b onnxruntime).
    stray = [b for b in options if b not in names and b != base.name]
    if stray:
        raise BenchError(f"options given for {', '.join(stray)}, which is not benchmarked: add it "
                         f"to --backend (now {','.join(names)}) or drop its -o options")
    device = "cpu" if target.engine is None else "cuda"
    notes: list[str] = []
    rows: list[BackendConfig] = []
    given = {name: {**registry.get(name).device_options(device), **options.get(name, {})}
             for name in names}
    baseline: dict[str, Any] | None = None
    if target.spec is not None and base.baseline is not None:
        base_device = str(given.get(base.name, options.get(base.name, {})).get("device", device))
        baseline = base.resolve(base.baseline(base_device))
        ok, why = usable(base, baseline)
        if ok:
            rows.append(BackendConfig(base.name, baseline, baseline=True))
        else:
            notes.append(f"no {base.name} rows: {why}")
            baseline = None
    for name in names:
        entry = registry.get(name)
        if entry.missing(target) is not None:
            if entry is not base:  # the target's notes say why there are no torch rows
                notes.append(f"{name} skipped: {entry.missing(target)}")
            continue
        resolved = entry.resolve(given[name])
        if entry is base and (baseline is None or resolved == baseline):
            continue  # no torch here, or identical to the baseline row already there
        ok, why = usable(entry, resolved)
        if not ok:
            notes.append(f"{name} skipped: {why}")
            continue
        rows.append(BackendConfig(name, resolved))
    if not rows or (all(r.baseline for r in rows) and any(n != base.name for n in names)):
        # Only the baseline left of what was asked: a table of it alone answers nothing.
        raise BenchError("no backend asked for is usable here for this model: see `cnndeploy "
                         "backends`" + (f" ({'; '.join(notes)})" if notes else ""))
    return rows, notes


def usable(entry: Backend, options: dict[str, Any]) -> tuple[bool, str]:
    """Whether ``entry`` with ``options`` can run here: its probe row for the device or
    execution provider those options ask for."""
    row = registry.availability(entry, options)
    if row is None:
        return False, f"{entry.name} cannot run on {entry.probe_target(options) or 'this device'}"
    return row.usable, row.why
