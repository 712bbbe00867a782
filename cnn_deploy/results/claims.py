"""Cells claimed by running sweeps, so two runs of the same sweep at once (a second terminal,
a job started twice) never measure the same cell's pass twice.

Beside ``results/sweep.jsonl`` lies ``results/.sweep.jsonl.claims``: one line per claimed
(cell key, pass) with the claiming process and host. Under its lock a run re-reads what is
measured, skips what another live run has claimed, and claims the rest; claims of processes
that are gone (killed) count for nothing, so a resume after SIGKILL measures their cells.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

from cnn_deploy.files import host_tag, process_alive

OTHER_HOST_HOURS = 12.0  # a claim from another host (its pid cannot be checked) holds this long

class Claims:
    def __init__(self, results: Path) -> None:
        self.path = results.with_name(f".{results.name}.claims")
        self.me = f"{os.getpid()}@{host_tag()}"

    @contextlib.contextmanager
    def _locked(self) -> Iterator[IO[str]]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a+", encoding="utf-8") as fh:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            fh.seek(0)
            yield fh

    def take(self, wanted: Callable[[], dict[str, int]]) -> set[str]:
        """Under the lock: ``wanted()`` (cell key -> the pass it would measure, read afresh
        from the results file) less the (key, pass) pairs another live run holds; those are
        claimed for this process and returned."""
        with self._locked() as fh:
            held = {(key, int(n)) for key, n, owner, at in _lines(fh.read())
                    if owner != self.me and _live(owner, at)}
            granted = {k: n for k, n in wanted().items() if (k, n) not in held}
            fh.seek(0, os.SEEK_END)
            now = time.time()
            fh.write("".join(f"{k}\t{n}\t{self.me}\t{now:.0f}\n" for k, n in granted.items()))
            fh.flush()
        return set(granted)

    def release(self) -> None:
        """Drop this process's claims (and claims of processes that are gone); the file goes
        when none are left."""
        with contextlib.suppress(OSError), self._locked() as fh:
            keep = [f"{k}\t{n}\t{o}\t{at:.0f}\n" for k, n, o, at in _lines(fh.read())
                    if o != self.me and _live(o, at)]
            fh.seek(0)
            fh.truncate()
            fh.write("".join(keep))
            fh.flush()
            if not keep:
                self.path.unlink(missing_ok=True)


def _lines(text: str) -> Iterator[tuple[str, str, str, float]]:
    for line in text.splitlines():
        parts = line.split("\t")
        if len(parts) == 4 and parts[1].isdigit() and parts[3].isdigit():
            yield parts[0], parts[1], parts[2], float(parts[3])


def _live(owner: str, at: float) -> bool:
    """A claim's process still runs (one from another host, whose pid cannot be checked
    from here, holds for OTHER_HOST_HOURS)."""
    pid, _, host = owner.partition("@")
    if host != host_tag():
        return time.time() - at < OTHER_HOST_HOURS * 3600
    return pid.isdigit() and process_alive(int(pid))
