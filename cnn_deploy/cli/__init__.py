"""The ``cnndeploy`` command: parse, call the library, render with rich. No logic here.

User errors (:class:`CnnDeployError`) are caught once, here, and become one line on
stderr and exit code 1; a command line that does not parse is one line and exit code 2;
Ctrl-C says what was kept and how to resume (exit 130); anything else is a bug and keeps
its traceback, under a line saying so.
"""

from __future__ import annotations

import errno
import sys
from collections.abc import Sequence
from typing import Any

import typer
from typer._click.exceptions import ClickException, UsageError  # typer vendors click
from typer.core import TyperGroup

from cnn_deploy.errors import CnnDeployError


class _Group(TyperGroup):
    argv: Sequence[str] = ()

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None,
             complete_var: str | None = None, standalone_mode: bool = True,
             windows_expand_args: bool = True, **extra: Any) -> Any:
        self.argv = list(sys.argv[1:] if args is None else args)
        try:
            rv = super().main(self.argv, prog_name, complete_var, standalone_mode=False,
                              windows_expand_args=windows_expand_args, **extra)
        except ClickException as exc:  # a usage error: one line, not a boxed panel
            from cnn_deploy.cli.render import error

            where = exc.ctx.command_path if isinstance(exc, UsageError) and exc.ctx \
                else "cnndeploy"
            error(f"{exc.format_message().rstrip('.')} (see `{where} --help`)")
            if not standalone_mode:
                raise
            sys.exit(exc.exit_code)
        except typer.Abort:
            from cnn_deploy.cli.render import error

            error("aborted (end of input): rerun the command")
            if not standalone_mode:
                raise
            sys.exit(1)
        if not standalone_mode:
            return rv
        sys.exit(rv if isinstance(rv, int) else 0)

    def invoke(self, ctx: Any) -> Any:
        from cnn_deploy.files import clean_stale_temp

        clean_stale_temp()
        try:
            return super().invoke(ctx)
        except CnnDeployError as exc:
            from cnn_deploy.cli.render import error

            error(str(exc))
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            from cnn_deploy.cli.interrupts import report

            report(self.argv)
            raise typer.Exit(130) from None
        except (ClickException, typer.Exit, typer.Abort):
            raise
        except OSError as exc:
            if not _path_refused(exc):
                _bug(exc)
                raise
            from cnn_deploy.cli.render import error

            error(f"cannot use {exc.filename}: {exc.strerror}: choose another path, or fix the "
                  "permissions of its folders")
            raise typer.Exit(1) from None
        except Exception as exc:
            _bug(exc)
            raise


# A path the user named that the system refuses before any content is read: a name too long,
# a folder that cannot be entered, a loop of links, a file where a folder should be. Every
# command checks its paths first, but `Path.exists()` and `is_dir()` raise for these instead
# of saying False; whatever is found on the way is the user's to fix, not a bug.
_REFUSED = frozenset({errno.ENAMETOOLONG, errno.EACCES, errno.EPERM, errno.ELOOP,
                      errno.ENOTDIR})


def _path_refused(exc: OSError) -> bool:
    return exc.errno in _REFUSED and exc.filename is not None


def _bug(exc: Exception) -> None:
    if isinstance(exc, BrokenPipeError) and _stdout_broken():
        _stdout_gone()  # the reader went away (`| head`): stop quietly
    from cnn_deploy.cli.render import err

    err.print(f"[bold red]internal error:[/] an unexpected {type(exc).__name__} is a bug "
              "in cnn_deploy, not in your input: please report it with the traceback "
              "that follows", highlight=False, soft_wrap=True)


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


def _stdout_broken() -> bool:
    """Whether standard output's pipe has lost its reader (not some other pipe: a broken pipe
    to a worker or a camera is a real failure). Linux and macOS poll a pipe whose reader has
    gone as POLLERR."""
    import select

    try:
        sys.stdout.flush()
    except (BrokenPipeError, ValueError):
        return True
    except OSError:
        return False
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLERR)
        return any(event & select.POLLERR for _, event in poller.poll(0))
    except (OSError, ValueError, AttributeError):  # no poll (Windows), or no real stdout
        return False


def _stdout_gone() -> None:
    """Standard output's reader closed the pipe (``cnndeploy ... | head``): what was written
    stays written; exit as a tool killed by SIGPIPE does (128 + 13), without the traceback
    Python would print when it flushes stdout at exit."""
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    raise SystemExit(141)


def main() -> None:
    try:
        app()
    except BrokenPipeError:
        _stdout_gone()
