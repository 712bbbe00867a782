"""Run a benchmark plan in fresh processes (``--processes N``) or in this one.

ONNX Runtime's 2-thread timings were bimodal across processes on a 2-core CPU (60 vs 139
tiles/ms for the same cell), so a figure from one process can mislead: each worker is a
fresh interpreter, started one after another, and the spread between them is reported.
Protocol: the plan as JSON on stdin; one JSON object per line on stdout, ``{"cell": ...}``
per finished cell, ``{"error": "..."}`` for a user error (exit 2).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator

from cnn_deploy.bench.plan import Measurement, Plan, run_cells
from cnn_deploy.errors import BenchError, CnnDeployError


def run_plan(plan: Plan, processes: int = 1) -> Iterator[Measurement]:
    """Yield cells as they finish; ``processes=0`` runs in this process (tests, debugging)."""
    if processes < 0:
        raise BenchError(f"--processes must be 0 or more, got {processes}")
    if processes == 0:
        yield from run_cells(plan)
        return
    for index in range(processes):
        yield from _run_worker(plan, index)


def _run_worker(plan: Plan, index: int) -> Iterator[Measurement]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "cnn_deploy.bench.workers"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    proc.stdin.write(json.dumps({"plan": plan.to_dict(), "process": index}))
    proc.stdin.close()
    error = None
    last_batch = None
    for line in proc.stdout:
        message = json.loads(line)
        if "cell" in message:
            cell = Measurement.from_dict(message["cell"])
            last_batch = cell.batch
            yield cell
        elif "error" in message:
            error = message["error"]
    stderr = proc.stderr.read()
    code = proc.wait()
    if error is not None:
        raise BenchError(error)
    if code == -signal.SIGKILL:
        after = f" after batch {last_batch}" if last_batch else ""
        raise BenchError(f"benchmark process {index + 1} was killed{after} (most likely out of "
                         "memory): use a smaller --batch")
    if code != 0:
        tail = "\n".join(stderr.strip().splitlines()[-15:])
        raise RuntimeError(f"benchmark process {index + 1} failed (exit {code}):\n{tail}")


def main() -> int:
    request = json.loads(sys.stdin.read())
    plan = Plan.from_dict(request["plan"])
    try:
        for cell in run_cells(plan, process=int(request["process"])):
            print(json.dumps({"cell": cell.to_dict()}), flush=True)
    except CnnDeployError as exc:
        print(json.dumps({"error": str(exc)}), flush=True)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
