"""Files the package writes and hashes: one sha256, one atomic write.

A leaf: imports nothing of the package but :mod:`cnn_deploy.errors`.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from cnn_deploy.errors import CnnDeployError


def file_sha256(path: Path) -> str:
    """sha256 of a file, read in 1 MiB blocks: the one hash records, sidecars and data use."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_output(path: Path, suffix: str, what: str, error: type[CnnDeployError] = CnnDeployError,
                 keep: Sequence[Path] = ()) -> Path:
    """Refuse, before any work, an output path that would lose data or cannot be written: the
    wrong kind of file (``suffix``), a folder, or one of the inputs ``keep``."""
    if path.suffix.lower() != suffix:
        raise error(f"{what} {path} should end in {suffix}: choose a {suffix} path")
    if path.is_dir():
        raise error(f"{what} {path} is a folder: give a file path ending in {suffix}")
    for other in keep:
        if other.exists() and path.exists() and path.resolve() == other.resolve():
            raise error(f"{what} {path} is the input it is made from: choose another path")
    check_writable_folder(path, what, error)
    return path


def check_writable_folder(path: Path, what: str,
                          error: type[CnnDeployError] = CnnDeployError) -> None:
    """Before any work: ``path``'s folder exists (or is made) and takes a new file there, so a
    run never ends in an unwritable place (a file in the way, a read-only or full disk)."""
    for parent in path.parents:
        if parent.exists() or parent.is_symlink():
            if not parent.is_dir():
                raise error(f"cannot write {what} {path}: {parent} is a file, not a folder; "
                            "choose another path")
            break
    probe = path.with_name(f".{path.name}.{os.getpid()}.probe")
    made = [p for p in (path.parent, *path.parent.parents) if not p.exists()]
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with probe.open("wb") as fh:
            fh.write(b"x")
            fh.flush()
            os.fsync(fh.fileno())
    except OSError as exc:
        raise error(f"cannot write {what} {path} ({exc.strerror or exc}): choose another path, "
                    "or free space / fix permissions there") from None
    finally:
        with contextlib.suppress(OSError):
            probe.unlink(missing_ok=True)
        for folder in made:  # a check leaves nothing behind: the run makes its folders
            with contextlib.suppress(OSError):
                folder.rmdir()


_WRITTEN: dict[Path, None] = {}  # files this process wrote whole, in order


def wrote(path: Path) -> Path:
    """Note a file written whole (renamed into place): an interrupted command lists it."""
    _WRITTEN[path] = None
    return path


def written() -> list[Path]:
    """Files this process has written whole so far (checkpoints, ONNX files, engines, ...)."""
    return list(_WRITTEN)


def write_atomic(path: Path, data: bytes | str, what: str = "the output",
                 error: type[CnnDeployError] = CnnDeployError) -> Path:
    """Write ``data`` to a temporary file beside ``path`` and rename it into place, so a
    reader never sees half a file; an unwritable place raises ``error`` naming the fix."""
    raw = data.encode() if isinstance(data, str) else data
    tmp = path.with_name(f".{path.name}.{os.getpid()}.part")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_dir():
            raise IsADirectoryError(21, "Is a directory")
        with tmp.open("wb") as fh:
            fh.write(raw)
            fh.flush()
            os.fsync(fh.fileno())
        tmp.replace(path)
    except OSError as exc:
        with contextlib.suppress(OSError):  # under a file, say: there is no part to remove
            tmp.unlink(missing_ok=True)
        raise error(f"cannot write {what} to {path} ({exc.strerror or exc}): choose another "
                    "path or fix its permissions") from None
    return wrote(path)


# -- temporary folders: named for their process, removed when that process is gone -----------
TEMP_PREFIX = "cnndeploy-"
STALE_HOURS = 24.0  # a folder from before this naming (no pid in its name) older than this


@contextlib.contextmanager
def temp_folder(what: str = "") -> Iterator[Path]:
    """A temporary folder ``cnndeploy-<pid>-<what>-XXXX`` removed on exit; one left behind by a
    killed process is removed by :func:`clean_stale_temp` on a later start."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix=f"{TEMP_PREFIX}{os.getpid()}-{host_tag()}-{what}") as tmp:
        yield Path(tmp)


def host_tag() -> str:
    """This machine's name, letters and digits only: a pid is judged only on its own host (a
    /tmp shared between containers holds pids of other pid namespaces)."""
    import re
    import socket

    return re.sub(r"[^A-Za-z0-9]", "", socket.gethostname())[:16] or "host"


def clean_stale_temp(folder: Path | None = None, now: float | None = None) -> list[Path]:
    """Remove this user's ``cnndeploy-*`` temporary folders whose process is gone (SIGKILL
    leaves them behind, up to megabytes each): those named for a pid that no longer runs, and
    older unnamed ones untouched for :data:`STALE_HOURS`. Never fails: it is housekeeping."""
    import re
    import shutil
    import tempfile
    import time

    base = folder or Path(tempfile.gettempdir())
    now = time.time() if now is None else now
    removed: list[Path] = []
    try:
        entries = list(base.glob(f"{TEMP_PREFIX}*"))
    except OSError:
        return removed
    for entry in entries:
        try:
            info = entry.lstat()
            if not entry.is_dir() or entry.is_symlink() or info.st_uid != os.getuid():
                continue
            match = re.match(rf"{TEMP_PREFIX}(\d+)-([A-Za-z0-9]+)-", entry.name)
            if match is not None and match.group(2) == host_tag():
                if process_alive(int(match.group(1))):
                    continue
            elif now - info.st_mtime < STALE_HOURS * 3600:
                continue
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
        except OSError:
            continue
    return removed


def process_alive(pid: int) -> bool:
    if pid <= 0:
        return True  # not a pid we can judge: keep the folder
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def write_figure(fig: Any, path: Path, what: str = "the figure",
                 error: type[CnnDeployError] = CnnDeployError) -> Path:
    """A matplotlib figure as a PNG, written whole or not at all (``write_atomic``); the figure
    is closed either way."""
    import io

    import matplotlib.pyplot as plt

    png = io.BytesIO()
    try:
        fig.tight_layout()
        fig.savefig(png, dpi=100, format="png")
    finally:
        plt.close(fig)
    return write_atomic(path, png.getvalue(), what, error)
