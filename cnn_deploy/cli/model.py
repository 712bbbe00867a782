"""`cnndeploy model fit|adapt|validate`, `predict` and `select`: which network fits a budget."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from cnn_deploy.cli import render

if TYPE_CHECKING:
    from cnn_deploy.study.perfmodel import LatencyModel

app = typer.Typer(help="Fit, adapt and validate latency models (tiles/ms of unmeasured nets).",
                  no_args_is_help=True)

_MODEL_HELP = "Latency model file (default: models/latency_<this device>.json)."
_Model = Annotated[Path | None, typer.Option("--latency-model", "-m", help=_MODEL_HELP)]
_Json = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def _this_device() -> str:
    from cnn_deploy.device import device_record, device_slug

    return device_slug(device_record())


def _model_path(path: Path | None, here: str | None = None) -> Path:
    from cnn_deploy.study import modelfiles

    return path or modelfiles.default_path(here or _this_device())


def _load(path: Path | None, other_device: bool = False) -> LatencyModel:
    """The model at ``path`` or this device's; a model of another device, or fitted with
    another version of its backend, is used (predicting for a device you are not on is
    legitimate) with a warning, unless ``other_device`` is the point (adapt)."""
    from cnn_deploy.device import library_versions
    from cnn_deploy.study import modelfiles
    from cnn_deploy.study.perfmodel import check_version

    here = _this_device()
    model = modelfiles.load(_model_path(path, here))
    if model.source.device != here and not other_device:
        render.warn(f"the model speaks for {model.source.device}; this machine is {here}")
    for line in check_version(model, library_versions([model.source.backend_name])):
        render.warn(line)
    return model


def _new_model_path(path: Path, force: bool, keep: list[Path]) -> None:
    """Refuse, before any work, an output that is a folder, not .json, one of the inputs
    (even with --force), or an existing file without --force."""
    from cnn_deploy.errors import PredictError
    from cnn_deploy.files import check_output

    check_output(path, ".json", "the latency model", PredictError, keep=keep)
    if path.exists() and not force:
        raise PredictError(f"{path} exists: give another -o, or --force to replace it")


def _progress() -> Any:
    """A progress bar on a terminal; nothing at all (not even a blank line) when piped."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeRemainingColumn(), console=render.err, transient=True,
                    disable=not render.err.is_terminal)


def _on_progress(bar: Any, task: Any) -> Any:
    def report(p: Any) -> None:
        bar.update(task, completed=p.done, total=p.total,
                   description=p.cell.key if p.cell is not None else "done")
    return report


@app.command()
def fit(
    files: Annotated[list[Path], typer.Argument(help="JSONL results of `cnndeploy sweep` (or "
                                                "bench --spec) on one device.")],
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Model file (default: "
                   "models/latency_<device of the records>.json).")] = None,
    backend: Annotated[str | None, typer.Option("--backend", "-b", help="The records' backend "
                       "label or name, where they hold several.")] = None,
    device: Annotated[str | None, typer.Option(help="The records' device slug, where they hold "
                      "several.")] = None,
    force: Annotated[bool, typer.Option(help="Replace an existing model file.")] = False,
    cache_mb: Annotated[float | None, typer.Option(help="The device's last-level cache in MB, "
                        "for records that do not name it (made before cnn_deploy recorded it).")]
        = None,
    profiles: Annotated[bool, typer.Option(help="Add the files' `cnndeploy profile` records as "
                        "per-layer-part rows of the additive fit.")] = True,
    channel_block: Annotated[int | None, typer.Option(help="Channels a backend rounds each "
                             "conv's up to (1: none): the CPU's fp32 vector lanes by default "
                             "(16 with AVX-512), or the best of 1, 4, 8, 16, 32 by "
                             "leave-one-net-out error where the records do not name them.")]
        = None,
    json_out: _Json = False,
) -> None:
    """Fit the thesis's eq. 13 and the additive per-layer model to one device's records."""
    from cnn_deploy.errors import PredictError
    from cnn_deploy.study import modelfiles
    from cnn_deploy.study.perfmodel import CHANNEL_BLOCKS

    if cache_mb is not None and not 0 < cache_mb < 1e6:
        raise PredictError(f"--cache-mb {cache_mb}: give the last-level cache in MB (e.g. 32)")
    if channel_block is not None and channel_block not in CHANNEL_BLOCKS:  # before reading files
        raise PredictError(f"--channel-block {channel_block}: give one of "
                           f"{', '.join(map(str, CHANNEL_BLOCKS))}")
    if out is not None:
        _new_model_path(out, force, files)
    model, skipped = modelfiles.fit_files(files, backend, device, cache_mb, profiles,
                                          channel_block)
    path = out or modelfiles.default_path(model.source.device)
    _new_model_path(path, force, files)
    modelfiles.save(model, path)
    for line in skipped:
        render.warn(f"skipped {line}")
    if json_out:
        render.print_json(model.to_dict())
    else:
        render.out.print(render.fit_table(model, f"{model.source.describe()}: "
                                                 f"{len(model.training)} cells"))
    render.note(f"wrote {path}")


@app.command()
def adapt(
    files: Annotated[list[Path], typer.Argument(help="JSONL results of a few nets measured on "
                                                "the new device or backend setting.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="The adapted model file.")],
    latency_model: _Model = None,
    backend: Annotated[str | None, typer.Option("--backend", "-b", help="The records' backend "
                       "label or name, where they hold several.")] = None,
    device: Annotated[str | None, typer.Option(help="The records' device slug.")] = None,
    points: Annotated[int, typer.Option(help="Measurements used (at most 10).")] = 10,
    force: Annotated[bool, typer.Option(help="Replace an existing model file.")] = False,
) -> None:
    """Carry a model to another device or backend from at most 10 of its measurements."""
    from cnn_deploy.study import modelfiles

    _new_model_path(out, force, [*files, _model_path(latency_model)])
    model, skipped, notes = modelfiles.adapt_files(_load(latency_model, other_device=True),
                                                   files, backend, device, points)
    modelfiles.save(model, out)
    for line in skipped:
        render.warn(f"skipped {line}")
    for line in notes:
        render.warn(line)
    render.out.print(render.fit_table(model, f"{model.source.describe()}, adapted from "
                                             f"{model.adapted_from} ({len(model.training)} cells)"))
    render.note(f"wrote {out}")


@app.command()
def validate(
    latency_model: _Model = None,
    nets: Annotated[int, typer.Option(help="Held-out networks drawn at random from the wide "
                    "space (conv 1-5, depth 4-96, FC 0-5, neurons 64-4096, kernel 3/5, valid or "
                    "same padding, batch 1-4096).")] = 40,
    seed: Annotated[int, typer.Option(help="Seed of the draw (the same seed, the same nets).")] = 1,
    results: Annotated[Path, typer.Option(help="JSONL file the held-out measurements go to "
                       "(resumed: cells already there are kept).")] = Path("results/heldout.jsonl"),
    measure: Annotated[bool, typer.Option("--measure/--no-measure", help="Measure the cells "
                       "--results lacks (two passes in fresh processes).")] = True,
    png: Annotated[Path | None, typer.Option(help="Predicted-vs-measured plot (default: "
                   "beside --results).")] = None,
    data: Annotated[str | None, typer.Option(help="MNIST folder (else $CNNDEPLOY_DATA).")] = None,
    json_out: _Json = False,
) -> None:
    """Predict held-out networks the fit never saw, measure them fresh, and compare."""
    from cnn_deploy.data import check_source
    from cnn_deploy.errors import PredictError
    from cnn_deploy.files import check_output
    from cnn_deploy.results.store import check_writable
    from cnn_deploy.study import heldout

    model = _load(latency_model)
    source = _model_path(latency_model)
    if results.exists() and source.exists() and results.resolve() == source.resolve():
        raise PredictError(f"--results {results} is the latency model: give a .jsonl file for "
                           "the held-out measurements")
    png = check_output(png or results.with_name(results.stem + "_validation.png"), ".png",
                       "--png", PredictError, keep=[results, source])
    if measure:
        check_source(data)  # a --data that is not there is an error, not noise input
        check_writable(results)
    with _progress() as bar:
        outcome = heldout.validate(model, results, nets, seed,
                                   _on_progress(bar, bar.add_task("held-out", total=None)),
                                   data, run=measure)
    figure = heldout.plot(outcome, png, f"{model.source.describe()}: held-out nets")
    if json_out:
        render.print_json({"summary": outcome.summary, "checks": [vars(c) for c in outcome.checks],
                           "png": str(figure), "notes": outcome.notes})
    else:
        render.out.print(render.validation_table(outcome, f"{len(outcome.checks)} held-out cells, "
                                                          f"{model.source.describe()}"))
    for line in outcome.notes:
        render.note(line)
    render.note(f"plot: {figure}; measurements in {results}")


def predict(
    nets: Annotated[list[str], typer.Argument(help="Network names, e.g. lenet_4c2f_d30_n768.")],
    batch: Annotated[str, typer.Option(help="Comma-separated batch sizes.")] = "1024",
    latency_model: _Model = None,
    form: Annotated[str, typer.Option(help="additive (default) or thesis (eq. 13).")] = "additive",
    json_out: _Json = False,
) -> None:
    """Tiles/ms of networks nobody measured here, with an interval."""
    from cnn_deploy.arch import NetSpec
    from cnn_deploy.cli import options as opt

    specs = [NetSpec.from_name(n) for n in nets]
    batches = opt.parse_batches(batch)
    model = _load(latency_model)
    preds = [model.predict(s, b, form) for s in specs for b in batches]
    if json_out:
        render.print_json([{**vars(p), "ms_per_batch": p.ms_per_batch} for p in preds])
    else:
        render.out.print(render.prediction_table(preds, f"{model.source.describe()}, {form} model"))
    for p in preds:
        if p.outside:
            render.warn(f"{p.net} at batch {p.batch} is outside the fitted range ("
                        f"{'; '.join(p.outside)}): the interval is doubled")


def select(
    budget_ms: Annotated[float | None, typer.Option(help="Milliseconds per frame.")] = None,
    tiles_per_frame: Annotated[int | None, typer.Option(help="Tiles per frame (with "
                               "--budget-ms; one batch of them, at most 4096).")] = None,
    tiles_per_ms: Annotated[float | None, typer.Option(help="Or: tiles/ms needed at "
                            "--batch.")] = None,
    batch: Annotated[int | None, typer.Option(help="The batch of a --tiles-per-ms budget "
                     "(default 1024).")] = None,
    min_accuracy: Annotated[float | None, typer.Option(help="Accuracy floor, a fraction "
                            "(0.98).")] = None,
    latency_model: _Model = None,
    records: Annotated[list[Path] | None, typer.Option("--records", help="Results with "
                       "measured figures and accuracies (default: results/sweep.jsonl where it "
                       "exists).")] = None,
    grid: Annotated[str | None, typer.Option(help="More candidates, e.g. 'conv_layers=1..3;"
                    "depth=8,16,32' (default: the model's nets).")] = None,
    models: Annotated[Path, typer.Option(help="Checkpoints with accuracies; where --train-top "
                      "writes them.")] = Path("models"),
    train_top: Annotated[int, typer.Option(help="Train, measure and re-rank the K most "
                         "promising candidates of unknown accuracy that meet the budget.")] = 0,
    epochs: Annotated[int, typer.Option(help="Epochs for --train-top.")] = 2,
    results: Annotated[Path, typer.Option(help="Where --train-top's measurements go.")]
        = Path("results/select.jsonl"),
    data: Annotated[str | None, typer.Option(help="MNIST folder (else $CNNDEPLOY_DATA).")] = None,
    json_out: _Json = False,
) -> None:
    """The network that fits a time budget: the Pareto front of accuracy vs tiles/ms and the pick."""
    from cnn_deploy.data import check_source
    from cnn_deploy.study import select as lib

    if batch is not None and tiles_per_frame is not None:
        from cnn_deploy.errors import PredictError

        raise PredictError("--batch goes with --tiles-per-ms: a frame budget's batch is its "
                           "--tiles-per-frame (one batch of the frame's tiles)")
    budget = lib.Budget(budget_ms, tiles_per_frame, tiles_per_ms, 1024 if batch is None else batch)
    extra = lib.grid_specs(grid) if grid is not None else []
    if train_top:
        check_source(data)
    default = Path("results/sweep.jsonl")
    files = records if records else ([default] if default.is_file() else [])
    model = _load(latency_model)
    from cnn_deploy import jobs

    with _progress() as bar:
        outcome = jobs.select_network(model, budget, files, min_accuracy=min_accuracy,
                                      extra=extra, models=models, train_top=train_top,
                                      epochs=epochs, results=results, data=data,
                                      on_progress=_on_progress(bar, bar.add_task(
                                          "train and measure", total=None)))
    selection = outcome.selection
    if json_out:
        render.print_json(lib.summary(selection))
    else:
        render.out.print(render.selection_table(selection, f"candidates for {budget.describe()}"))
        if selection.pick is not None:
            render.out.print(f"pick: {selection.pick.spec.name}: {selection.why}", highlight=False,
                             soft_wrap=True)
    for line in selection.notes:
        render.note(line)
    if outcome.exported is not None:
        parity = outcome.exported.parity
        render.note(f"exported the pick to {outcome.exported.path}"
                    + (f" (top-1 agreement with PyTorch {parity.top1_agreement:.2%})" if parity
                       else "") + ": ready for `cnndeploy build` or `stream`")
    if selection.pick is None:
        render.warn(selection.why)


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="model")
    root.command()(predict)
    root.command()(select)
