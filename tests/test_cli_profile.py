"""`cnndeploy profile` end to end through the CLI: tables, JSON, the family chart, errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from cnn_deploy.cli import app
from cnn_deploy.results.store import read

runner = CliRunner()
FAST = ["--batch", "8", "--runs", "2"]


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)


def cli(*args: Any, code: int = 0) -> Result:
    result = runner.invoke(app, ["profile", *(str(a) for a in args)])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"{result.output}") from result.exception
    assert "Traceback" not in result.output
    assert result.exit_code == code, f"exit {result.exit_code}, wanted {code}:\n{result.output}"
    return result


def test_layer_and_category_tables_and_the_record(tmp_path: Path) -> None:
    result = cli("--spec", "lenet_3c1f", *FAST, "--results", tmp_path / "r.jsonl")
    out = result.stdout
    assert "fused (deployed graph)" in out and "FusedConv" in out
    assert "fused (conv+elementwise)" in out and "conv1+relu_conv1" in out
    assert "per category" in out and "unprofiled run" in out
    assert "summed layer time" in result.stderr and "appended to" in result.stderr
    (record,) = read(tmp_path / "r.jsonl").records
    assert record["kind"] == "profile" and record["overhead_ratio"] > 0


def test_json_is_the_table() -> None:
    result = cli("--spec", "lenet_3c1f", "-b", "torch", *FAST, "--json", "--no-save")
    data = json.loads(result.stdout)
    rows = data["rows"]
    assert rows[0]["layer"] == "aten::conv2d#0" and rows[0]["category"] == "conv"
    assert data["profiles"][0]["graph"] == "unfused"
    assert sum(r["share"] for r in rows) == pytest.approx(1.0)
    assert not Path("results").exists()


def test_unfused_onnxruntime_table() -> None:
    out = cli("--spec", "lenet_3c1f", *FAST, "--unfused", "--csv", "--no-save").stdout
    ops = [line.split(",")[1] for line in out.splitlines()[1:]]
    assert ops.count("Conv") == 3 and ops.count("Relu") == 4 and "MaxPool" in ops
    assert "FusedConv" not in ops


def test_family_table_and_png(tmp_path: Path) -> None:
    result = cli("--spec", "lenet_{1..2}c1f", *FAST, "--unfused", "--no-save")
    assert "µs per tile by category" in result.stdout
    assert "lenet_1c1f" in result.stdout and "lenet_2c1f" in result.stdout
    png = tmp_path / "results" / "profile_lenet_1c1f-lenet_2c1f.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    cli("--spec", "lenet_1c1f,lenet_1c2f", *FAST, "--png", tmp_path / "f.png", "--no-save")
    assert (tmp_path / "f.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(("args", "match"), [
    (["--spec", "lenet_3c1f", "-b", "nosuch"], "unknown backend 'nosuch'"),
    (["--spec", "lenet_3c1f", "-b", "tensorrt"], "NVIDIA GPU|--engine"),
    (["--engine", "x.plan"], "NVIDIA GPU|no engine at x.plan"),
    (["--spec", "lenet_9x"], "lenet_9x"),
])
def test_bad_input_is_one_clear_line(args: list[str], match: str) -> None:
    import re

    result = cli(*args, code=1)
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), result.output
    assert re.search(match, lines[0])
