"""scripts/gpu-check.sh, the GPU evidence run, works end to end (here in its CPU dry run)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


# the camera pipeline steps run where OpenCV imports, else one "skipped" line
STREAM_STEPS = (["stream_video", "stream_model", "stream_torch"]
                if importlib.util.find_spec("cv2") else ["stream"])


@pytest.mark.slow
def test_the_gpu_check_dry_run_writes_a_summary_of_every_step(tmp_path: Path) -> None:
    env = {**os.environ, "OUT": str(tmp_path), "PYTHON": sys.executable}
    done = subprocess.run(["bash", str(REPO / "scripts" / "gpu-check.sh"), "--dry-run"], env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["ok"] and summary["seconds"] < 8 * 60
    assert [s["step"] for s in summary["steps"]] == [
        "environment", "backends", "gpu_tests", "cuda_plumbing", "bench_torch_graph_false",
        "bench_spec_family", "mini_sweep", "tensorrt", *STREAM_STEPS, "report"]
    sweep = [c for c in summary["cells"] if c["file"] == "sweep.jsonl"]
    assert len(sweep) == 10 and all(c["tiles_per_ms"] > 0 for c in sweep)
    assert summary["device"]["kind"] in ("cpu", "cuda")
    assert (tmp_path / "logs" / "mini_sweep.log").is_file()
    if STREAM_STEPS != ["stream"]:
        (stream,) = summary["streams"]
        assert stream["frames"] == 10 and stream["tiles_per_ms"] > 0
