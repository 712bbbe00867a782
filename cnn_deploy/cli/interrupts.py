"""Ctrl-C for the measuring commands: the first stops at the next cell boundary (the cell under
way finishes and its record is appended), a second stops at once; either way one line says
what was kept and the command that resumes."""

from __future__ import annotations

import shlex
import signal
from collections.abc import Sequence
from types import FrameType, TracebackType
from typing import Any

from cnn_deploy.cli import render

RESUMES = {"sweep": "finished cells are skipped"}


class CellBoundary:
    """``with CellBoundary() as stop: ... on_cell: stop.check()``; a no-op outside the main
    thread (where signal handlers cannot be installed)."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None

    def __enter__(self) -> CellBoundary:
        try:
            self._previous = signal.signal(signal.SIGINT, self._on_sigint)
        except ValueError:  # not the main thread
            self._previous = None
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)

    def _on_sigint(self, signum: int, frame: FrameType | None) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        render.warn("Ctrl-C: stopping after the cell under way (press Ctrl-C again to stop now)")

    def check(self) -> None:
        """At a cell boundary (its record appended): stop here if Ctrl-C was pressed."""
        if self.requested:
            raise KeyboardInterrupt


def report(argv: Sequence[str]) -> None:
    """One line after an interrupted command: the records kept and how to carry on."""
    from cnn_deploy.files import written
    from cnn_deploy.results.store import appended

    command = next((a for a in argv if not a.startswith("-")), "")
    line = shlex.join(["cnndeploy", *argv])
    kept = appended()
    saved = "; ".join(f"{n} record{'s' if n != 1 else ''} appended to {p} {'is' if n == 1 else 'are'} "
                      "kept" for p, n in kept.items()) or "nothing was saved (files are written " \
                                                          "whole or not at all)"
    files = [p for p in written() if p.exists()]  # not those of temporary folders, gone now
    if files:
        shown = ", ".join(map(str, files[:6])) + (f" and {len(files) - 6} more" if len(files) > 6 else "")
        saved = (saved if kept else "no records were appended") + f"; written whole and kept: {shown}"
    again = (f"resume with `{line}` ({RESUMES[command]})" if command in RESUMES
             else f"rerun `{line}` to start again")
    render.err.print(f"[yellow]interrupted:[/] {render.one_line(saved)}; {render.one_line(again)}",
                     highlight=False, soft_wrap=True)
