"""The end-to-end jobs the CLI runs: resolve what to time, benchmark it, the quickstart.

Library code: no printing; progress goes to callbacks the CLI renders.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cnn_deploy.arch import NetSpec
from cnn_deploy.backends import BACKENDS, parse_backends, probe_all
from cnn_deploy.backends.pytorch import BASELINE_OPTIONS, DEFAULT_OPTIONS
from cnn_deploy.bench import Cell, Plan, Row, Summary, Target, TimingConfig, summarise_cells
from cnn_deploy.enginebench import (
    CPU_TARGETS,
    build_engine_rows,
    check_engine_batches,
    resolve_engine_target,
)
from cnn_deploy.errors import BenchError, ModelError
from cnn_deploy.gpureport import GpuReport, gpu_reports

if TYPE_CHECKING:
    pass

DEFAULT_BATCHES = (1, 16, 256, 1024)


@contextlib.contextmanager
def resolve_target(model: Path | None, spec_name: str | None,
                   engine: Path | None = None) -> Iterator[tuple[Target, list[str]]]:
    """An ONNX file, a checkpoint, a spec name or a TensorRT engine -> a Target (exporting a
    temporary ONNX file for onnxruntime when there is none), plus notes for the user."""
    from cnn_deploy.export import read_metadata, spec_from_metadata

    notes: list[str] = []
    if engine is not None:
        if model is not None or spec_name is not None:
            raise BenchError("--engine names the network already: drop the model file / --spec")
        yield resolve_engine_target(engine)
        return
    if (model is None) == (spec_name is None):
        raise BenchError("give either a model file (.onnx or .pt) or --spec NAME, not both")
    with tempfile.TemporaryDirectory(prefix="cnndeploy-") as tmp:
        if spec_name is not None:
            spec = NetSpec.from_name(spec_name)
            notes.append(f"{spec.name}: untrained weights (speed does not depend on them)")
            yield Target(spec.name, _export_untrained(spec, Path(tmp)), spec, None, False), notes
            return
        assert model is not None
        if model.suffix == ".pt":
            from cnn_deploy.export import export_checkpoint

            onnx = model.with_suffix(".onnx")
            if not onnx.is_file():
                onnx = export_checkpoint(model, Path(tmp) / (model.stem + ".onnx")).path
            spec = _checkpoint_spec(model)
            yield Target(spec.name, onnx, spec, model, True), notes
            return
        if model.suffix != ".onnx":
            raise ModelError(f"{model}: expected a .onnx or .pt file")
        meta = read_metadata(model)
        found = spec_from_metadata(meta)
        checkpoint = model.parent / meta["checkpoint"] if "checkpoint" in meta else None
        if checkpoint is not None and not checkpoint.is_file():
            notes.append(f"checkpoint {checkpoint} not found: the torch rows use untrained "
                         "weights of the same network (speed does not depend on them)")
            checkpoint = None
        if found is None:
            notes.append(f"{model.name} carries no cnn_deploy spec: no torch rows (no PyTorch "
                         "module to time), so there is no torch-eager baseline")
        yield Target(found.name if found else model.stem, model, found, checkpoint,
                     "test_accuracy" in meta), notes


def _checkpoint_spec(path: Path) -> NetSpec:
    from cnn_deploy.train import load_checkpoint

    return load_checkpoint(path)[0]


def _export_untrained(spec: NetSpec, folder: Path) -> Path:
    from cnn_deploy.export import export_module, raw_pixel_module

    meta = {"spec": spec.name, "precision": "fp32", "trained": "false"}
    return export_module(raw_pixel_module(spec.build()), folder / f"{spec.name}.onnx", meta)


def build_rows(target: Target, backends: Sequence[str],
               options: dict[str, dict[str, Any]]) -> tuple[list[Row], list[str]]:
    """The rows to time: the torch-eager NCHW baseline first (on the device the torch rows
    use, ``-o torch.device=cuda``), then each backend at its fastest known settings
    overridden by ``options`` (``{"torch": {...}, ...}``). A target with an engine gets
    :func:`build_engine_rows` instead."""
    if target.engine is not None:
        return build_engine_rows(target, options)
    notes: list[str] = []
    unknown = set(options) - set(BACKENDS)
    if unknown:
        raise BenchError(f"options for unknown backend(s) {', '.join(sorted(unknown))}: "
                         f"prefix options with one of {', '.join(BACKENDS)}")
    usable = {a.backend: a for a in probe_all() if a.target in CPU_TARGETS}
    baseline = {**BASELINE_OPTIONS, "device": options.get("torch", {}).get("device", "cpu")}
    rows: list[Row] = []
    if target.spec is not None and usable["torch"].usable:
        rows.append(Row("torch", baseline))
    for name in backends:
        if not usable[name].usable:
            notes.append(f"{name} skipped: {usable[name].why}")
            continue
        if name == "torch" and target.spec is None:
            continue
        row = Row(name, dict(options.get(name, {})))
        if name == "torch" and {**DEFAULT_OPTIONS, **row.options} == baseline:
            continue  # identical to the baseline row already there
        rows.append(row)
    if not rows:
        raise BenchError("no backend usable here for this model: see `cnndeploy backends`")
    return rows, notes


# -- TensorRT engines ------------------------------------------------------------
@dataclass
class BenchOutcome:
    run_id: str
    summaries: list[Summary]
    cells: list[Cell]
    notes: list[str]
    results: Path | None
    target: Target
    gpu: list[GpuReport] = field(default_factory=list)  # trtexec-style, one per GPU cell


def benchmark(
    target: Target,
    backends: Sequence[str] | str,
    batches: Sequence[int] = DEFAULT_BATCHES,
    *,
    options: dict[str, dict[str, Any]] | None = None,
    timing: TimingConfig = TimingConfig(),
    processes: int = 1,
    results: Path | None = None,
    data: str | None = None,
    notes: Sequence[str] = (),
    on_cell: Callable[[Cell], None] | None = None,
) -> BenchOutcome:
    """Time ``target`` on every backend; each cell is appended to ``results`` as it finishes."""
    from cnn_deploy import results as store
    from cnn_deploy.device import device_record, energy_mj, library_versions
    from cnn_deploy.workers import run_plan

    names = parse_backends(backends) if isinstance(backends, str) else list(backends)
    if target.engine is not None:
        check_engine_batches(target.engine, batches)
    if results is not None:
        store.check_writable(results)  # before minutes of timing, not after
    rows, row_notes = build_rows(target, names, options or {})
    plan = Plan(target, tuple(rows), tuple(batches), timing, data)
    run_id = store.new_run_id()
    device, versions = device_record(), library_versions()
    onnx_sha = _sha(target.onnx)
    precision = _precision(target.onnx)
    cells: list[Cell] = []
    energy_before = energy_mj() if device.get("kind") == "cuda" else None
    for cell in run_plan(plan, processes):
        cells.append(cell)
        energy_now = energy_mj() if energy_before is not None else None
        extra = _gpu_fields(cell, energy_before, energy_now)
        energy_before = energy_now
        if results is not None:
            store.append(results, store.make_record("bench", run_id, {
                "model": {**target.to_dict(), "onnx_sha256": onnx_sha},
                "backend": {"name": cell.backend, "label": cell.label, "device": cell.device,
                            "options": cell.options},
                "scenario": "single-stream" if cell.batch == 1 else plan.scenario,
                "precision": precision, "batch": cell.batch,
                "requested_batch": cell.requested_batch, "process": cell.process,
                "processes": max(processes, 1), "in_process": processes == 0,
                "timing": plan.to_dict()["timing"],
                "samples_ms": cell.samples_ms, "warmup_iterations": cell.warmup_iterations,
                "stats": cell.stats.to_dict(), "warnings": cell.warnings, "notes": cell.notes,
                "input": cell.input, "peak_rss_mb": cell.peak_rss_mb, **extra,
            }, device, versions))
        if on_cell is not None:
            on_cell(cell)
    return BenchOutcome(run_id, summarise_cells(cells, timing), cells,
                        [*notes, *row_notes], results, target, gpu_reports(cells))


def _gpu_fields(cell: Cell, energy_before: float | None,
                energy_after: float | None) -> dict[str, Any]:
    """A GPU cell's raw phase samples, and the GPU energy spent since the previous cell."""
    extra: dict[str, Any] = {}
    if cell.phases_ms is not None:
        extra["enqueue_ms"] = cell.enqueue_ms
        extra["phases_ms"] = cell.phases_ms
    if energy_before is not None and energy_after is not None and energy_after > energy_before:
        joules = (energy_after - energy_before) / 1000.0
        extra["energy"] = {
            "mj": energy_after - energy_before,
            "span": "since the previous cell: loading, warm-up and the timed runs",
            # timed tiles over energy that also paid for warm-up: a lower bound
            "tiles_per_joule_lower_bound": cell.stats.iterations * cell.batch / joules,
        }
    return extra


def _sha(path: Path | None) -> str | None:
    from cnn_deploy.train import file_sha256

    return file_sha256(path) if path is not None and path.is_file() else None


def _precision(path: Path | None) -> str:
    if path is None:
        return "fp32"
    from cnn_deploy.export import read_metadata

    return read_metadata(path).get("precision", "fp32")


@dataclass
class QuickstartOutcome:
    checkpoint: Path
    checkpoint_data: dict[str, Any]
    onnx: Path
    parity: Any
    bench: BenchOutcome
    notes: list[str] = field(default_factory=list)


def quickstart(
    *,
    data: str | None = None,
    models: Path = Path("models"),
    results: Path | None = Path("results") / "quickstart.jsonl",
    epochs: int = 3,
    processes: int = 3,
    batches: Sequence[int] = DEFAULT_BATCHES,
    timing: TimingConfig = TimingConfig(),
    train_subset: int | None = None,
    train_progress: Callable[[Any], None] | None = None,
    stage: Callable[[str], None] | None = None,
    on_cell: Callable[[Cell], None] | None = None,
) -> QuickstartOutcome:
    """Train lenet_1c1f, export it, benchmark it on every usable backend."""
    from cnn_deploy.data import load_mnist
    from cnn_deploy.export import export_checkpoint
    from cnn_deploy.train import TrainConfig, save_checkpoint, train

    say = stage or (lambda _: None)
    spec = NetSpec.from_name("lenet_1c1f")
    say(f"loading MNIST for {spec.name}")
    mnist = load_mnist(data)
    say(f"training {spec.name} ({epochs} epochs max, SGD lr 0.03)")
    checkpoint = train(spec, mnist, TrainConfig(epochs=epochs, train_subset=train_subset),
                       train_progress)
    path = save_checkpoint(checkpoint, models / f"{spec.name}.pt")
    say(f"exporting {path} to ONNX")
    exported = export_checkpoint(path, data=mnist)
    say("benchmarking")
    usable = [a.backend for a in probe_all()
              if a.usable and a.target in ("cpu", "CPUExecutionProvider")]
    target = Target(spec.name, exported.path, spec, path, True)
    outcome = benchmark(target, usable, batches, timing=timing, processes=processes,
                        results=results, data=str(mnist.root), on_cell=on_cell)
    return QuickstartOutcome(path, checkpoint, exported.path, exported.parity, outcome)
