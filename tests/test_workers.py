"""Fresh-process workers: a message channel that nothing a native library prints can break."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest

from cnn_deploy.backends import registry
from cnn_deploy.backends.base import Target
from cnn_deploy.bench.plan import BackendConfig, Plan
from cnn_deploy.bench.targets import resolve_target
from cnn_deploy.bench.timing import TimingConfig
from cnn_deploy.bench.workers import run_plan, run_worker
from cnn_deploy.errors import BenchError

# A worker whose "native code" writes to stdout before and between measurements, as TensorRT's
# default logger does (`[TRT] [W] ...` on std::cout), including lines that look like messages.
NOISY = """
import os, sys
os.write(1, b"[TRT] [W] a native library writes here\\n{not json\\n")
import cnn_deploy.bench.workers as w
real = w.run_cells
def noisy(*args, **kwargs):
    for cell in real(*args, **kwargs):
        os.write(1, b'{"cell": "not a measurement"}\\n')
        os.write(2, b"a warning on stderr\\n")
        yield cell
w.run_cells = noisy
sys.exit(w.main())
"""


@pytest.fixture(scope="module")
def plan() -> Iterator[Plan]:
    with resolve_target(None, "lenet_1c0f") as (target, _):
        ort = registry.get("onnxruntime")
        yield Plan(target, (BackendConfig("onnxruntime", ort.resolve({})),), (1, 4),
                   TimingConfig.quick())


def test_output_of_native_code_never_reaches_the_message_channel(plan: Plan) -> None:
    cells = list(run_worker(plan, 0, (sys.executable, "-c", NOISY)))
    assert [c.batch for c in cells] == [1, 4]
    assert all(c.stats.iterations >= 5 and c.backend == "onnxruntime" for c in cells)


def test_a_crashed_worker_reports_the_tail_of_what_it_printed(plan: Plan) -> None:
    crash = "import os, sys; os.write(1, b'native abort: out of cheese\\n'); sys.exit(3)"
    with pytest.raises(BenchError, match=r"process 1 failed \(exit 3\): native abort: out of cheese: "
                                         r"rerun it with --processes 0"):
        list(run_worker(plan, 0, (sys.executable, "-c", crash)))


def test_a_user_error_in_the_worker_is_one_project_error() -> None:
    bad = Plan(Target("ghost", None), (BackendConfig("onnxruntime", {}),), (1,),
               TimingConfig.quick())
    with pytest.raises(BenchError, match="onnxruntime needs an ONNX file; ghost has none"):
        list(run_plan(bad, 1))


def test_negative_processes_are_refused(plan: Plan) -> None:
    with pytest.raises(BenchError, match="--processes must be 0 or more"):
        list(run_plan(plan, -1))
