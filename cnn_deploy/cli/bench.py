"""`cnndeploy bench`: time a model on every backend with the one harness."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cnn_deploy.cli import options as opt
from cnn_deploy.cli import render
from cnn_deploy.cli.interrupts import CellBoundary


def bench(
    model: Annotated[Path | None, typer.Argument(help="An .onnx file (any NCHW image "
                                                  "classifier) or a .pt checkpoint.")] = None,
    engine: Annotated[Path | None, typer.Option(help="A TensorRT plan (`cnndeploy build`): "
                      "timed trtexec-style beside torch eager CUDA NCHW (the baseline) and "
                      "torch CUDA channels-last of the same network; needs an NVIDIA GPU.")]
        = None,
    spec: Annotated[str | None, typer.Option(help="Time a network by name, untrained "
                                             "(e.g. lenet_5c1f).")] = None,
    backend: Annotated[str | None, typer.Option("--backend", "-b", help="Comma-separated "
                       "backends (default: onnxruntime,torch; with --engine: tensorrt,torch).")]
        = None,
    batch: Annotated[str, typer.Option(help="Comma-separated batch sizes.")] = "1,16,256,1024",
    processes: Annotated[int | None, typer.Option(help="Fresh processes per cell; the spread "
                                                  "between them is reported (default 1, 3 "
                                                  "with --thesis).")] = None,
    duration: Annotated[float | None, typer.Option(help="Minimum timed seconds per cell.")] = None,
    warmup: Annotated[float | None, typer.Option(help="Warm-up seconds per cell.")] = None,
    iterations: Annotated[int | None, typer.Option(help="Minimum timed iterations.")] = None,
    thesis: Annotated[bool, typer.Option(help="The thesis's procedure: 20 runs, no warm-up "
                                         "(use with --processes 3).")] = False,
    overlap: Annotated[bool | None, typer.Option("--overlap/--no-overlap", help="GPU rows: "
                       "trtexec's loop, two iterations in flight, throughput over wall time "
                       "(default with --engine); --no-overlap waits for each iteration.")]
        = None,
    option: Annotated[list[str] | None, typer.Option("--option", "-o", help="Backend option "
                      "BACKEND.KEY=VALUE, e.g. onnxruntime.opt_level=all, torch.compile=true, "
                      "torch.memory_format=contiguous, onnxruntime.threads=1.")] = None,
    tune: Annotated[bool, typer.Option("--tune/--no-tune", help="Apply this device's tuning "
                    "file (`cnndeploy tune`) to backends given no -o options.")] = True,
    results: Annotated[Path, typer.Option(help="JSONL file every measurement is appended to.")]
        = Path("results/bench.jsonl"),
    no_save: Annotated[bool, typer.Option("--no-save", help="Do not append to results.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON rows to stdout.")] = False,
    as_csv: Annotated[bool, typer.Option("--csv", help="Print CSV rows to stdout.")] = False,
    data: Annotated[str | None, typer.Option(help="MNIST folder (else $CNNDEPLOY_DATA, "
                                             "./data/mnist, ../shared/data/mnist).")] = None,
) -> None:
    """Benchmark a model: tiles/ms and latency per backend and batch, beside the baseline."""
    from cnn_deploy import jobs
    from cnn_deploy.backends import registry
    from cnn_deploy.bench.plan import Measurement
    from cnn_deploy.bench.targets import resolve_target
    from cnn_deploy.results.store import write_csv

    backends = registry.parse_backends(backend) if backend is not None else None
    batches = opt.parse_batches(batch)
    opt.processes(processes, least=0)
    if not no_save:
        from cnn_deploy.results.store import check_writable

        check_writable(results)
    options = registry.parse_options(option)
    timing = opt.timing(duration, warmup, iterations, thesis)
    if overlap if overlap is not None else engine is not None:
        from dataclasses import replace

        timing = replace(timing, overlap=True)
    if processes is None:
        processes = 3 if thesis else 1  # the thesis took the median of three loops
    with (resolve_target(model, spec, engine) as (target, notes),
          render.err.status("benchmarking...") as status, CellBoundary() as stop):
        def on_cell(cell: Measurement) -> None:
            status.update(f"{cell.label} batch {cell.batch}: "
                          f"{cell.stats.tiles_per_ms:.1f} tiles/ms (process {cell.process + 1})")
            stop.check()  # Ctrl-C: after this cell's record

        outcome = jobs.benchmark(
            target, backends, batches, options=options, timing=timing, processes=processes,
            results=None if no_save else results, data=data, notes=notes, on_cell=on_cell,
            tuning=jobs.tuning_file(tune))
    accuracy, accuracy_note = (jobs.engine_agreement(
        target, data, max(batches), options.get(registry.first_loading("engine").name))
        if engine is not None else (None, None))
    rows = render.summary_rows(outcome.summaries)
    if as_json:
        render.print_json({"run_id": outcome.run_id, "model": target.to_dict(), "rows": rows,
                           "gpu": [r.to_dict() for r in outcome.gpu], "notes": outcome.notes})
    elif as_csv:
        typer.echo(write_csv(rows, None), nl=False)
    else:
        render.out.print(render.bench_table(outcome.summaries, f"{target.name}: tiles/ms"))
        for report in outcome.gpu:
            render.out.print(render.gpu_table(report))
    if accuracy is not None:
        render.note(f"engine vs PyTorch on {accuracy.tiles} test digits: top-1 agreement "
                    f"{accuracy.top1_agreement:.2%}, accuracy {accuracy.accuracy:.2%} vs "
                    f"{accuracy.reference_accuracy:.2%} ({accuracy.delta:+.2%})")
    if accuracy_note:
        render.note(accuracy_note)
    for line in outcome.notes:
        render.note(line)
    # Per-cell notes (e.g. "the model has a fixed batch of 4: timed at 4, not 1") once each;
    # the per-cell "untrained weights" note repeats a run note printed just above.
    for line in dict.fromkeys(n for s in outcome.summaries for n in s.notes
                              if not n.startswith("untrained weights")):
        render.note(line)
    for line in render.warnings_of(outcome.summaries):
        render.warn(line)
    for report in outcome.gpu:
        for line in report.warnings:
            render.warn(f"{report.label}, batch {report.batch}: {line}")
    if outcome.results is not None:
        render.note(f"{len(outcome.cells)} measurements appended to {outcome.results}")


def register(app: typer.Typer) -> None:
    app.command()(bench)
