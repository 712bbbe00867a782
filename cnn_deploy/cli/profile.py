"""`cnndeploy profile`: per-layer times from the backend's own profiler, by operation category."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from cnn_deploy.cli import render

if TYPE_CHECKING:
    from rich.table import Table

    from cnn_deploy.profile.run import Profile


def profile(
    model: Annotated[Path | None, typer.Argument(help="An .onnx file or a .pt checkpoint.")] = None,
    spec: Annotated[str | None, typer.Option(help="Profile networks by name, untrained: "
                    "lenet_3c1f, a family lenet_{1..5}c1f or a list lenet_1c1f,lenet_2c1f.")]
        = None,
    engine: Annotated[Path | None, typer.Option(help="A TensorRT plan: profiled per layer "
                      "with TensorRT's IProfiler; needs an NVIDIA GPU.")] = None,
    backend: Annotated[str, typer.Option("--backend", "-b", help="onnxruntime, torch "
                                         "(or tensorrt with --engine, or with --spec to "
                                         "build each net's engine).")] = "onnxruntime",
    batch: Annotated[int, typer.Option(help="Batch size.")] = 256,
    precision: Annotated[str, typer.Option(help="fp32 or fp16: the engines -b tensorrt --spec "
                                           "builds.")] = "fp32",
    runs: Annotated[int, typer.Option(help="Profiled runs (after one warm-up run); each "
                                      "layer's median over them is shown.")] = 10,
    unfused: Annotated[bool, typer.Option("--unfused", help="onnxruntime at opt level basic: "
                       "Conv, Relu, MaxPool, Gemm as separate nodes (torch eager is "
                       "unfused anyway).")] = False,
    option: Annotated[list[str] | None, typer.Option("--option", "-o", help="Backend option "
                      "BACKEND.KEY=VALUE, e.g. onnxruntime.threads=1.")] = None,
    png: Annotated[Path | None, typer.Option(help="Family bar chart (default "
                   "results/profile_<family>.png).")] = None,
    results: Annotated[Path, typer.Option(help="JSONL file the profiles are appended to.")]
        = Path("results/bench.jsonl"),
    no_save: Annotated[bool, typer.Option("--no-save", help="Do not append to results.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the table as JSON.")] = False,
    as_csv: Annotated[bool, typer.Option("--csv", help="Print the table as CSV.")] = False,
    data: Annotated[str | None, typer.Option(help="MNIST folder for real input digits.")] = None,
    tune: Annotated[bool, typer.Option(help="Run the backend with this device's tuned options "
                    "(`cnndeploy tune`) when no -o is given, as bench and sweep do; --no-tune "
                    "for its defaults.")] = True,
) -> None:
    """Per-layer profile: time per layer and per operation category, FLOPs and GFLOP/s."""
    from cnn_deploy.backends import registry
    from cnn_deploy.bench.targets import resolve_target
    from cnn_deploy.errors import BenchError
    from cnn_deploy.files import check_output
    from cnn_deploy.profile import run as prof
    from cnn_deploy.profile import table as tables
    from cnn_deploy.results import records
    from cnn_deploy.results.store import check_writable, write_csv

    name = prof.check_backend(backend, engine, by_spec=spec is not None and model is None)
    builds = registry.get(name).needs == "engine" and engine is None  # -b tensorrt --spec ...
    options = registry.parse_options(option).get(name, {})
    if not options:  # the setting sweep and bench run, so their records match
        from cnn_deploy.jobs import tuned_options

        options, lines = tuned_options(name, tune)
        for line in lines:
            render.note(line)
    names: list[str | None] = [*prof.expand_specs(spec)] if spec is not None else [None]
    if runs < 1 or batch < 1:
        raise BenchError(f"--runs and --batch must be at least 1, got {runs} and {batch}")
    # every output checked before any profiling: the chart's path and the results file
    chart = png or (Path("results") / f"profile_{prof.family_name([n for n in names if n])}.png"
                    if len(names) > 1 else None)
    if chart is not None:
        check_output(chart, ".png", "--png", BenchError)
    if not no_save:
        check_writable(results)
    profiles: list[Profile] = []
    with render.err.status("profiling...") as status:
        for net in names:
            status.update(f"profiling {net or model or engine} on {name}, batch {batch}")
            plan = engine
            if builds and net is not None:  # this GPU's engine of the net: reused or built
                from cnn_deploy.engine import engine_for_spec

                plan, _ = engine_for_spec(net, precision, batch, progress=status.update)
                net = None
            with resolve_target(model, net, plan) as (target, notes):
                p = prof.profile_target(target, name, batch, runs=runs, unfused=unfused,
                                        options=options, data=data)
            p.notes = [*notes, *p.notes]
            profiles.append(p)
    family = len(profiles) > 1
    rows: list[dict[str, Any]] = (tables.family_table(profiles) if family else
                                  [{k: v for k, v in r.items() if k != "time_ms_runs"}
                                   for r in profiles[0].table])
    if as_json:
        render.print_json({"rows": rows, "profiles": [records.profile_payload(p) for p in profiles]})
    elif as_csv:
        typer.echo(write_csv(rows, None), nl=False)
    else:
        for p in profiles if not family else []:
            render.out.print(layer_table(p))
            render.out.print(category_table(p))
        if family:
            render.out.print(family_table(profiles))
    if not no_save:  # the records first: a chart that fails must not lose the measurements
        records.save_profiles(profiles, results)
        render.note(f"{len(profiles)} profile record(s) appended to {results}")
    if family and chart is not None:
        tables.plot_stacked(rows, chart, title=f"{profiles[0].label}, batch {profiles[0].batch}")
        render.note(f"chart written to {chart}")
    for p in profiles:
        render.note(f"{p.target.name}: summed layer time {p.layer_sum_ms:.3f} ms / unprofiled "
                    f"run {p.unprofiled_ms:.3f} ms = {p.overhead_ratio:.2f}x (profiler overhead "
                    "and time outside the layers)")
    for line in dict.fromkeys(n for p in profiles for n in p.notes):
        render.note(line)


def layer_table(p: Profile) -> Table:
    from rich.markup import escape
    from rich.table import Table

    graph = "fused (deployed graph)" if p.fused else "unfused"
    table = Table(title=escape(f"{p.target.name}: {p.label}, batch {p.batch}, {graph}, median "
                               f"of {p.runs} profiled runs"), title_justify="left")
    for column in ("layer", "op", "category", "arch layers"):
        table.add_column(column, no_wrap=True)
    for column in ("ms", "share", "MFLOP", "MB", "GFLOP/s"):
        table.add_column(column, justify="right")
    for r in p.table:
        category = f"fused ({r['constituents']})" if r["category"] == "fused" else r["category"]
        table.add_row(escape(r["layer"]), escape(r["op"]), category, r["arch_layers"] or "-",
                      f"{r['time_ms']:.3f}", f"{r['share']:.1%}", _num(r["flops"], 1e6),
                      _num(r["bytes"], 1e6), _num(r["gflops_per_s"], 1.0))
    return table


def category_table(p: Profile) -> Table:
    from rich.table import Table

    from cnn_deploy.profile.table import category_totals

    table = Table(title=f"{p.target.name}: per category", title_justify="left")
    table.add_column("category", no_wrap=True)
    for column in ("layers", "ms", "share", "µs/tile", "GFLOP/s"):
        table.add_column(column, justify="right")
    for t in category_totals(p.table):
        table.add_row(t["category"], str(t["layers"]), f"{t['time_ms']:.3f}", f"{t['share']:.1%}",
                      f"{t['time_ms'] * 1000 / p.batch:.3f}", _num(t["gflops_per_s"], 1.0))
    table.add_section()
    table.add_row("sum of layers", "", f"{p.layer_sum_ms:.3f}", "", f"{p.us_per_tile:.3f}", "")
    table.add_row("unprofiled run", "", f"{p.unprofiled_ms:.3f}", "",
                  f"{p.unprofiled_ms * 1000 / p.batch:.3f}", "")
    return table


def family_table(profiles: list[Profile]) -> Table:
    from rich.markup import escape
    from rich.table import Table

    from cnn_deploy.profile.table import category_totals

    keys = list(dict.fromkeys(t["category"] for p in profiles for t in category_totals(p.table)))
    first = profiles[0]
    table = Table(title=escape(f"µs per tile by category: {first.label}, batch {first.batch}"),
                  title_justify="left")
    table.add_column("net", no_wrap=True)
    for key in keys:
        table.add_column(key, justify="right")
    for column in ("sum", "unprofiled", "ratio"):
        table.add_column(column, justify="right")
    for p in profiles:
        per = {t["category"]: t["time_ms"] * 1000 / p.batch for t in category_totals(p.table)}
        table.add_row(p.target.name, *(f"{per[k]:.3f}" if k in per else "-" for k in keys),
                      f"{p.us_per_tile:.3f}", f"{p.unprofiled_ms * 1000 / p.batch:.3f}",
                      f"{p.overhead_ratio:.2f}x")
    return table


def _num(value: float | None, scale: float) -> str:
    return "-" if value is None else f"{value / scale:.1f}"


def register(app: typer.Typer) -> None:
    app.command()(profile)
