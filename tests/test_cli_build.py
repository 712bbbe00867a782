"""`cnndeploy build`: exit codes and one-line messages, on this machine and with a fake TensorRT."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from test_engine import H100, FakeTrt, _can_build_here, _relu_onnx
from typer.testing import CliRunner, Result

from cnn_deploy import engine
from cnn_deploy.cli import app

runner = CliRunner()


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)


def build(*args: Any, code: int) -> Result:
    result = runner.invoke(app, ["build", *map(str, args)])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    assert "Traceback" not in result.output
    assert result.exit_code == code, result.output
    return result


def error_line(result: Result) -> str:
    """The one `error:` line on stderr."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "error:" not in result.stdout
    return lines[0]


def test_help() -> None:
    result = build("--help", code=0)
    for option in ("--precision", "--min-batch", "--opt-batch", "--max-batch", "--timing-cache",
                   "--opt-level", "--workspace", "--version-compatible"):
        assert option in result.stdout


@pytest.mark.skipif(_can_build_here(), reason="this machine has a GPU and a TensorRT builder")
def test_build_here_says_what_is_missing_and_what_remains(tmp_path: Path) -> None:
    onnx = _relu_onnx(tmp_path / "models" / "tiny.onnx", None)
    message = error_line(build(onnx, code=1))
    assert re.search(r"no TensorRT builder|no NVIDIA GPU", message)
    assert "usable here: " in message and "torch (cpu)" in message
    assert not Path("engines").exists()


def test_invalid_batch_profile_names_the_rule() -> None:
    message = error_line(build("models/tiny.onnx", "--min-batch", 8, "--max-batch", 4, code=1))
    assert "min 8, opt 256, max 4" in message and "1 <= min <= opt <= max" in message


@pytest.mark.parametrize(("args", "match"), [
    (["--precision", "int8"], "fp32 or fp16"),
    (["--opt-level", "7"], "0..5"),
    (["--workspace", "0"], "MiB"),
    (["--min-batch", "0"], "1 <= min"),
])
def test_bad_options(args: list[str], match: str) -> None:
    assert match in error_line(build("models/tiny.onnx", *args, code=1))


def test_missing_onnx() -> None:
    assert "no ONNX file at models/none.onnx" in error_line(build("models/none.onnx", code=1))


def test_build_prints_plan_and_sidecar_summary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine, "_builder_and_gpu", lambda: (FakeTrt(weak_typing=True), (H100, (9, 0))))
    onnx = _relu_onnx(tmp_path / "models" / "lenet_1c1f.onnx", "fp32")
    result = build(onnx, "--max-batch", 1024, code=0)
    plan = Path("engines/nvidia-h100-80gb-hbm3-sm90/lenet_1c1f_fp32.plan")
    assert f"wrote {plan} (1000 bytes) and lenet_1c1f_fp32.json" in result.stdout
    assert f"fp32 engine for {H100} (sm_90), TensorRT 10.8.0.43, batch 1/256/1024" in result.stdout
    assert "TensorRT: a builder warning" in result.stderr
    assert json.loads(plan.with_suffix(".json").read_text())["max_batch"] == 1024


def test_fp16_of_an_fp32_graph_on_trt11_says_export_fp16(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine, "_builder_and_gpu", lambda: (FakeTrt(weak_typing=False), (H100, (9, 0))))
    onnx = _relu_onnx(tmp_path / "models" / "lenet_1c1f.onnx", "fp32")
    message = error_line(build(onnx, "--precision", "fp16", code=1))
    assert "cnndeploy export --fp16" in message and "lenet_1c1f_fp16.onnx" in message
