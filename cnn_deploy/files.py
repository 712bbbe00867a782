"""Files the package writes and hashes: one sha256, one atomic write.

A leaf: imports nothing of the package but :mod:`cnn_deploy.errors`.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

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
    return path


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
    return path
