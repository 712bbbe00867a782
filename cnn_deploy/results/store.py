"""The append-only JSONL store of result records (built by :mod:`.records`, read for
analysis through :mod:`.tidy`).

One JSON object per line, written with a single ``write`` and fsync'd, so a crash can at
worst cut the last line; readers skip such a line with a warning and appenders start a
fresh line after it.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import fcntl
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cnn_deploy.errors import ResultsError

SCHEMA_VERSION = 1
DEFAULT_RESULTS = Path("results") / "bench.jsonl"
_APPENDED: dict[Path, int] = {}  # records this process appended, per file (for Ctrl-C's line)


def append(path: Path, record: dict[str, Any]) -> None:
    """Append one record as one line; never rewrites what is already there. A write that
    fails part-way (a full disk) is cut back off, so the file ends on a whole line."""
    line = json.dumps(record, separators=(",", ":"), allow_nan=True) + "\n"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("ab") as fh:
            # One writer at a time: two sweeps appending to one file never interleave lines.
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            end = fh.seek(0, os.SEEK_END)
            try:
                if end > 0 and not _ends_with_newline(path):
                    fh.write(b"\n")  # the previous writer crashed mid-line: start clean
                fh.write(line.encode())
                fh.flush()
                os.fsync(fh.fileno())
            except OSError:
                if path.is_file():
                    with contextlib.suppress(OSError):
                        os.truncate(path, end)  # no partial line left behind
                raise
    except OSError as exc:
        raise ResultsError(_write_failure(path, exc)) from None
    _APPENDED[path] = _APPENDED.get(path, 0) + 1


def appended() -> dict[Path, int]:
    """Records appended by this process so far, per file."""
    return dict(_APPENDED)


def _write_failure(path: Path, exc: OSError) -> str:
    reason = exc.strerror or str(exc)
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        fix = "free some space there or choose another --results file on another disk"
    elif exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        fix = "fix its permissions or choose another --results file"
    elif exc.errno == errno.EISDIR:
        fix = "it is a folder: give a .jsonl file path for --results"
    else:
        fix = "choose another --results file"
    return f"cannot append to {path} ({reason}): {fix}"


def check_writable(path: Path) -> None:
    """Fail early, with the fix, when ``path`` cannot take appended records: a folder, a file
    that cannot be opened for appending, or one that holds something other than JSON lines (a
    model, a video: appending would damage it)."""
    check_jsonl(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("ab"):
            pass
    except OSError as exc:
        raise ResultsError(_write_failure(path, exc)) from None


def check_jsonl(path: Path) -> None:
    """Refuse a file that holds something other than JSON lines (a model, a video)."""
    if path.is_file() and path.stat().st_size > 0 and not _looks_like_jsonl(path):
        raise ResultsError(f"{path} is not a JSON-lines results file (it would be damaged by "
                           "appending): choose a .jsonl path for --results")


def _looks_like_jsonl(path: Path) -> bool:
    """The first bytes are text starting with a JSON object (records start with '{')."""
    with path.open("rb") as fh:
        head = fh.read(4096)
    if b"\x00" in head:
        return False
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:  # a multi-byte character cut at 4096 is still text
        if exc.start < len(head) - 4:
            return False
        text = head[:exc.start].decode("utf-8")
    if not text.lstrip().startswith("{"):
        return False
    with path.open("rb") as fh:  # a JSON document that is not lines (an indented model file)
        first = fh.readline(64 << 20)
    if not first.endswith(b"\n"):
        return True  # one line, cut by a crash mid-write: appending starts a clean line
    try:
        record = json.loads(first)
    except (ValueError, RecursionError):
        return False
    return isinstance(record, dict) and "schema" in record


def _ends_with_newline(path: Path) -> bool:
    with path.open("rb") as fh:
        fh.seek(-1, os.SEEK_END)
        return fh.read(1) == b"\n"


@dataclass
class ReadResult:
    records: list[dict[str, Any]]
    skipped: list[str]  # one line each: where and why a line was skipped


def read(path: Path) -> ReadResult:
    """All records of a JSONL file; damaged lines are skipped and reported, never fatal."""
    if not path.is_file():
        raise ResultsError(f"no results file at {path}: run `cnndeploy bench` first")
    records, skipped = [], []
    with path.open("rb") as fh:
        for number, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            try:
                record = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
                skipped.append(f"{path}:{number}: not a complete JSON record (cut by a crash?)")
                continue
            if not isinstance(record, dict) or type(record.get("schema")) is not int:
                skipped.append(f"{path}:{number}: not a cnn_deploy record (no integer schema)")
                continue
            if record["schema"] > SCHEMA_VERSION:
                skipped.append(f"{path}:{number}: schema {record['schema']} is newer than this "
                               f"cnn_deploy understands ({SCHEMA_VERSION}): upgrade cnn_deploy")
                continue
            records.append(record)
    return ReadResult(records, skipped)


@dataclass
class MergeOutcome:
    written: int
    duplicates: int  # identical records dropped
    skipped: list[str]  # damaged lines left out


def merge(paths: Iterable[Path], out: Path, force: bool = False) -> MergeOutcome:
    """Join JSONL files into ``out`` (replaced atomically), dropping identical records;
    refuses files whose records carry different schema versions, and an existing ``out``
    that is not one of the inputs (its records would be lost) unless ``force``."""
    paths = list(paths)
    inputs = {p.resolve() for p in paths if p.exists()}
    if out.is_dir():
        raise ResultsError(f"-o {out} is a folder: give the merged file's path")
    if out.exists() and out.resolve() not in inputs and not force:
        raise ResultsError(f"{out} exists and is not one of the files merged: its records would "
                           f"be replaced; add it to the files to merge it too, or pass --force")
    schemas: dict[int, Path] = {}
    records: dict[str, dict[str, Any]] = {}
    skipped: list[str] = []
    duplicates = 0
    for path in paths:
        found = read(path)
        newer = [s for s in found.skipped if "is newer than" in s]
        if newer:
            raise ResultsError(f"cannot merge: {newer[0]}")
        if found.skipped and not found.records:  # a model, a video: nothing of ours in it
            raise ResultsError(f"{path} holds no cnn_deploy records ({len(found.skipped)} lines "
                               f"skipped, the first: {found.skipped[0]}): merge results files "
                               "that `cnndeploy bench`, `sweep` or `profile` wrote")
        skipped.extend(found.skipped)
        for record in found.records:
            schemas.setdefault(record["schema"], path)
            text = json.dumps(record, sort_keys=True, allow_nan=True)
            if text in records:
                duplicates += 1
            records.setdefault(text, record)
    if len(schemas) > 1:
        where = ", ".join(f"schema {v} ({p})" for v, p in sorted(schemas.items()))
        raise ResultsError(f"cannot merge records of different schema versions: {where}; "
                           "rerun the older sweep with this cnn_deploy, or merge like files only")
    tmp = out.with_name(out.name + ".tmp")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with tmp.open("wb") as fh:
            for record in records.values():
                fh.write((json.dumps(record, separators=(",", ":"), allow_nan=True) + "\n").encode())
            fh.flush()
            os.fsync(fh.fileno())
        tmp.replace(out)
    except OSError as exc:
        raise ResultsError(f"cannot write {out} ({exc.strerror}): choose another -o file") from None
    return MergeOutcome(len(records), duplicates, skipped)


def write_csv(rows: Iterable[dict[str, Any]], path: Path | None) -> str:
    """Flat rows as CSV; returns the text and writes it when ``path`` is given."""
    import io

    rows = list(rows)
    buffer = io.StringIO()
    if rows:
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    text = buffer.getvalue()
    if path is not None:
        path.write_text(text)
    return text
