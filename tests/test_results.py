"""The JSONL store: append-only, crash-tolerant reading, clean appends after a cut line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cnn_deploy.errors import ResultsError
from cnn_deploy.results import records
from cnn_deploy.results import store as results


def _record(i: int) -> dict[str, object]:
    return records.make_record("bench", "run", {"batch": i, "samples_ms": [0.1, 0.2]},
                               {"kind": "cpu"}, {"numpy": "x"})


def test_append_and_read_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "r" / "bench.jsonl"
    for i in range(3):
        results.append(path, _record(i))
    read = results.read(path)
    assert [r["batch"] for r in read.records] == [0, 1, 2]
    assert read.skipped == []
    assert read.records[0]["schema"] == results.SCHEMA_VERSION
    assert {"device", "versions", "time_utc", "run_id"} <= set(read.records[0])


def test_a_line_cut_by_a_crash_is_skipped_and_appends_stay_clean(tmp_path: Path) -> None:
    path = tmp_path / "bench.jsonl"
    results.append(path, _record(0))
    whole = json.dumps(_record(1))
    with path.open("a") as fh:
        fh.write(whole[: len(whole) // 2])  # the process died mid-write
    results.append(path, _record(2))
    read = results.read(path)
    assert [r["batch"] for r in read.records] == [0, 2]
    assert len(read.skipped) == 1 and ":2:" in read.skipped[0]
    assert path.read_text().count("\n") == 3


def test_newer_schema_and_foreign_lines_are_reported(tmp_path: Path) -> None:
    path = tmp_path / "bench.jsonl"
    path.write_text('{"schema": 99}\n[1, 2]\n')
    read = results.read(path)
    assert read.records == []
    assert any("upgrade cnn_deploy" in s for s in read.skipped)
    assert any("not a cnn_deploy record" in s for s in read.skipped)


def test_unwritable_and_missing_files_are_user_errors(tmp_path: Path) -> None:
    with pytest.raises(ResultsError, match="cannot append"):
        results.append(tmp_path, _record(0))  # a directory
    with pytest.raises(ResultsError, match="no results file"):
        results.read(tmp_path / "nope.jsonl")


def test_csv(tmp_path: Path) -> None:
    text = results.write_csv([{"a": 1, "b": 2.5}, {"a": 3, "b": None}], tmp_path / "x.csv")
    assert text.splitlines() == ["a,b", "1,2.5", "3,"]
    assert (tmp_path / "x.csv").read_text() == text
