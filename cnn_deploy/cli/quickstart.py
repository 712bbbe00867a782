"""`cnndeploy quickstart`: train lenet_1c1f, export it, benchmark it on every backend."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from cnn_deploy.cli import render
from cnn_deploy.cli.interrupts import CellBoundary


def quickstart(
    epochs: Annotated[int, typer.Option(help="Maximum training epochs.")] = 3,
    processes: Annotated[int, typer.Option(help="Fresh benchmark processes (>= 3 shows "
                                           "bimodal timings).")] = 3,
    batch: Annotated[str, typer.Option(help="Comma-separated batch sizes.")] = "1,16,256,1024",
    duration: Annotated[float | None, typer.Option(help="Minimum timed seconds per "
                                                   "cell.")] = None,
    models: Annotated[Path, typer.Option(help="Where the checkpoint and ONNX go.")]
        = Path("models"),
    results: Annotated[Path, typer.Option(help="JSONL file for the measurements.")]
        = Path("results/quickstart.jsonl"),
    data: Annotated[str | None, typer.Option(help="MNIST folder (else $CNNDEPLOY_DATA, "
                                             "./data/mnist, ../shared/data/mnist).")] = None,
    tune: Annotated[bool, typer.Option("--tune/--no-tune", help="Use this device's tuning file; "
                    "without one, tune first (about a minute; not with --dry-run).")] = True,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="A smoke run in seconds: 2,000 "
                                          "training digits, short cells, 1 process.")] = False,
) -> None:
    """The main job end to end on this machine: train, export, benchmark, one table."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from cnn_deploy import jobs
    from cnn_deploy.cli import options as opt
    from cnn_deploy.errors import BenchError
    from cnn_deploy.files import check_writable_folder
    from cnn_deploy.results.store import check_writable

    # everything checked before training starts (it takes minutes)
    batches = opt.parse_batches(batch)
    timing = opt.timing(duration, None, None, thesis=False, quick=dry_run)
    if epochs < 1:
        raise BenchError(f"--epochs must be at least 1, got {epochs}")
    opt.processes(processes)
    check_writable_folder(models / "lenet_1c1f.pt", "--models", BenchError)
    check_writable(results)
    from cnn_deploy.data import check_source

    check_source(data)
    subset = 2000 if dry_run else None
    if dry_run:
        if (epochs, processes) != (3, 3):  # not the defaults: say they are not used
            render.note(f"--dry-run trains 1 epoch and benchmarks in 1 process (not {epochs} and "
                        f"{processes}): drop --dry-run for those")
        epochs, processes = 1, 1
    columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[info]}"),
               TimeElapsedColumn())
    with Progress(*columns, console=render.err, transient=True) as bar, CellBoundary() as stop:
        task = bar.add_task("starting", total=None, info="")

        def stage(text: str) -> None:
            bar.update(task, description=text, total=None, completed=0, info="")

        def on_step(p: Any) -> None:
            acc = f" val {p.val_accuracy:.2%}" if p.val_accuracy is not None else ""
            bar.update(task, description=f"training lenet_1c1f epoch {p.epoch}",
                       total=p.steps_per_epoch, completed=p.step, info=f"loss {p.loss:.3f}{acc}")

        def on_cell(cell: Any) -> None:
            bar.update(task, description="benchmarking", info=f"{cell.label} batch {cell.batch} "
                       f"(process {cell.process + 1}/{processes})")
            stop.check()

        result = jobs.quickstart(data=data, models=models, results=results, epochs=epochs,
                                     processes=processes, batches=batches, timing=timing,
                                     train_subset=subset,
                                     train_progress=on_step, stage=stage, on_cell=on_cell,
                                     tune_first=not dry_run, tuning=jobs.tuning_file(tune))
    metrics = result.checkpoint_data["metrics"]
    miles = ", ".join(f"{k} in {v:.1f} s" if v is not None else f"{k} not reached"
                      for k, v in result.checkpoint_data["milestones_seconds"].items())
    render.out.print(f"trained {result.checkpoint}: test accuracy {metrics['test_accuracy']:.2%}"
                     f"; time to validation accuracy: {miles}", highlight=False, soft_wrap=True)
    if result.parity is not None:
        render.out.print(f"exported {result.onnx}: max abs error vs PyTorch "
                         f"{result.parity.max_abs_error:.1e}, top-1 agreement "
                         f"{result.parity.top1_agreement:.2%}", highlight=False, soft_wrap=True)
    title = f"lenet_1c1f on this machine: tiles/ms, {processes} fresh processes per cell"
    render.out.print(render.bench_table(result.bench.summaries, title,
                                        accuracy=metrics["test_accuracy"]))
    for line in result.bench.notes:
        render.note(line)
    for line in render.warnings_of(result.bench.summaries):
        render.warn(line)
    render.note(f"raw samples of every measurement: {results}")


def register(app: typer.Typer) -> None:
    app.command()(quickstart)
