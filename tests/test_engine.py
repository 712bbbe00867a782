"""ONNX -> TensorRT plan: sidecar, names, compatibility checks, 10.x/11.x precision logic.

Everything above the GPU section runs without TensorRT: the builder code runs against a small
fake ``trt`` module that records what it was asked, and a test pins every TensorRT name the
module uses to ``engine.BUILDER_API``. The GPU section builds real engines.
"""

from __future__ import annotations

import ast
import json
import shlex
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from cnn_deploy import engine, jobs
from cnn_deploy.engine import (
    BuildOptions,
    Sidecar,
    build_engine,
    check_compatible,
    engine_path,
    gpu_slug,
    has_fast_fp16,
    network_flags,
    parser_errors,
    precision_plan,
    profile_shapes,
    read_sidecar,
    rebuild_command,
    write_sidecar,
)
from cnn_deploy.errors import EngineError
from cnn_deploy.files import file_sha256

H100 = "NVIDIA H100 80GB HBM3"
ORIN = "Orin"


def sidecar(**changes: Any) -> Sidecar:
    base = Sidecar(tensorrt_version="10.8.0.43", gpu_name=H100, compute_capability=(9, 0),
                   precision="fp16", min_batch=1, opt_batch=256, max_batch=4096,
                   source_onnx="models/lenet_3c1f_fp16.onnx", source_sha256="ab" * 32,
                   plan_bytes=4096, build_seconds=12.5)
    return replace(base, **changes)


def plan_with(tmp_path: Path, side: Sidecar | None, size: int = 4096) -> Path:
    plan = tmp_path / "engines" / "nvidia-h100-80gb-hbm3-sm90" / "lenet_3c1f_fp16.plan"
    plan.parent.mkdir(parents=True, exist_ok=True)
    plan.write_bytes(b"\x7f" * size)
    if side is not None:
        write_sidecar(plan, side)
    return plan


# -- sidecar and names ---------------------------------------------------------------------------
def test_sidecar_round_trips_through_json(tmp_path: Path) -> None:
    side = sidecar(opt_level=5, workspace_mib=512, timing_cache="cache.bin",
                   builder_warnings=("a warning",))
    plan = plan_with(tmp_path, side)
    assert plan.with_suffix(".json").is_file()
    assert read_sidecar(plan) == side
    raw = json.loads(plan.with_suffix(".json").read_text())
    assert raw["compute_capability"] == [9, 0] and raw["source_sha256"] == "ab" * 32


def test_missing_sidecar_reads_as_none(tmp_path: Path) -> None:
    assert read_sidecar(plan_with(tmp_path, None)) is None


@pytest.mark.parametrize("text", ["{not json", '{"gpu_name": "x"}', '{"compute_capability": 9}', "[]"])
def test_corrupt_sidecar_is_an_engine_error(tmp_path: Path, text: str) -> None:
    plan = plan_with(tmp_path, None)
    plan.with_suffix(".json").write_text(text)
    with pytest.raises(EngineError, match="not a readable engine sidecar"):
        read_sidecar(plan)


def test_sidecar_ignores_keys_from_newer_versions(tmp_path: Path) -> None:
    plan = plan_with(tmp_path, sidecar())
    raw = json.loads(plan.with_suffix(".json").read_text())
    plan.with_suffix(".json").write_text(json.dumps({**raw, "added_later": 1}))
    assert read_sidecar(plan) == sidecar()


def test_engine_path_names_net_precision_and_device() -> None:
    slug = "nvidia-h100-80gb-hbm3-sm90"
    assert engine_path(Path("models/lenet_3c1f.onnx"), "fp32", slug) == Path(
        "engines/nvidia-h100-80gb-hbm3-sm90/lenet_3c1f_fp32.plan")
    assert engine_path(Path("models/lenet_3c1f_fp16.onnx"), "fp16", slug, Path("/e")) == Path(
        "/e/nvidia-h100-80gb-hbm3-sm90/lenet_3c1f_fp16.plan")
    with pytest.raises(EngineError, match="fp32 or fp16"):
        engine_path(Path("a.onnx"), "int8", slug)


def test_gpu_slug() -> None:
    assert gpu_slug(H100, (9, 0)) == "nvidia-h100-80gb-hbm3-sm90"
    assert gpu_slug("NVIDIA GeForce GTX 960", (5, 2)) == "nvidia-geforce-gtx-960-sm52"
    assert gpu_slug("Orin (nvgpu)", (8, 7)) == "orin-nvgpu-sm87"


def test_rebuild_command_repeats_every_option() -> None:
    plain = rebuild_command(sidecar())
    assert plain == ("cnndeploy build models/lenet_3c1f_fp16.onnx --precision fp16 --min-batch 1 "
                     "--opt-batch 256 --max-batch 4096")
    full = shlex.split(rebuild_command(sidecar(source_onnx="my models/a.onnx", opt_level=4,
                                               workspace_mib=64, timing_cache="t.cache",
                                               version_compatible=True)))
    assert full[2] == "my models/a.onnx"
    assert full[full.index("--opt-level") + 1] == "4" and full[full.index("--workspace") + 1] == "64"
    assert full[full.index("--timing-cache") + 1] == "t.cache" and "--version-compatible" in full


# -- check_compatible --------------------------------------------------------------------------
def test_matching_plan_has_no_notes(tmp_path: Path) -> None:
    assert check_compatible(plan_with(tmp_path, sidecar()), "10.8.0.43", H100, (9, 0)) == []


def test_no_sidecar_is_a_note_not_an_error(tmp_path: Path) -> None:
    (note,) = check_compatible(plan_with(tmp_path, None), "10.8.0.43", H100, (9, 0))
    assert "no sidecar" in note and "cnndeploy build" in note


@pytest.mark.parametrize(("here", "differs"), [
    (("10.8.0.43", ORIN, (8, 7)), "GPU, compute capability differ"),
    (("10.8.0.43", "NVIDIA H100 PCIe", (9, 0)), "GPU differs"),
    (("10.9.0.34", H100, (9, 0)), "TensorRT version differs"),
    (("11.1.0.5", ORIN, (8, 7)), "GPU, compute capability, TensorRT version differ"),
])
def test_mismatch_names_both_sides_and_the_rebuild_command(tmp_path: Path, here: tuple[Any, ...],
                                                          differs: str) -> None:
    version, name, cc = here
    with pytest.raises(EngineError) as info:
        check_compatible(plan_with(tmp_path, sidecar()), version, name, cc)
    message = str(info.value)
    assert f"built for {H100} (sm_90) with TensorRT 10.8.0.43" in message
    assert f"this is {name} (sm_{cc[0]}{cc[1]}) with TensorRT {version}" in message
    assert f"({differs})" in message
    assert message.endswith("`" + rebuild_command(sidecar()) + "`")


def test_only_the_build_number_may_differ(tmp_path: Path) -> None:
    assert check_compatible(plan_with(tmp_path, sidecar()), "10.8.0.99", H100, (9, 0)) == []


def test_version_compatible_plan_loads_on_a_later_runtime(tmp_path: Path) -> None:
    plan = plan_with(tmp_path, sidecar(version_compatible=True))
    (note,) = check_compatible(plan, "10.9.0.34", H100, (9, 0))
    assert "version-compatible" in note and "host code" in note
    assert check_compatible(plan, "11.1.0.5", H100, (9, 0))  # 10.x version-compatible -> 11.x
    with pytest.raises(EngineError, match="TensorRT version differs"):
        check_compatible(plan, "10.7.0.23", H100, (9, 0))  # never on an older runtime


@pytest.mark.parametrize("size", [0, 10, engine.MIN_PLAN_BYTES - 1])
def test_tiny_plan_is_truncated(tmp_path: Path, size: int) -> None:
    with pytest.raises(EngineError, match="truncated"):
        check_compatible(plan_with(tmp_path, None, size), "10.8.0.43", H100, (9, 0))


def test_plan_shorter_than_its_sidecar_says_is_truncated(tmp_path: Path) -> None:
    plan = plan_with(tmp_path, sidecar(plan_bytes=8192), size=4096)
    with pytest.raises(EngineError, match=r"truncated.*4096 bytes, its sidecar says 8192.*cnndeploy build"):
        check_compatible(plan, "10.8.0.43", H100, (9, 0))


def test_missing_plan(tmp_path: Path) -> None:
    with pytest.raises(EngineError, match="no engine at"):
        check_compatible(tmp_path / "nothing.plan", "10.8.0.43", H100, (9, 0))


# -- build options -------------------------------------------------------------------------------
@pytest.mark.parametrize(("changes", "match"), [
    ({"min_batch": 8, "max_batch": 4}, "min <= opt <= max"),
    ({"min_batch": 0}, "1 <= min"),
    ({"opt_batch": 8192}, "min <= opt <= max"),
    ({"min_batch": -1, "opt_batch": -1, "max_batch": -1}, "1 <= min"),
    ({"precision": "int8"}, "fp32 or fp16"),
    ({"opt_level": 6}, "0..5"),
    ({"workspace_mib": 0}, "positive"),
])
def test_build_options_are_validated(changes: dict[str, Any], match: str) -> None:
    with pytest.raises(EngineError, match=match):
        BuildOptions(**changes)


def test_default_build_options_are_valid() -> None:
    options = BuildOptions()
    assert (options.min_batch, options.opt_batch, options.max_batch) == (1, 256, 4096)
    assert BuildOptions(min_batch=64, opt_batch=64, max_batch=64).opt_batch == 64


# -- precision: TensorRT 10.x (weak typing) vs 11.x (strongly typed only) -----------------------
TRT10 = SimpleNamespace(  # the names as 10.x spells them: BuilderFlag.FP16 exists
    BuilderFlag=SimpleNamespace(FP16=0, VERSION_COMPATIBLE=13),
    NetworkDefinitionCreationFlag=SimpleNamespace(EXPLICIT_BATCH=0, STRONGLY_TYPED=1))
TRT11 = SimpleNamespace(  # 11.x: no BuilderFlag.FP16; STRONGLY_TYPED kept but ignored
    BuilderFlag=SimpleNamespace(VERSION_COMPATIBLE=9),
    NetworkDefinitionCreationFlag=SimpleNamespace(STRONGLY_TYPED=0))


def test_trt10_fp16_from_an_fp32_graph_uses_the_builder_flag() -> None:
    plan = precision_plan(TRT10, "fp16", onnx_is_fp16=False)
    assert plan.fp16_flag and not plan.strongly_typed and plan.network_flags == 0


def test_trt10_fp16_graph_is_built_strongly_typed() -> None:
    plan = precision_plan(TRT10, "fp16", onnx_is_fp16=True)
    assert plan.strongly_typed and not plan.fp16_flag and plan.network_flags == 1 << 1
    assert network_flags(TRT10, strongly_typed=True) == 2 and network_flags(TRT10, False) == 0


def test_trt10_fp32() -> None:
    assert precision_plan(TRT10, "fp32", onnx_is_fp16=False) == (False, False, 0)


def test_trt11_is_always_strongly_typed_and_sets_no_flag() -> None:
    assert precision_plan(TRT11, "fp32", onnx_is_fp16=False) == (True, False, 0)
    assert precision_plan(TRT11, "fp16", onnx_is_fp16=True) == (True, False, 0)
    assert network_flags(TRT11, strongly_typed=True) == 0


def test_trt11_fp16_from_an_fp32_graph_says_export_fp16() -> None:
    with pytest.raises(EngineError) as info:
        precision_plan(TRT11, "fp16", onnx_is_fp16=False, onnx=Path("models/lenet_3c1f.onnx"))
    message = str(info.value)
    assert "cnndeploy export --fp16" in message and "models/lenet_3c1f_fp16.onnx" in message


@pytest.mark.parametrize("trt", [TRT10, TRT11], ids=["10.x", "11.x"])
def test_fp32_engine_from_an_fp16_graph_is_refused(trt: Any) -> None:
    with pytest.raises(EngineError, match="is an fp16 graph: build it with --precision fp16"):
        precision_plan(trt, "fp32", onnx_is_fp16=True)


@pytest.mark.parametrize(("cc", "fast"), [
    ((5, 2), False), ((5, 3), True), ((6, 0), True), ((6, 1), False), ((6, 2), True),
    ((7, 0), True), ((7, 5), True), ((8, 7), True), ((9, 0), True), ((12, 0), True)])
def test_fast_fp16_by_compute_capability(cc: tuple[int, int], fast: bool) -> None:
    assert has_fast_fp16(cc) is fast


def test_profile_shapes_keep_the_non_batch_dims() -> None:
    options = BuildOptions(min_batch=2, opt_batch=64, max_batch=512)
    assert profile_shapes("tiles", (-1, 1, 28, 28), options) == [(2, 1, 28, 28), (64, 1, 28, 28),
                                                                  (512, 1, 28, 28)]
    for dims in [(16, 1, 28, 28), (-1, 1, -1, 28), ()]:
        with pytest.raises(EngineError, match="dynamic first"):
            profile_shapes("tiles", dims, options)


class FakeParserError:
    def __init__(self, node: int, desc: str, code: str, name: str = "", op: str = "") -> None:
        self._node, self._desc, self._code, self._name, self._op = node, desc, code, name, op

    def node(self) -> int:
        return self._node

    def desc(self) -> str:
        return self._desc

    def code(self) -> Any:
        return SimpleNamespace(name=self._code)

    def node_name(self) -> str:
        return self._name

    def node_operator(self) -> str:
        return self._op


class FakeParser:
    def __init__(self, errors: list[FakeParserError], ok: bool = False) -> None:
        self.errors, self.ok = errors, ok

    @property
    def num_errors(self) -> int:
        return len(self.errors)

    def get_error(self, i: int) -> FakeParserError:
        return self.errors[i]

    def parse_from_file(self, path: str) -> bool:
        return self.ok


def test_parser_errors_are_listed_one_per_line() -> None:
    parser = FakeParser([
        FakeParserError(3, "No importer registered for op: Fancy", "UNSUPPORTED_NODE", "fancy_0", "Fancy"),
        FakeParserError(-1, "graph has no outputs", "INVALID_GRAPH"),
    ])
    assert parser_errors(parser) == [
        "node 3 'fancy_0' (Fancy): No importer registered for op: Fancy [UNSUPPORTED_NODE]",
        "node -1: graph has no outputs [INVALID_GRAPH]",
    ]


# -- the builder code against a fake tensorrt module ---------------------------------------------
class FakeTrt:
    """Just the TensorRT surface build_engine uses; records what it was asked."""

    def __init__(self, weak_typing: bool, built: bytes | None = b"\x01" * 1000,
                 parser: FakeParser | None = None) -> None:
        flags = {"FP16": 0} if weak_typing else {}
        self.BuilderFlag = SimpleNamespace(**flags, VERSION_COMPATIBLE=13, TF32=6)
        self.NetworkDefinitionCreationFlag = SimpleNamespace(STRONGLY_TYPED=1 if weak_typing else 0)
        self.MemoryPoolType = SimpleNamespace(WORKSPACE="workspace")
        self.__version__ = "10.8.0.43" if weak_typing else "11.1.0.5"
        severity = SimpleNamespace(INTERNAL_ERROR=0, ERROR=1, WARNING=2, INFO=3)
        self.ILogger = type("ILogger", (), {"Severity": severity, "__init__": lambda self: None})
        self.calls: dict[str, Any] = {"flags": [], "cleared": []}
        fake = self

        class Cache:
            def __init__(self, data: bytes) -> None:
                self.data = data

            def serialize(self) -> bytes:
                return self.data + b"+new timings"

        class Config:
            builder_optimization_level = 3

            def set_flag(self, flag: Any) -> None:
                fake.calls["flags"].append(flag)

            def clear_flag(self, flag: Any) -> None:
                fake.calls["cleared"].append(flag)

            def set_memory_pool_limit(self, pool: Any, size: int) -> None:
                fake.calls["pool"] = (pool, size)

            def add_optimization_profile(self, profile: Any) -> int:
                fake.calls["profile"] = profile.shapes
                return 0

            def create_timing_cache(self, data: bytes) -> Cache:
                fake.calls["cache_in"] = data
                self.cache = Cache(data)
                return self.cache

            def set_timing_cache(self, cache: Cache, ignore_mismatch: bool) -> bool:
                return True

            def get_timing_cache(self) -> Cache:
                return self.cache

        class Builder:
            def __init__(self, logger: Any) -> None:
                self.logger = logger

            def create_network(self, flags: int) -> Any:
                fake.calls["network_flags"] = flags
                tensor = SimpleNamespace(name="tiles", shape=(-1, 1, 28, 28))
                return SimpleNamespace(num_inputs=1, get_input=lambda i: tensor)

            def create_builder_config(self) -> Config:
                fake.config = Config()
                return fake.config

            def create_optimization_profile(self) -> Any:
                shapes: dict[str, Any] = {}
                return SimpleNamespace(shapes=shapes, set_shape=lambda n, *s: shapes.update({n: s}))

            def build_serialized_network(self, network: Any, config: Config) -> bytes | None:
                self.logger.log(severity.WARNING, "a builder warning")
                if built is None:
                    self.logger.log(severity.ERROR, "out of workspace")
                return built

        self.Builder = Builder
        self.OnnxParser = lambda network, logger: parser or FakeParser([], ok=True)


@pytest.fixture
def tiny_onnx(tmp_path: Path) -> Path:
    return _relu_onnx(tmp_path / "models" / "tiny.onnx", precision=None)


def _relu_onnx(path: Path, precision: str | None, op: str = "Relu") -> Path:
    import onnx
    from onnx import TensorProto, helper

    shape = ["batch", 1, 28, 28]
    graph = helper.make_graph([helper.make_node(op, ["tiles"], ["logits"])], "g",
                              [helper.make_tensor_value_info("tiles", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, shape)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    if precision:
        helper.set_model_props(model, {"cnn_deploy.precision": precision})
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def _use(monkeypatch: pytest.MonkeyPatch, trt: FakeTrt, gpu: tuple[str, tuple[int, int]]) -> None:
    monkeypatch.setattr(engine, "_builder_and_gpu", lambda: (trt, gpu))


def test_build_writes_plan_then_sidecar(monkeypatch: pytest.MonkeyPatch, tiny_onnx: Path,
                                        tmp_path: Path) -> None:
    trt = FakeTrt(weak_typing=True)
    _use(monkeypatch, trt, (H100, (9, 0)))
    monkeypatch.chdir(tmp_path)
    seen: list[str] = []
    options = BuildOptions(precision="fp16", min_batch=1, opt_batch=128, max_batch=1024,
                           opt_level=5, workspace_mib=256)
    plan, side = build_engine(tiny_onnx, options, progress=seen.append)
    assert plan == Path("engines/nvidia-h100-80gb-hbm3-sm90/tiny_fp16.plan")
    assert plan.read_bytes() == b"\x01" * 1000 and not plan.with_name(plan.name + ".part").exists()
    assert read_sidecar(plan) == side
    assert (side.gpu_name, side.compute_capability, side.tensorrt_version) == (H100, (9, 0), "10.8.0.43")
    assert (side.min_batch, side.opt_batch, side.max_batch, side.plan_bytes) == (1, 128, 1024, 1000)
    assert side.source_sha256 == file_sha256(tiny_onnx) and side.input_name == "tiles"
    assert side.builder_warnings == ("a builder warning",) and side.build_seconds is not None
    assert trt.calls["flags"] == [0] and trt.calls["network_flags"] == 0  # BuilderFlag.FP16
    assert trt.calls["cleared"] == [6] and side.tf32 is False  # BuilderFlag.TF32: on by default
    assert trt.calls["profile"] == {"tiles": ((1, 1, 28, 28), (128, 1, 28, 28), (1024, 1, 28, 28))}
    assert trt.calls["pool"] == ("workspace", 256 << 20) and trt.config.builder_optimization_level == 5
    assert seen and "TensorRT 10.8.0.43" in seen[-1]
    assert check_compatible(plan, "10.8.0.43", H100, (9, 0)) == []


def test_build_on_trt11_takes_fp16_from_the_graph(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    trt = FakeTrt(weak_typing=False)
    _use(monkeypatch, trt, (ORIN, (8, 7)))
    onnx = _relu_onnx(tmp_path / "lenet_1c1f_fp16.onnx", precision="fp16")
    _plan, side = build_engine(onnx, BuildOptions(precision="fp16"), out=tmp_path / "e.plan")
    assert trt.calls["flags"] == [] and trt.calls["network_flags"] == 0 and side.strongly_typed
    fp32 = _relu_onnx(tmp_path / "lenet_1c1f.onnx", precision="fp32")
    with pytest.raises(EngineError, match="export --fp16"):
        build_engine(fp32, BuildOptions(precision="fp16"), out=tmp_path / "f.plan")


def test_timing_cache_is_read_and_written_back(monkeypatch: pytest.MonkeyPatch, tiny_onnx: Path,
                                               tmp_path: Path) -> None:
    trt = FakeTrt(weak_typing=True)
    _use(monkeypatch, trt, (H100, (9, 0)))
    cache = tmp_path / "timing.cache"
    cache.write_bytes(b"old timings")
    options = BuildOptions(timing_cache=cache, version_compatible=True)
    build_engine(tiny_onnx, options, out=tmp_path / "a.plan")
    assert trt.calls["cache_in"] == b"old timings" and cache.read_bytes() == b"old timings+new timings"
    assert trt.calls["flags"] == [13]  # BuilderFlag.VERSION_COMPATIBLE


def test_parser_rejection_lists_its_errors(monkeypatch: pytest.MonkeyPatch, tiny_onnx: Path,
                                           tmp_path: Path) -> None:
    errors = [FakeParserError(0, "No importer registered for op: Fancy", "UNSUPPORTED_NODE", "f", "Fancy")]
    _use(monkeypatch, FakeTrt(weak_typing=True, parser=FakeParser(errors)), (H100, (9, 0)))
    with pytest.raises(EngineError, match=r"rejected .*tiny.onnx \(1 errors\): node 0 'f' \(Fancy\): "
                                          r"No importer registered for op: Fancy \[UNSUPPORTED_NODE\]"):
        build_engine(tiny_onnx, BuildOptions(), out=tmp_path / "a.plan")
    assert not (tmp_path / "a.plan").exists()


def test_failed_build_reports_the_logged_errors(monkeypatch: pytest.MonkeyPatch, tiny_onnx: Path,
                                                tmp_path: Path) -> None:
    _use(monkeypatch, FakeTrt(weak_typing=True, built=None), (H100, (9, 0)))
    with pytest.raises(EngineError, match=r"could not build .*: out of workspace"):
        build_engine(tiny_onnx, BuildOptions(), out=tmp_path / "a.plan")
    assert not (tmp_path / "a.plan").exists() and not (tmp_path / "a.json").exists()


def test_fp16_on_a_gpu_without_fast_fp16_is_refused(monkeypatch: pytest.MonkeyPatch, tiny_onnx: Path,
                                                    tmp_path: Path) -> None:
    _use(monkeypatch, FakeTrt(weak_typing=True), ("NVIDIA GeForce GTX 1080", (6, 1)))
    with pytest.raises(EngineError, match=r"GTX 1080 \(sm_61\) has no fast fp16.*--precision fp32"):
        build_engine(tiny_onnx, BuildOptions(precision="fp16"), out=tmp_path / "a.plan")


def test_onnx_precision_reads_metadata_then_weights(tmp_path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper

    assert engine.onnx_precision(_relu_onnx(tmp_path / "a.onnx", "fp16")) == "fp16"
    assert engine.onnx_precision(_relu_onnx(tmp_path / "b.onnx", None)) == "fp32"
    path = _relu_onnx(tmp_path / "c.onnx", None)
    model = onnx.load(str(path))
    model.graph.initializer.append(helper.make_tensor("w", TensorProto.FLOAT16, [1], [1.0]))
    onnx.save(model, str(path))
    assert engine.onnx_precision(path) == "fp16"


def _can_build_here() -> bool:
    try:
        import tensorrt
        import torch
    except Exception:
        return False
    return hasattr(tensorrt, "Builder") and bool(torch.cuda.is_available())


@pytest.mark.skipif(_can_build_here(), reason="this machine has a GPU and a TensorRT builder")
def test_build_without_gpu_or_builder_says_what_is_missing(tiny_onnx: Path) -> None:
    with pytest.raises(EngineError) as info:
        build_engine(tiny_onnx, BuildOptions())
    message = str(info.value)
    assert message.startswith("cannot build a TensorRT engine here: no ")
    assert "\n" not in message
    with pytest.raises(EngineError, match=r"usable here: torch \(cpu\)"):  # the job adds what is
        jobs.build(tiny_onnx, BuildOptions())


# -- BUILDER_API pins every TensorRT name engine.py touches --------------------------------------
TRACKED = {"trt": "", "builder": "Builder.", "config": "IBuilderConfig.", "network": "INetworkDefinition.",
           "parser": "OnnxParser.", "profile": "IOptimizationProfile.", "tensor": "ITensor.",
           "cache": "ITimingCache.", "error": "ParserError."}
RETURNS = {"IBuilderConfig.get_timing_cache": "ITimingCache."}


def _chain(node: ast.expr) -> tuple[str, list[str]] | None:
    """(prefix, [attr, ...]) for trt.A.B, config.x, or config.get_timing_cache().serialize."""
    attrs: list[str] = []
    while isinstance(node, ast.Attribute):
        attrs.insert(0, node.attr)
        node = node.value
    if isinstance(node, ast.Name) and node.id in TRACKED:
        return TRACKED[node.id], attrs
    if isinstance(node, ast.Call) and (inner := _chain(node.func)) and inner[1]:
        name = inner[0] + ".".join(inner[1])
        return (RETURNS[name], attrs) if name in RETURNS else None
    return None


def tensorrt_names_used(source: str) -> set[str]:
    tree = ast.parse(source)
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    used, consumed = set(), set()
    for node in ast.walk(tree):  # hasattr(trt.BuilderFlag, "FP16") uses BuilderFlag.FP16
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                and node.func.id in ("hasattr", "getattr") and isinstance(node.args[1], ast.Constant)
                and (found := _chain(node.args[0]))):
            used.add(found[0] + ".".join([*found[1], node.args[1].value]))
            consumed.add(node.args[0])
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and node not in consumed
                and not isinstance(parents.get(node), ast.Attribute) and (found := _chain(node))):
            used.add(found[0] + ".".join(found[1]))
    return used


def test_every_tensorrt_name_used_is_pinned_in_builder_api() -> None:
    used = tensorrt_names_used(Path(engine.__file__).read_text())
    assert used - set(engine.BUILDER_API) == set(), "TensorRT names used but not in BUILDER_API"
    assert set(engine.BUILDER_API) - used == set(), "BUILDER_API lists names the code no longer uses"
    assert {"BuilderFlag.FP16", "NetworkDefinitionCreationFlag.STRONGLY_TYPED",
            "Builder.build_serialized_network", "OnnxParser.get_error"} <= used


def test_the_api_check_sees_new_names() -> None:
    source = "def f(trt, config, x):\n    config.set_int8_calibrator(x)\n    hasattr(trt.BuilderFlag, 'INT8')"
    assert tensorrt_names_used(source) == {"IBuilderConfig.set_int8_calibrator", "BuilderFlag.INT8"}


LEAN_NAMES = ("__version__", "ILogger", "ILogger.__init__", "ILogger.Severity.INTERNAL_ERROR",
              "ILogger.Severity.ERROR", "ILogger.Severity.WARNING", "BuilderFlag.VERSION_COMPATIBLE",
              "MemoryPoolType.WORKSPACE", "BuilderFlag.TF32")




@pytest.mark.parametrize("major", ["10", "11"])
def test_runtime_side_names_exist_in_the_lean_runtime(major: str) -> None:
    """The builder names that also live in the runtime, checked in the real lean packages
    that scripts/setup.sh installs under .trt/<major> (in a subprocess, never the venv)."""
    from contracts import missing_names

    assert set(LEAN_NAMES) <= set(engine.BUILDER_API)
    result = missing_names(major, "tensorrt_lean", LEAN_NAMES)
    assert result["version"].split(".")[0] == major
    assert (result["missing"], result["builder"]) == ([], False)


# -- real TensorRT on a real GPU -----------------------------------------------------------------
def _untrained_onnx(folder: Path, fp16: bool) -> Path:
    from cnn_deploy.arch import NetSpec
    from cnn_deploy.export import _half_inside, export_module, raw_pixel_module

    spec = NetSpec.from_name("lenet_1c1f")
    module = raw_pixel_module(spec.build())
    name = f"{spec.name}_fp16.onnx" if fp16 else f"{spec.name}.onnx"
    meta = {"spec": spec.name, "precision": "fp16" if fp16 else "fp32", "trained": "false"}
    return export_module(_half_inside(module) if fp16 else module, folder / name, meta)


@pytest.mark.gpu
@pytest.mark.tensorrt
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_real_build_and_sidecar(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, precision: str) -> None:
    import tensorrt as trt
    import torch

    from cnn_deploy.bench.targets import resolve_target

    monkeypatch.chdir(tmp_path)
    name, cc = torch.cuda.get_device_name(0), torch.cuda.get_device_capability(0)
    with resolve_target(None, "lenet_1c1f") as (target, _notes):
        onnx = target.onnx if precision == "fp32" else _untrained_onnx(tmp_path, fp16=True)
        options = BuildOptions(precision=precision, min_batch=1, opt_batch=64, max_batch=512,
                               timing_cache=tmp_path / "timing.cache")
        plan, side = build_engine(onnx, options)
    assert plan == Path("engines") / gpu_slug(name, cc) / f"lenet_1c1f_{precision}.plan"
    assert read_sidecar(plan) == side and side.plan_bytes == plan.stat().st_size
    assert (side.gpu_name, side.compute_capability) == (name, tuple(cc))
    assert side.tensorrt_version == trt.__version__
    assert side.precision == precision and side.build_seconds and side.build_seconds > 0
    assert (tmp_path / "timing.cache").stat().st_size > 0
    assert check_compatible(plan, trt.__version__, name, cc) == []
    runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
    loaded = runtime.deserialize_cuda_engine(plan.read_bytes())
    assert loaded is not None
    assert [tuple(s) for s in loaded.get_tensor_profile_shape("tiles", 0)] == [
        (1, 1, 28, 28), (64, 1, 28, 28), (512, 1, 28, 28)]


@pytest.mark.gpu
@pytest.mark.tensorrt
def test_real_fp16_from_an_fp32_graph_depends_on_the_version(tmp_path: Path) -> None:
    import tensorrt as trt

    onnx = _untrained_onnx(tmp_path, fp16=False)
    options = BuildOptions(precision="fp16", max_batch=64, opt_batch=64)
    if hasattr(trt.BuilderFlag, "FP16"):  # 10.x: weak typing
        _plan, side = build_engine(onnx, options, out=tmp_path / "a.plan")
        assert not side.strongly_typed
    else:
        with pytest.raises(EngineError, match="export --fp16"):
            build_engine(onnx, options, out=tmp_path / "a.plan")


@pytest.mark.gpu
@pytest.mark.tensorrt
def test_real_parser_rejection_is_listed(tmp_path: Path) -> None:
    onnx = _relu_onnx(tmp_path / "odd.onnx", None, op="NoSuchOperator")
    with pytest.raises(EngineError, match=r"ONNX parser rejected .*odd.onnx .*: node 0.*NoSuchOperator"):
        build_engine(onnx, BuildOptions(), out=tmp_path / "odd.plan")


@pytest.mark.parametrize("tf32", [False, True])
def test_fp32_means_tf32_off_unless_asked(monkeypatch: pytest.MonkeyPatch, tiny_onnx: Path,
                                          tmp_path: Path, tf32: bool) -> None:
    trt = FakeTrt(weak_typing=False)
    _use(monkeypatch, trt, (H100, (9, 0)))
    plan, side = build_engine(tiny_onnx, BuildOptions(tf32=tf32), tmp_path / "tiny_fp32.plan")
    assert trt.calls["cleared"] == ([] if tf32 else [6])
    assert read_sidecar(plan) == side and side.tf32 is tf32
    assert ("--tf32" in rebuild_command(side)) is tf32


def test_engines_for_a_sweep_are_built_once_and_reused(monkeypatch: pytest.MonkeyPatch,
                                                      tmp_path: Path) -> None:
    trt = FakeTrt(weak_typing=False)
    _use(monkeypatch, trt, (H100, (9, 0)))
    root, models = tmp_path / "engines", tmp_path / "models"
    plan, built = engine.engine_for_spec("lenet_1c0f", "fp32", 256, root=root, models=models)
    assert built and plan == root / "nvidia-h100-80gb-hbm3-sm90" / "lenet_1c0f_fp32.plan"
    assert (models / "lenet_1c0f.onnx").is_file()
    side = read_sidecar(plan)
    assert side is not None and (side.min_batch, side.max_batch) == (1, 256)
    assert side.timing_cache == str(plan.parent / "timing.cache")  # one cache per GPU folder
    again, built = engine.engine_for_spec("lenet_1c0f", "fp32", 64, root=root, models=models)
    assert (again, built) == (plan, False)  # the profile covers 64: nothing to build
    _, built = engine.engine_for_spec("lenet_1c0f", "fp32", 1024, root=root, models=models)
    assert built  # a larger batch than the profile: rebuilt
    trained = (models / "lenet_1c0f.onnx").read_bytes()
    plan16, built = engine.engine_for_spec("lenet_1c0f", "fp16", 64, root=root, models=models)
    assert built and plan16.name == "lenet_1c0f_fp16.plan"
    assert (models / "lenet_1c0f_fp16.onnx").is_file()
    assert (models / "lenet_1c0f.onnx").read_bytes() == trained  # the fp32 file is left alone
    # a plan from before TF32 was recorded (TF32 on) is not an fp32 plan: rebuilt
    sidecar = plan.with_suffix(".json")
    sidecar.write_text(sidecar.read_text().replace('"tf32": false', '"tf32": null'))
    _, built = engine.engine_for_spec("lenet_1c0f", "fp32", 64, root=root, models=models)
    assert built
