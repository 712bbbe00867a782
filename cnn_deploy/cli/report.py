"""`cnndeploy report` and `cnndeploy compare`: the thesis's figures, tables and conclusions
from stored records, and tiles/ms ratios between two runs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cnn_deploy.cli import render


def report(
    results: Annotated[list[Path], typer.Argument(help="JSONL result files (bench, sweep and "
                                                  "profile records).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for index.html and the "
                                      "PNG figures.")] = Path("report"),
) -> None:
    """Self-contained HTML report: thesis figures, Table 2, speed-ups and conclusions."""
    from rich.markup import escape

    from cnn_deploy.study.report import build_report

    with render.err.status("drawing the report..."):
        done = build_report(results, out)
    for line in done.skipped:
        render.warn(line)
    for v in done.conclusions:
        render.out.print(f"{escape(v.claim)}: [bold]{v.verdict}[/] ({escape(v.detail)})",
                         highlight=False)
    for f in done.figures:
        render.note(f"{f.title}: " + (str(f.path) if f.path else "no data"))
    render.note(f"report written to {done.index}")


def compare(
    a: Annotated[Path, typer.Argument(help="Baseline JSONL results (A).")],
    b: Annotated[Path, typer.Argument(help="JSONL results to compare with it (B).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the rows as JSON.")] = False,
) -> None:
    """Tiles/ms of B over A per (net, backend, batch), with pairs that are not comparable flagged."""
    from rich.markup import escape
    from rich.table import Table

    from cnn_deploy.results.tidy import load
    from cnn_deploy.study.compare import compare as compare_runs

    ra, skipped_a = load([a])
    rb, skipped_b = load([b])
    for line in [*skipped_a, *skipped_b]:
        render.warn(line)
    rows = compare_runs(ra, rb)
    if as_json:
        render.print_json(rows)
        return
    table = Table(title=escape(f"B/A tiles/ms: A = {a}, B = {b}"), title_justify="left")
    for column in ("net", "backend", "batch", "precision", "A tiles/ms", "B tiles/ms", "B/A",
                   "comparable"):
        table.add_column(column, justify="right" if "tiles" in column or column in
                         ("batch", "B/A") else "left")
    for r in rows:
        ratio = r["ratio_b_over_a"]
        table.add_row(escape(str(r["net"])), escape(str(r["backend"])), str(r["batch"]),
                      r["precision"], f"{r['tiles_per_ms_a']:.2f}", f"{r['tiles_per_ms_b']:.2f}",
                      "-" if ratio is None else f"{ratio:.2f}x",
                      "yes" if r["comparable"] else escape(f"no: {r['why']}"))
    render.out.print(table)
    if not rows:
        render.note("no (net, backend, batch) cell appears in both files")


def register(app: typer.Typer) -> None:
    app.command()(report)
    app.command()(compare)
