"""Run a benchmark plan in fresh processes (``--processes N``) or in this one.

ONNX Runtime's 2-thread timings were bimodal across processes on a 2-core CPU (60 vs 139
tiles/ms for the same cell), so a figure from one process can mislead: each worker is a
fresh interpreter, started one after another, and the spread between them is reported.

Protocol: the plan as JSON on stdin; one JSON object per line on a pipe of its own (the file
descriptor named in ``$CNNDEPLOY_WORKER_FD``), ``{"cell": ...}`` per finished measurement,
``{"error": "..."}`` for a user error (exit 2). Not stdout: native libraries write there
(TensorRT's default logger prints ``[TRT] [W] ...`` to ``std::cout``, ONNX Runtime and
OpenVINO may log too), and a stray line must never be read as, or break, a message. The
worker's stdout and stderr go to one temporary file whose tail explains a crash.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence

from cnn_deploy.bench.plan import Measurement, Plan, run_cells
from cnn_deploy.errors import BenchError, CnnDeployError

FD_ENV = "CNNDEPLOY_WORKER_FD"
WORKER_COMMAND = (sys.executable, "-m", "cnn_deploy.bench.workers")


def run_plan(plan: Plan, processes: int = 1) -> Iterator[Measurement]:
    """Yield cells as they finish; ``processes=0`` runs in this process (tests, debugging)."""
    if processes < 0:
        raise BenchError(f"--processes must be 0 or more, got {processes}")
    if processes == 0:
        yield from run_cells(plan)
        return
    for index in range(processes):
        yield from run_worker(plan, index)


def run_worker(plan: Plan, index: int,
               command: Sequence[str] = WORKER_COMMAND) -> Iterator[Measurement]:
    """One fresh worker process for ``plan``: its measurements as they finish."""
    read_fd, write_fd = os.pipe()
    env = {**os.environ, "PYTHONUNBUFFERED": "1", FD_ENV: str(write_fd)}
    with tempfile.TemporaryFile(prefix="cnndeploy-worker-") as output:
        try:
            proc = subprocess.Popen(list(command), stdin=subprocess.PIPE, stdout=output,
                                    stderr=subprocess.STDOUT, env=env, pass_fds=(write_fd,))
        finally:
            os.close(write_fd)  # the child holds its copy: EOF on read_fd when it exits
        assert proc.stdin is not None
        try:
            with os.fdopen(read_fd, "r", encoding="utf-8") as messages:
                try:
                    proc.stdin.write(json.dumps({"plan": plan.to_dict(), "process": index}).encode())
                    proc.stdin.close()
                except BrokenPipeError:  # the worker died at start: its output says why
                    pass
                error, last_batch = None, None
                for line in messages:
                    message = json.loads(line)
                    if "cell" in message:
                        cell = Measurement.from_dict(message["cell"])
                        last_batch = cell.batch
                        yield cell
                    elif "error" in message:
                        error = message["error"]
        except BaseException:  # Ctrl-C, or the caller stopped early: no worker left running
            proc.kill()
            proc.wait()
            raise
        code = proc.wait()
        output.seek(0)
        tail = "\n".join(output.read().decode(errors="replace").strip().splitlines()[-15:])
    if error is not None:
        raise BenchError(error)
    if code == -signal.SIGKILL:
        after = f" after batch {last_batch}" if last_batch else ""
        raise BenchError(f"benchmark process {index + 1} was killed{after} (most likely out of "
                         "memory): use a smaller --batch")
    if code == -signal.SIGINT:
        raise KeyboardInterrupt
    if code != 0:
        raise BenchError(f"benchmark process {index + 1} failed (exit {code}): "
                         f"{_last_line(tail)}: rerun it with --processes 0 to see the error "
                         "in this process, and report it if it is not your model")


def _last_line(tail: str) -> str:
    """The line of a worker's output that says why it failed (the exception, not the stack)."""
    lines = [ln.strip() for ln in tail.splitlines() if ln.strip()]
    return (lines[-1] if lines else "no output")[:300]


def main() -> int:
    # Ctrl-C is the parent's: it stops at a cell boundary and kills this worker when it must.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    fd = int(os.environ[FD_ENV])
    request = json.loads(sys.stdin.read())
    plan = Plan.from_dict(request["plan"])
    with os.fdopen(fd, "w", encoding="utf-8") as channel:
        def send(message: dict[str, object]) -> None:
            channel.write(json.dumps(message) + "\n")  # one line, one write, then flushed
            channel.flush()

        try:
            for cell in run_cells(plan, process=int(request["process"])):
                send({"cell": cell.to_dict()})
        except CnnDeployError as exc:
            send({"error": str(exc)})
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
