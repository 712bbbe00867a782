"""`cnndeploy backends`: every backend and provider, usable here or why not."""

from __future__ import annotations

import typer
from rich.markup import escape
from rich.table import Table

from cnn_deploy.cli import render


def backends() -> None:
    """List every backend and execution provider, and whether it is usable here."""
    from cnn_deploy.backends import registry

    table = Table(title="backends on this machine", title_justify="left")
    table.add_column("backend")
    table.add_column("device / provider")
    table.add_column("usable")
    table.add_column("details")
    for a in registry.probe_all():
        table.add_row(a.backend, a.target, "[green]yes[/]" if a.usable else "[red]no[/]", escape(a.why))
    render.out.print(table)


def register(app: typer.Typer) -> None:
    app.command()(backends)
