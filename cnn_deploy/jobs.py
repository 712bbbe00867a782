"""The end-to-end jobs the CLI runs: benchmark a target, export with an accuracy check,
the quickstart. Each is a few library calls; the pieces live in their stages.

Library code: no printing; progress goes to callbacks the CLI renders.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cnn_deploy.arch import NetSpec
from cnn_deploy.backends import registry
from cnn_deploy.backends.base import Target
from cnn_deploy.bench.accuracy import Agreement, check_agreement
from cnn_deploy.bench.phases import GpuReport, gpu_reports
from cnn_deploy.bench.plan import Measurement, Plan
from cnn_deploy.bench.summary import Summary, summarise_cells
from cnn_deploy.bench.targets import build_rows, check_batches, default_backends, require_gpu
from cnn_deploy.bench.timing import TimingConfig
from cnn_deploy.errors import BenchError, CnnDeployError, DataError, EngineError, ModelError
from cnn_deploy.results.records import Writer, measurement_payload, model_fields

DEFAULT_BATCHES = (1, 16, 256, 1024)


@dataclass
class BenchOutcome:
    run_id: str
    summaries: list[Summary]
    cells: list[Measurement]
    notes: list[str]
    results: Path | None
    target: Target
    gpu: list[GpuReport] = field(default_factory=list)  # trtexec-style, one per GPU cell


def benchmark(
    target: Target,
    backends: Sequence[str] | str | None = None,
    batches: Sequence[int] = DEFAULT_BATCHES,
    *,
    options: dict[str, dict[str, Any]] | None = None,
    timing: TimingConfig = TimingConfig(),
    processes: int = 1,
    results: Path | None = None,
    data: str | None = None,
    notes: Sequence[str] = (),
    on_cell: Callable[[Measurement], None] | None = None,
    tuning: Path | None = None,
) -> BenchOutcome:
    """Time ``target`` on every backend; each cell is appended to ``results`` as it finishes.
    ``tuning``: a per-device tuning file (``cnndeploy tune``) whose options apply to every
    backend given no options."""
    from cnn_deploy.bench.workers import run_plan
    from cnn_deploy.data import check_source
    from cnn_deploy.device import energy_mj
    from cnn_deploy.files import file_sha256
    from cnn_deploy.onnxfile import precision

    options = registry.check_options(options or {})
    names = default_backends(target, options) if backends is None else registry.parse_backends(
        backends)
    check_batches(target, batches)
    check_source(data)  # --data /nonexistent is an error, not noise for inputs
    tune_notes: list[str] = []
    if tuning is not None:
        from cnn_deploy.bench.tune import apply

        options, tune_notes = apply(options, names, tuning)
    rows, row_notes = build_rows(target, names, options)
    gpu = _cuda_index(rows)
    writer = Writer(results, gpu)
    plan = Plan(target, tuple(rows), tuple(batches), timing, data)
    onnx_sha = file_sha256(target.onnx) if target.onnx is not None and target.onnx.is_file() else None
    model = model_fields(target, onnx_sha)
    fp = precision(target.onnx)
    cells: list[Measurement] = []
    energy_before = energy_mj(gpu) if writer.device.get("kind") == "cuda" else None
    for cell in run_plan(plan, processes):
        cells.append(cell)
        energy_now = energy_mj(gpu) if energy_before is not None else None
        extra = _energy_fields(cell, energy_before, energy_now)
        energy_before = energy_now
        writer.append("bench", measurement_payload(cell, model=model, timing=timing, precision=fp,
                                            processes=processes, scenario=plan.scenario,
                                            extra=extra))
        if on_cell is not None:
            on_cell(cell)
    return BenchOutcome(writer.run_id, summarise_cells(cells, timing), cells,
                        [*notes, *tune_notes, *row_notes], results, target, gpu_reports(cells))


def _cuda_index(rows: Sequence[Any]) -> int:
    """The CUDA device the GPU rows run on (``cuda:N`` or ``device_id``), for the device
    record and the energy counter; 0 when none says."""
    for row in rows:
        device = str(row.options.get("device") or "")
        if device.startswith("cuda:") and device[5:].isdigit():
            return int(device[5:])
        if row.options.get("device_id") is not None:
            return int(row.options["device_id"])
    return 0


def engine_agreement(target: Target, data: str | None = None, batch: int = 256,
                     options: dict[str, Any] | None = None) -> tuple[Agreement | None, str | None]:
    """The engine's top-1 against PyTorch (CPU, fp32) on real digits, or why it was skipped."""
    from cnn_deploy.data import load_mnist

    if target.engine is None or target.spec is None:
        return None, "engine accuracy check skipped: the engine names no cnn_deploy network"
    try:
        require_gpu("the engine accuracy check")
        mnist = load_mnist(data)
    except (BenchError, DataError) as exc:
        return None, f"engine accuracy check skipped: {str(exc).split(';')[0]}"
    try:
        engine_backend = registry.first_loading("engine").name
        # the outputs must come back to be compared, whatever -o tensorrt.transfers says
        result = check_agreement(target, engine_backend, mnist, batch=batch,
                                 options={**(options or {}), "transfers": True})
    except CnnDeployError as exc:
        return None, f"engine accuracy check skipped: {exc}"
    note = None if target.checkpoint else ("untrained weights: only the top-1 agreement with "
                                           "PyTorch is meaningful, not the accuracies")
    return result, note


def build(onnx: Path, options: Any, out: Path | None = None,
          progress: Callable[[str], None] | None = None) -> Any:
    """Build a TensorRT engine; where none can be built, say what is usable here instead."""
    from cnn_deploy.engine import NoBuilderError, build_engine

    try:
        return build_engine(onnx, options, out, progress=progress)
    except NoBuilderError as exc:
        usable = [f"{a.backend} ({a.target})" for a in registry.probe_all() if a.usable]
        raise NoBuilderError(f"{exc}; usable here: {', '.join(usable) or 'none'}") from None


@dataclass
class ExportOutcome:
    path: Path
    opset: int
    parity: Agreement | None
    fp16_path: Path | None
    fp16_parity: Agreement | None
    fp16_note: str | None


def export(checkpoint: Path | None = None, out: Path | None = None, *, spec: str | None = None,
           data: Any = None, opset: int | None = None, fp16: bool = False,
           parity_tiles: int = 2000, models: Path = Path("models")) -> ExportOutcome:
    """Export a checkpoint (or, with ``spec``, an untrained network by name) to ONNX, and an
    fp16 twin, then compare each file with PyTorch on ``parity_tiles`` real test digits
    (``data``: a loaded Mnist; None skips the check). A checkpoint is compared with its own
    module on normalised pixels, so an error in the folded normalisation shows; an untrained
    net with the same network in PyTorch."""
    from cnn_deploy.export import DEFAULT_OPSET, export_checkpoint, export_spec

    opset = DEFAULT_OPSET if opset is None else opset
    net = check_export(checkpoint, out, spec=spec, opset=opset, parity_tiles=parity_tiles,
                       models=models)
    if net is not None:
        result = export_spec(net, out or models / f"{net.name}.onnx", opset=opset, fp16=fp16)
    else:
        assert checkpoint is not None
        result = export_checkpoint(checkpoint, out, opset=opset, fp16=fp16)
        net = _checkpoint_spec(checkpoint)

    def parity(path: Path) -> Agreement | None:
        if data is None or parity_tiles == 0:
            return None
        target = Target(net.name, path, net, checkpoint, checkpoint is not None)
        onnx_reader = registry.first_loading("onnx").name  # ONNX Runtime: the ONNX reference
        return check_agreement(target, onnx_reader, data, tiles=parity_tiles,
                               unfolded=checkpoint is not None)

    fp16_parity = fp16_note = None
    if result.fp16_path is not None:
        try:
            fp16_parity = parity(result.fp16_path)
        except CnnDeployError as exc:
            fp16_note = f"fp16 parity not checked on this machine: {exc}"
    return ExportOutcome(result.path, result.opset, parity(result.path), result.fp16_path,
                         fp16_parity, fp16_note)


def check_export(checkpoint: Path | None, out: Path | None, *, spec: str | None, opset: int,
                 parity_tiles: int, models: Path = Path("models")) -> NetSpec | None:
    """Everything an export is asked, checked before any work (loading digits included): one
    of a checkpoint and a spec, the opset, the parity count, and an output that is writable and
    never the checkpoint or another kind of file. Returns the spec's network (None for a
    checkpoint)."""
    from cnn_deploy.export import check_opset
    from cnn_deploy.files import check_output

    if (checkpoint is None) == (spec is None):
        raise BenchError("give a checkpoint (.pt) or --spec NAME"
                         + (", not both" if checkpoint is not None else ""))
    if checkpoint is not None and checkpoint.suffix.lower() not in (".pt", ".pth"):
        raise ModelError(f"{checkpoint}: expected a .pt checkpoint from `cnndeploy train`"
                         + (" (an .onnx file is exported already: bench it)"
                            if checkpoint.suffix.lower() == ".onnx" else ""))
    check_opset(opset)
    if parity_tiles < 0:
        raise BenchError(f"--parity-tiles must be 0 or more (0 skips the check), got {parity_tiles}")
    net = NetSpec.from_name(spec) if spec is not None else None
    written = out or (models / f"{net.name}.onnx" if net is not None else
                      checkpoint.with_suffix(".onnx") if checkpoint is not None else None)
    if written is not None:
        check_output(written, ".onnx", "--out", ModelError, keep=[checkpoint] if checkpoint else [])
    return net


def _checkpoint_spec(checkpoint: Path) -> NetSpec:
    from cnn_deploy.train import load_checkpoint

    return load_checkpoint(checkpoint)[0]


def _energy_fields(cell: Measurement, energy_before: float | None,
                energy_after: float | None) -> dict[str, Any]:
    """The GPU energy spent since the previous cell, where NVML has the counter."""
    extra: dict[str, Any] = {}
    if energy_before is not None and energy_after is not None and energy_after > energy_before:
        joules = (energy_after - energy_before) / 1000.0
        extra["energy"] = {
            "mj": energy_after - energy_before,
            "span": "since the previous cell: loading, warm-up and the timed runs",
            # timed tiles over energy that also paid for warm-up: a lower bound
            "tiles_per_joule_lower_bound": cell.stats.iterations * cell.batch / joules,
        }
    return extra


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
    on_cell: Callable[[Measurement], None] | None = None,
    tune_first: bool = False,
    tuning: Path | None = None,
) -> QuickstartOutcome:
    """Train lenet_1c1f, export it, benchmark it on every usable backend. With ``tuning`` the
    benchmark applies that tuning file; with ``tune_first`` and no such file yet, a short tune
    (three processes, the largest batch, 0.3 s cells) writes it first."""
    from cnn_deploy.data import load_mnist
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
    exported = export(path, data=mnist)
    usable = list(dict.fromkeys(a.backend for a in registry.probe_all() if a.usable and not a.gpu))
    target = Target(spec.name, exported.path, spec, path, True)
    notes = []
    if tuning is not None and tune_first and not tuning.exists():
        from dataclasses import replace

        from cnn_deploy.bench.tune import TUNE_TIMING

        say(f"tuning the backends for this device ({tuning})")
        tuned = tune(target, usable, (max(batches),), processes=3, out=tuning, on_cell=on_cell,
                     timing=replace(TUNE_TIMING, min_duration_ms=300.0))
        notes.append(f"tuned first, at batch {max(batches)} (no tuning file for this device yet): "
                     + "; ".join(f"{c.backend}: {c.verdict}" for c in tuned.choices))
    say("benchmarking")
    outcome = benchmark(target, usable, batches, timing=timing, processes=processes,
                        results=results, data=str(mnist.root), on_cell=on_cell, tuning=tuning,
                        notes=notes)
    return QuickstartOutcome(path, checkpoint, exported.path, exported.parity, outcome)


@dataclass
class TuneOutcome:
    path: Path
    choices: list[Any]
    target: Target
    notes: list[str] = field(default_factory=list)


def tune(target: Target, backends: Sequence[str] | None = None, batches: Sequence[int] = (1, 1024),
         *, processes: int = 3, timing: TimingConfig | None = None, out: Path | None = None,
         on_cell: Callable[[Measurement], None] | None = None, precision: str | None = None,
         progress: Callable[[str], None] | None = None) -> TuneOutcome:
    """Search each backend's tune space for ``target`` here and write the per-device tuning
    file (``results/tuning/<device>.json`` unless ``out``). A backend with a build space
    (TensorRT) given an ONNX file gets one ``precision`` engine (default: the file's own) per
    build setting, each timed with its runner's defaults; given an engine, its runner's
    options are searched. A backend not named that cannot build here is left out, with a note."""
    from cnn_deploy.bench import tune as tuning
    from cnn_deploy.device import device_record

    record = device_record()
    named = bool(backends)
    names = registry.parse_backends(backends) if backends else [
        b.name for b in registry.backends() if b.tune_space or b.build_space]
    check_batches(target, batches)
    path = out or tuning.tuning_path(record)
    tuning.check_out(path)  # before minutes of measuring
    timing = timing or tuning.TUNE_TIMING
    builds = [n for n in names if registry.get(n).build_space and target.engine is None
              and target.onnx is not None and (named or _runs_here(n))]
    choices, notes = [], []
    for name in builds:  # first (a build that cannot run fails before minutes of timing)
        try:
            choice = _tune_builds(name, target, batches, precision, timing, processes, on_cell,
                                  progress)
        except EngineError as exc:
            if named:
                raise
            notes.append(f"{name} left out: {exc}")
            continue
        if choice is not None:
            choices.append(choice)
    if [n for n in names if n not in builds]:
        choices += tuning.search(target, [n for n in names if n not in builds], batches,
                                 timing=timing, processes=processes, on_cell=on_cell)
    tuning.save(choices, path, net=target.name, batches=batches, device=record)
    return TuneOutcome(path, choices, target, notes)


def _runs_here(backend: str) -> bool:
    from cnn_deploy.bench.targets import usable

    entry = registry.get(backend)
    return usable(entry, entry.resolve({}))[0]


def _tune_builds(name: str, target: Target, batches: Sequence[int], precision: str | None,
                 timing: TimingConfig, processes: int,
                 on_cell: Callable[[Measurement], None] | None,
                 progress: Callable[[str], None] | None) -> Any:
    from dataclasses import replace

    from cnn_deploy.bench import tune as tuning
    from cnn_deploy.engine import NoBuilderError, engines_for_levels, onnx_precision

    assert target.onnx is not None
    precision = precision or onnx_precision(target.onnx)
    wanted = tuning.build_candidates(name)
    space = registry.get(name).build_space
    levels = [c.get("opt_level", space["opt_level"][0]) for c in wanted]
    try:
        plans = engines_for_levels(target.onnx, precision, max(batches), levels,
                                   progress=progress)
    except NoBuilderError as exc:
        usable_here = [f"{a.backend} ({a.target})" for a in registry.probe_all() if a.usable]
        raise NoBuilderError(f"cannot tune {name}'s build: {exc}; usable here: "
                             f"{', '.join(usable_here) or 'none'}") from None
    builds = [(c, replace(target, engine=plan)) for c, (_, plan) in zip(wanted, plans, strict=True)]
    return tuning.search_builds(name, builds, batches, timing=timing, processes=processes,
                                on_cell=on_cell)


def tuned_options(backend: str, enabled: bool) -> tuple[dict[str, Any], list[str]]:
    """The options `cnndeploy tune` kept for ``backend`` on this device (none when not
    ``enabled``), and the notes to show: what a command given no -o runs."""
    from cnn_deploy.bench.tune import apply

    path = tuning_file(enabled)
    if path is None:
        return {}, []
    tuned, notes = apply({}, [backend], path)
    return tuned.get(backend, {}), notes


def tuned_build_options(backend: str, enabled: bool) -> tuple[dict[str, Any], str | None]:
    """The build options `cnndeploy tune` kept for ``backend`` on this device, and a note."""
    from cnn_deploy.bench.tune import build_options

    return build_options(backend, tuning_file(enabled))


def tuning_file(enabled: bool) -> Path | None:
    """This device's tuning file when tuning applies (``--tune``, the default), else None."""
    if not enabled:
        return None
    from cnn_deploy.bench.tune import tuning_path
    from cnn_deploy.device import device_record

    return tuning_path(device_record())


@dataclass
class SelectOutcome:
    selection: Any  # study.select.Selection
    exported: ExportOutcome | None = None  # the pick, trained by --train-top, exported


def select_network(model: Any, budget: Any, records: Sequence[Path], *, train_top: int = 0,
                   models: Path = Path("models"), data: str | None = None, **kw: Any
                   ) -> SelectOutcome:
    """From a budget to a network: rank the candidates (``study.select.choose``; with
    ``train_top`` K, train, measure and re-rank the K most promising), and when the pick is a
    net trained here, export it to ``models/<net>.onnx`` with its parity check, ready for
    `cnndeploy build` or `stream`."""
    from cnn_deploy.study.select import choose

    selection = choose(model, budget, records, train_top=train_top, models=models, data=data,
                       **kw)
    pick = selection.pick
    checkpoint = models / f"{pick.spec.name}.pt" if pick is not None else None
    if not train_top or checkpoint is None or not checkpoint.is_file() \
            or checkpoint.with_suffix(".onnx").exists():
        return SelectOutcome(selection)
    from cnn_deploy.data import load_mnist

    exported = export(checkpoint, data=load_mnist(data), models=models)
    return SelectOutcome(selection, exported)
