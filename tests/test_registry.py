"""The one backend registry: names, aliases, option schemas, probes and runner factories."""

from __future__ import annotations

import pytest

from cnn_deploy.backends import registry
from cnn_deploy.backends.base import Target
from cnn_deploy.errors import BackendError


def test_every_backend_is_listed_once_with_a_working_entry() -> None:
    names = registry.names()
    assert names[:2] == ("torch", "onnxruntime") and "tensorrt" in names
    assert len(set(names)) == len(names)
    for entry in registry.backends():
        assert entry.needs in ("onnx", "spec", "engine")
        assert entry.devices and set(entry.devices) <= {"cpu", "cuda"}
        assert [o.key for o in entry.options] == list(entry.resolve({}))  # defaults fill every key
        for row in entry.probe():  # one line each, usable or why not
            assert row.backend == entry.name and row.why and "\n" not in row.why


@pytest.mark.parametrize(("given", "name"), [("pytorch", "torch"), ("ORT", "onnxruntime"),
                                             ("onnx", "onnxruntime"), ("trt", "tensorrt"),
                                             (" tensorrt ", "tensorrt")])
def test_aliases(given: str, name: str) -> None:
    assert registry.get(given).name == name


def test_unknown_backend_names_every_backend_and_a_close_match() -> None:
    with pytest.raises(BackendError, match=r"unknown backend 'tensort': choose from torch, "
                                           r"onnxruntime.*tensorrt\. Did you mean 'tensorrt'\?"):
        registry.parse_backends("onnxruntime,tensort")
    with pytest.raises(BackendError, match="no backend given"):
        registry.parse_backends(" , ")
    assert registry.parse_backends("ort,torch,onnxruntime") == ["onnxruntime", "torch"]


def test_options_are_typed_and_checked_before_any_work() -> None:
    got = registry.parse_options(["ort.threads=1", "onnxruntime.opt_level=ALL",
                                  "torch.compile=yes", "torch.device=cuda:1",
                                  "tensorrt.cuda_graph=true", "onnxruntime.trt_cache=none"])
    assert got == {"onnxruntime": {"threads": 1, "opt_level": "all", "trt_cache": None},
                   "torch": {"compile": True, "device": "cuda:1"},
                   "tensorrt": {"cuda_graph": True}}


@pytest.mark.parametrize(("item", "says"), [
    ("onnxruntime.threads=-3", r"onnxruntime.threads=-3: must be at least 1"),
    ("onnxruntime.threads=two", r"onnxruntime.threads=two: expected an integer"),
    ("onnxruntime.thread=2", r"unknown option 'onnxruntime.thread'.*Did you mean "
                             r"'onnxruntime.threads'\?"),
    ("onnxruntime.opt_level=fast", r"not one of disable, basic, extended, all"),
    ("torch.memory_format=channel_last", r"Did you mean 'channels_last'\?"),
    ("torch.device=gpu", r"torch.device=gpu: use cpu, cuda or cuda:N"),
    ("torch.compile=maybe", r"expected true or false"),
    ("torch.threads=", r"torch.threads needs a value|must be at least|expected an integer"),
    ("tensorflow.threads=1", r"unknown backend 'tensorflow'"),
    ("onnxruntime.threads", r"BACKEND.KEY=VALUE"),
    ("threads=1", r"BACKEND.KEY=VALUE"),
])
def test_bad_options_are_refused_with_the_fix(item: str, says: str) -> None:
    with pytest.raises(BackendError, match=says):
        registry.parse_options([item])


def test_check_options_applies_the_same_schema_to_code() -> None:
    assert registry.check_options({"ort": {"threads": "2"}}) == {"onnxruntime": {"threads": 2}}
    with pytest.raises(BackendError, match=r"unknown option 'torch\.speed'"):
        registry.check_options({"torch": {"speed": 1}})


def test_the_baseline_is_torch_eager_nchw_on_the_device_asked() -> None:
    base = registry.baseline_backend()
    assert base.name == "torch" and base.baseline is not None
    assert base.resolve(base.baseline("cuda"))["device"] == "cuda"
    assert base.baseline("cpu")["memory_format"] == "contiguous"


def test_a_runner_needs_what_its_backend_loads() -> None:
    bare = Target("foreign")
    with pytest.raises(BackendError, match="torch needs the network's spec"):
        registry.runner("torch", bare)
    with pytest.raises(BackendError, match="onnxruntime needs an ONNX file"):
        registry.runner("onnxruntime", bare)
    with pytest.raises(BackendError, match=r"tensorrt needs a TensorRT engine \(`cnndeploy build`"):
        registry.runner("tensorrt", bare)


def test_every_backend_records_its_packages() -> None:
    packages = registry.packages()
    assert {"torch", "onnxruntime", "tensorrt"} <= set(packages)


def test_numbers_that_would_overflow_a_runtime_are_refused() -> None:
    for item in ("onnxruntime.threads=2147483648", "torch.threads=99999999999999999999",
                 "openvino.streams=100000"):
        with pytest.raises(BackendError, match="must be at most 4096"):
            registry.parse_options([item])


def test_probe_rows_are_matched_to_the_provider_asked_for() -> None:
    ort = registry.get("onnxruntime")
    cpu = registry.availability(ort, ort.resolve({}))
    assert cpu is not None and cpu.target == "CPUExecutionProvider"
    trt = registry.availability(ort, ort.resolve({"provider": "tensorrt"}))
    assert trt is not None and trt.target == "TensorrtExecutionProvider"
