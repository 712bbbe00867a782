"""`cnndeploy results`: housekeeping of JSONL result files (merge shards)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cnn_deploy.cli import render

app = typer.Typer(help="Work with JSONL result files.", no_args_is_help=True)


@app.command()
def merge(
    files: Annotated[list[Path], typer.Argument(help="JSONL files to join (e.g. sweep shards).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="File to write the merged records to.")],
    force: Annotated[bool, typer.Option(help="Replace --out even when it exists and is not one "
                                        "of the files merged.")] = False,
) -> None:
    """Join result files, dropping identical records; refuses mixed schema versions."""
    from cnn_deploy.results.store import merge as merge_files

    outcome = merge_files(files, out, force=force)
    for line in outcome.skipped:
        render.warn(f"skipped {line}")
    render.note(f"{outcome.written} records written to {out} ({outcome.duplicates} duplicates "
                "dropped)")
