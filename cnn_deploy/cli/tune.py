"""`cnndeploy tune`: this device's best options per backend, measured, kept in a tuning file."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cnn_deploy.cli import options as opt
from cnn_deploy.cli import render
from cnn_deploy.cli.interrupts import CellBoundary


def tune(
    model: Annotated[Path | None, typer.Argument(help="An .onnx file or a .pt checkpoint (default: "
                                                  "--spec).")] = None,
    spec: Annotated[str | None, typer.Option(help="Tune on a network by name, untrained.")] = None,
    engine: Annotated[Path | None, typer.Option(help="A TensorRT plan: tune TensorRT's runner "
                      "options on it (given an ONNX file, TensorRT's build is tuned).")] = None,
    precision: Annotated[str | None, typer.Option(help="fp32 or fp16: the engines built to "
                         "tune TensorRT's build (default: the ONNX file's own).")] = None,
    backend: Annotated[str | None, typer.Option("--backend", "-b", help="Comma-separated "
                       "backends (default: every backend with a tune space).")] = None,
    batch: Annotated[str, typer.Option(help="Comma-separated batch sizes.")] = "1,1024",
    processes: Annotated[int, typer.Option(help="Fresh processes, each timing every candidate "
                         "in a shuffled order; a setting replaces the defaults only when it "
                         "wins in every one of at least 3.")] = 3,
    duration: Annotated[float | None, typer.Option(help="Minimum timed seconds per cell "
                                                   "(default 0.5).")] = None,
    out: Annotated[Path | None, typer.Option("-o", "--out", help="Tuning file (default: "
                   "results/tuning/<device>.json, which bench, sweep and stream read).")] = None,
) -> None:
    """Try each backend's settings here; keep the winners for bench, sweep and stream."""
    from dataclasses import replace

    from cnn_deploy import jobs
    from cnn_deploy.bench.plan import Measurement
    from cnn_deploy.bench.targets import resolve_target
    from cnn_deploy.bench.tune import TUNE_TIMING

    batches = opt.parse_batches(batch)
    if precision not in (None, "fp32", "fp16"):
        from cnn_deploy.errors import BenchError

        raise BenchError(f"--precision takes fp32 or fp16 (the engines built to tune TensorRT), "
                         f"got '{precision}'")
    if processes < 1 or processes > 20:
        from cnn_deploy.errors import BenchError

        raise BenchError(f"--processes {processes}: choose 1..20")
    if duration is not None and not 0 < duration <= 60:
        from cnn_deploy.errors import BenchError

        raise BenchError(f"--duration {duration}: choose seconds in (0, 60]")
    timing = TUNE_TIMING if duration is None else replace(TUNE_TIMING, min_duration_ms=duration * 1000)
    if model is None and spec is None and engine is None:
        spec = "lenet_5c1f"
    with (resolve_target(model, spec, engine) as (target, _notes),
          render.err.status("tuning...") as status, CellBoundary() as stop):
        def on_cell(cell: Measurement) -> None:
            status.update(f"{cell.label} batch {cell.batch}: {cell.stats.tiles_per_ms:.1f} tiles/ms "
                          f"(process {cell.process + 1})")
            stop.check()

        outcome = jobs.tune(target, backend.split(",") if backend else None, batches,
                            processes=processes, timing=timing, out=out, on_cell=on_cell,
                            precision=precision, progress=status.update)
    render.out.print(render.tune_table(outcome.choices, f"{target.name}: tuned here"))
    default = jobs.tuning_file(True)
    render.note(f"wrote {outcome.path}" + (": bench, sweep, stream and quickstart use it "
                                          "(--no-tune for the defaults)" if default is not None
                                          and outcome.path.resolve() == default.resolve() else
                                          " (not this device's default tuning file, which "
                                          f"is {default}: nothing reads this one by itself)"))
    for line in outcome.notes:
        render.note(line)
    if precision is not None and not any(c.build for c in outcome.choices):
        render.warn(f"--precision {precision} was not used: it is the precision of the engines "
                    "built to tune TensorRT's build, and none was built here")
    for c in outcome.choices:
        render.note(f"{c.backend}{' build' if c.build else ''}: {c.verdict}"
                    + (" (`cnndeploy build` uses it)" if c.build and c.decided else ""))


def register(app: typer.Typer) -> None:
    app.command()(tune)
