"""The ``cnndeploy`` command: parse, call the library, render with rich. No logic here.

User errors (:class:`CnnDeployError`) are caught once, here, and become one line on
stderr and exit code 1; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

from typing import Any

import typer
from typer.core import TyperGroup

from cnn_deploy.errors import CnnDeployError


class _Group(TyperGroup):
    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except CnnDeployError as exc:
            from cnn_deploy.cli.render import error

            error(str(exc))
            raise typer.Exit(1) from None


app = typer.Typer(
    cls=_Group,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    help="How many 28x28 tiles per millisecond can this CNN classify on this device?",
)


def _register() -> None:
    from cnn_deploy.cli import (
        backends,
        bench,
        build,
        data,
        export,
        model,
        profile,
        quickstart,
        report,
        results,
        stream,
        sweep,
        train,
        tune,
    )

    for module in (quickstart, train, export, build, bench, profile, sweep, stream, tune, model,
                   report, backends):
        module.register(app)
    app.add_typer(data.app, name="data")
    app.add_typer(results.app, name="results")


_register()


def main() -> None:
    app()
