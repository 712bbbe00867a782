"""`cnndeploy sweep`: the thesis's four groups (or a custom grid), resumable and shardable."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cnn_deploy.cli import render
from cnn_deploy.cli.interrupts import CellBoundary


def sweep(
    group: Annotated[str | None, typer.Option(help="Thesis group 1 (fc layers x batch), 2 (conv "
                     "layers x batch), 3 (fc layers x neurons), 4 (conv layers x depth), all (1-4), or "
                     "coverage (40 cells beyond the groups, for `model fit` to predict there).")]
        = None,
    grid: Annotated[str | None, typer.Option(help="Custom grid instead of --group: any NetSpec "
                    "field x batch, e.g. 'fc_layers=1..5;batch=16..4096*2;neurons=100,128'.")]
        = None,
    backend: Annotated[str, typer.Option("--backend", "-b", help="One backend that loads an ONNX "
                       "file or a network spec (onnxruntime, openvino, torch).")]
        = "onnxruntime",
    precision: Annotated[str, typer.Option(help="fp32 or fp16: the engine's precision with -b "
                         "tensorrt (fp32 elsewhere).")] = "fp32",
    option: Annotated[list[str] | None, typer.Option("--option", "-o", help="Options of that "
                      "backend, BACKEND.KEY=VALUE, e.g. torch.device=cuda (part of each cell's "
                      "key, so another setting never resumes over this one).")] = None,
    passes: Annotated[int | None, typer.Option(help="Passes over the cells, each in a shuffled "
                      "order and fresh processes: a cell gets a 2nd pass, and more up to this "
                      "many while its 95 % interval is wider than +-3 % (default 3; 1 with "
                      "--method thesis, which has its own 3 loops).")] = None,
    budget: Annotated[float | None, typer.Option(help="Minutes after which no new pass "
                      "starts (the pass under way finishes).")] = None,
    tune: Annotated[bool, typer.Option("--tune/--no-tune", help="Without -o options, run the "
                    "backend with this device's tuned options (`cnndeploy tune`).")] = True,
    results: Annotated[Path, typer.Option(help="JSONL file each cell is appended to; cells "
                       "already there are skipped (resume).")] = Path("results/sweep.jsonl"),
    shard: Annotated[str | None, typer.Option(help="Run only shard k of n (k/n, 1-based) of the "
                     "deterministic cell order.")] = None,
    method: Annotated[str, typer.Option(help="default (short warm timings) or thesis (20 runs, "
                      "no warm-up, median of 3 loops, drift reported).")] = "default",
    duration: Annotated[float | None, typer.Option(help="Minimum timed seconds per cell "
                        "(default 0.3).")] = None,
    processes: Annotated[int | None, typer.Option(help="Fresh processes (loops) per cell "
                         "(default 1, 3 with --method thesis).")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the cell count and the "
                       "estimated time; run nothing.")] = False,
    data: Annotated[str | None, typer.Option(help="MNIST folder (else $CNNDEPLOY_DATA).")] = None,
    train_epochs: Annotated[int | None, typer.Option(help="Train each net for up to N epochs "
                            "first (accuracy and Table 2's time-to-accuracy in its records); "
                            "default: untrained, since weights don't change speed.")] = None,
    models: Annotated[Path, typer.Option(help="Where --train-epochs puts checkpoints.")]
        = Path("models"),
) -> None:
    """Time every cell of a thesis group or grid; rerun the same command to resume."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    from cnn_deploy.errors import BenchError
    from cnn_deploy.study import sweep as lib

    if train_epochs is not None and train_epochs < 1:
        raise BenchError(f"--train-epochs must be at least 1, got {train_epochs}")
    if (group is None) == (grid is None):
        raise BenchError("give --group 1|2|3|4|all|coverage or --grid 'FIELD=VALUES;...'"
                         + (", not both" if group is not None else ""))
    name, setting = lib.backend_setting(backend, option, precision, train_epochs,
                                        needs_gpu=not dry_run)
    if not setting:
        from cnn_deploy.jobs import tuned_options

        setting, lines = tuned_options(name, tune)
        for line in lines:
            render.note(line)
    cells = lib.group_cells(group, name, setting, precision) if group is not None else \
        lib.parse_grid(grid or "", name, setting, precision)
    label = group if group is not None else f"grid {grid}"
    lib.cell_timing(cells[0], method, duration)  # validates --method and --duration
    if shard is not None:
        cells = lib.shard(cells, *lib.parse_shard(shard))
    loops = processes if processes is not None else (3 if method == "thesis" else 1)
    if passes is None:
        passes = 1 if method == "thesis" else lib.DEFAULT_PASSES
    if not 1 <= passes <= 20:
        raise BenchError(f"--passes must be within 1..20, got {passes}")
    if processes is not None and not 1 <= processes <= lib.MAX_PROCESSES:
        raise BenchError(f"--processes must be within 1..{lib.MAX_PROCESSES}, got {processes}")
    if budget is not None and not budget > 0:
        raise BenchError(f"--budget must be a positive number of minutes, got {budget}")
    from cnn_deploy.results.store import check_jsonl, check_writable, read

    if dry_run:
        check_jsonl(results)
    else:
        check_writable(results)
    if results.is_file():  # a line cut by a crash is measured again: say so before resuming
        damaged = read(results).skipped
        for line in damaged[:3]:
            render.warn(f"resuming over {line}: it is skipped, and its cell measured again")
        if len(damaged) > 3:
            render.warn(f"... and {len(damaged) - 3} more damaged lines in {results}")
    if dry_run:
        measured = lib.cell_passes(results)
        runs = [max(0, passes - len(measured.get(c.key, []))) for c in cells]
        todo = [c for c, n in zip(cells, runs, strict=True) for _ in range(n)]
        seconds = lib.estimate_seconds(todo, method, duration, loops)
        more = f", at most {passes} passes each" if passes > 1 else ""
        render.out.print(f"{len(cells)} cells, {runs.count(0)} complete in {results}, "
                         f"{len(cells) - runs.count(0)} to run{more}; estimated time at most "
                         f"{_hms(seconds)} ({seconds:.0f} s)", highlight=False, soft_wrap=True)
        return
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeRemainingColumn())
    with Progress(*columns, console=render.err, transient=True) as bar, CellBoundary() as stop:
        task = bar.add_task("sweep", total=None)

        def on_progress(p: lib.SweepProgress) -> None:
            what = p.cell.key if p.cell is not None else "done"
            bar.update(task, completed=p.done, total=p.total, description=what)
            stop.check()  # Ctrl-C: at a cell boundary, the records so far appended

        outcome = lib.run_sweep(cells, results, group=label, method=method, duration=duration,
                                processes=processes, data=data, on_progress=on_progress,
                                train_epochs=train_epochs, models=models, passes=passes,
                                budget_s=None if budget is None else budget * 60)
    if outcome.skipped:
        render.note(f"{outcome.skipped} of {outcome.total} cells were already complete in "
                    f"{results}: skipped")
    for line in outcome.warnings:
        render.warn(line)
    render.note(f"{len(outcome.records)} records appended to {results}"
                + (f" ({passes} passes at most per cell)" if passes > 1 else ""))


def _hms(seconds: float) -> str:
    s = round(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def register(app: typer.Typer) -> None:
    app.command()(sweep)
