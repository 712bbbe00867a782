"""TensorRT layer names and layer information -> operation categories; TrtRunner.profile_layers.

Every name below is in a format TensorRT itself produces; the comment on each group says where
that format is published. The CPU tests drive profile_layers against a stand-in for the few
TensorRT objects it touches; the GPU test builds and profiles a real engine.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from cnn_deploy.backends.base import LayerTime
from cnn_deploy.backends.trt_layers import constituent_names, onnx_layer_names, parse_layer_information
from cnn_deploy.errors import BenchError, EngineError
from cnn_deploy.profile.categories import CATEGORIES, category_of_trt_layer

NAMES = [
    # TREx example graph, trt-engine-explorer/examples/pytorch/resnet/A100/fp16/resnet.onnx.engine.graph.json
    # (NVIDIA/TensorRT v11.0): name, LayerType
    ("Reformatting CopyNode for Input Tensor 0 to Conv_0 + Relu_1", "Reformat", ("memory", ())),
    ("Conv_0 + Relu_1", "CaskConvolution", ("fused", ("conv", "elementwise"))),
    ("MaxPool_2", "CudaPooling", ("pool", ())),
    ("Conv_5 + Add_6 + Relu_7", "CaskConvolution", ("fused", ("conv", "elementwise"))),
    ("Conv_15", "CaskConvolution", ("conv", ())),
    ("GlobalAveragePool_46", "CaskPooling", ("pool", ())),
    ("Gemm_48", "CaskConvolution", ("gemm", ())),  # the ONNX op decides, not the kernel family
    ("reshape_after_Gemm_48", "NoOp", ("memory", ())),
    ("Reformatting CopyNode for Output Tensor 0 to reshape_after_Gemm_48", "Reformat", ("memory", ())),
    # trt-engine-explorer/tests/test_lint.py (v11.0): a QAT layer with a pointwise fusion
    ("features.1.conv.0.0.weight + QuantizeLinear_25 + Conv_29 + PWN(Clip_33)", None,
     ("fused", ("conv", "elementwise"))),
    # Polygraphy tests/tools/test_inspect.py and examples/cli/inspect/02_inspecting_a_tensorrt_engine
    ("PWN(node_of_z)", None, ("elementwise", ())),
    ("node_of_Y [profile 1]", "MyelinReformat", ("memory", ())),
    ("(Unnamed Layer* 0) [Shuffle]", None, ("memory", ())),
    # samples/sampleCudla/README.md: a DLA region
    ("{ForeignNode[(Unnamed Layer* 0) [ElementWise]]}", None, ("fused", ("elementwise",))),
    # samples/sampleEditableTimingCache/README.md: Myelin layers of TensorRT 10.8
    ("matMul1_myl0_0", "gemm", ("gemm", ())),
    ("__myl_TraMaxSubExpSum_myl0_1", None, ("elementwise", ())),
    ("__myl_DivMul_myl0_2", None, ("elementwise", ())),
    # NVIDIA/TensorRT#4020: trtexec --exportLayerInfo of resnet18-v1-7.onnx, names only
    ("resnetv15_conv0_fwd + resnetv15_batchnorm0_fwd + resnetv15_relu0_fwd + resnetv15_pool0_fwd", None,
     ("fused", ("conv", "pool", "elementwise"))),
    # cnn_deploy.export (torch.onnx dynamo) node names of lenet_3c1f, as TensorRT joins them
    ("node_conv2d + node_relu", None, ("fused", ("conv", "elementwise"))),
    ("node_max_pool2d", None, ("pool", ())),
    ("node_linear + node_relu_3", None, ("fused", ("gemm", "elementwise"))),
    ("node_linear_1", None, ("gemm", ())),
    ("node_Reshape_7", "Shuffle", ("memory", ())),
    ("{ForeignNode[node_Reshape_7...node_linear_1]}", "Myelin", ("fused", ("gemm",))),
    # the torch.onnx TorchScript exporter's path names: the last segment is the op
    ("/features/conv0/Relu", None, ("elementwise", ())),
    ("/fc1/Gemm", None, ("gemm", ())),
    # nothing to go on
    ("{ForeignNode[]}", "Myelin", ("other", ())),
    ("mystery_7", None, ("other", ())),
]


@pytest.mark.parametrize(("name", "layer_type", "want"), NAMES, ids=[n[0][:50] for n in NAMES])
def test_layer_names_map_onto_categories(name: str, layer_type: str | None,
                                         want: tuple[str, tuple[str, ...]]) -> None:
    assert category_of_trt_layer(name, layer_type) == want
    assert want[0] in CATEGORIES and set(want[1]) <= set(CATEGORIES)


def test_the_onnx_nodes_in_detailed_metadata_decide_over_the_name() -> None:
    """A Myelin kernel name says little; its Metadata names the ONNX nodes (U+001E-joined)."""
    layer = {"Name": "__myl_Fc_myl0_0", "LayerType": "kgen",
             "Metadata": "[ONNX Layer: node_linear]\x1e[ONNX Layer: node_relu_3]"}
    assert onnx_layer_names(layer) == ("node_linear", "node_relu_3")
    assert category_of_trt_layer(layer["Name"], metadata=layer) == ("fused", ("gemm", "elementwise"))
    assert category_of_trt_layer("anything", onnx_layers=("node_conv2d",)) == ("conv", ())


def test_the_layer_type_decides_when_no_name_does() -> None:
    assert category_of_trt_layer("mystery_7", "CaskConvolution") == ("conv", ())
    assert category_of_trt_layer("mystery_7", metadata={"LayerType": "x", "ParameterType": "Pooling"}) \
        == ("pool", ())
    assert category_of_trt_layer("mystery_7", metadata={"ParameterType": "Reformat"}) == ("memory", ())


def test_constituents_are_the_fused_layers_names() -> None:
    assert constituent_names("Conv_5 + Add_6 + Relu_7") == ("Conv_5", "Add_6", "Relu_7")
    assert constituent_names("conv1 + PWN(PWN(/act/Sigmoid), /act/Mul)") == ("conv1", "/act/Sigmoid",
                                                                              "/act/Mul")
    assert constituent_names("{ForeignNode[node_Reshape_7...node_linear_1]}") == ("node_Reshape_7",
                                                                                   "node_linear_1")
    assert constituent_names("Reformatting CopyNode for Input Tensor 0 to Conv_0 + Relu_1") == ()
    assert constituent_names("x", {"Metadata": "[ONNX Layer: a]\x1f[ONNX Layer: b]"}) == ("a", "b")


# -- the inspector's layer information ---------------------------------------------------------------
# get_engine_information(LayerInformationFormat.JSON) of a DETAILED build, written by hand after
# TREx's resnet.onnx.engine.graph.json (keys, values) with the TensorRT 8.6+ Metadata field, whose
# entries TensorRT joins with raw U+001E (trex/parser.py fix_metadata, NVIDIA/TensorRT#2779).
DETAILED = ('{"Layers": [{"Name": "Reformatting CopyNode for Input Tensor 0 to node_conv2d + node_relu", '
            '"LayerType": "Reformat", "Inputs": [{"Name": "tiles", "Location": "Device", '
            '"Dimensions": [64,1,28,28], "Format/Datatype": "Row major linear FP32"}], "Outputs": '
            '[{"Name": "Reformatted Input Tensor 0 to node_conv2d + node_relu", "Location": "Device", '
            '"Dimensions": [64,1,28,28], "Format/Datatype": "Channel major FP32 format"}], '
            '"ParameterType": "Reformat", "Origin": "REFORMAT", "TacticValue": "0x0000000000000000", '
            '"StreamId": 0, "Metadata": ""},\n'
            '{"Name": "node_conv2d + node_relu", "LayerType": "CaskConvolution", "ParameterType": '
            '"Convolution", "Kernel": [5,5], "OutMaps": 20, "Groups": 1, "HasReLU": 1, "TacticName": '
            '"sm90_xmma_fprop_implicit_gemm", "TacticValue": "0x1", "StreamId": 0, "Metadata": '
            '"[ONNX Layer: node_conv2d]\x1e[ONNX Layer: node_relu]"},\n'
            '{"Name": "node_max_pool2d", "LayerType": "CaskPooling", "ParameterType": "Pooling", '
            '"PoolingType": "MAX", "WindowSize": [2,2], "Metadata": "[ONNX Layer: node_max_pool2d]"}],\n'
            '"Bindings": ["tiles", "logits"]}')


def test_detailed_engine_information_gives_one_dict_per_layer() -> None:
    layers = parse_layer_information(DETAILED)
    assert [layer["Name"] for layer in layers] == [
        "Reformatting CopyNode for Input Tensor 0 to node_conv2d + node_relu", "node_conv2d + node_relu",
        "node_max_pool2d"]
    assert layers[1]["LayerType"] == "CaskConvolution" and layers[1]["Kernel"] == [5, 5]
    assert onnx_layer_names(layers[1]) == ("node_conv2d", "node_relu")
    assert [category_of_trt_layer(layer["Name"], metadata=layer) for layer in layers] == [
        ("memory", ()), ("fused", ("conv", "elementwise")), ("pool", ())]


def test_names_only_information_in_each_format() -> None:
    # trtexec --exportLayerInfo without --profilingVerbosity=detailed (NVIDIA/TensorRT#4020)
    names = ["Reformatting CopyNode for Input Tensor 0 to conv1 + relu1", "conv1 + relu1"]
    as_json = json.dumps({"Layers": names, "Bindings": ["input", "output"]})
    assert parse_layer_information(as_json) == [{"Name": n} for n in names]
    assert parse_layer_information("\n".join(names) + "\n") == [{"Name": n} for n in names]  # ONELINE
    assert parse_layer_information(json.dumps(names[1])) == [{"Name": names[1]}]  # one layer, names only
    assert parse_layer_information(json.dumps({"Name": "conv1", "LayerType": "CaskConvolution"})) == [
        {"Name": "conv1", "LayerType": "CaskConvolution"}]  # get_layer_information, DETAILED
    assert parse_layer_information("  ") == []


def test_oneline_detailed_lines_keep_name_and_type() -> None:
    # samples/sampleEditableTimingCache/README.md (TensorRT 10.8)
    line = ("Name: matMul1_myl0_0, LayerType: gemm, Inputs: [ { Name: input, Dimensions: [128,128], "
            "Format/Datatype: Float }], Outputs: [ { Name: __myln_k_arg__bb1_4, Dimensions: [128,128], "
            "Format/Datatype: Float }], TacticName: sm80_xmma_gemm_f32f32, StreamId: 0, Metadata: ")
    assert parse_layer_information(line) == [{"Name": "matMul1_myl0_0", "LayerType": "gemm"}]


@pytest.mark.parametrize(("text", "match"), [
    ('{"Layers": [{"Name": "conv1"', "not valid JSON"),
    ('{"Layers": {"Name": "conv1"}}', "not a list"),
    ('{"Layers": [{"LayerType": "Reformat"}]}', "without a name"),
])
def test_broken_layer_information_is_an_engine_error(text: str, match: str) -> None:
    with pytest.raises(EngineError, match=match):
        parse_layer_information(text)


# -- TrtRunner.profile_layers against a stand-in for TensorRT -----------------------------------------
class FakeContext:
    """Reports each layer's time to the profiler when asked, as reportToProfiler does."""

    def __init__(self, layers: list[tuple[str, float]]) -> None:
        self.layers, self.profiler, self.enqueue_emits_profile = layers, None, True
        self.enqueued = self.reported = 0

    def report_to_profiler(self) -> bool:
        if self.profiler is None or self.enqueue_emits_profile or self.reported >= self.enqueued:
            return False
        self.reported += 1
        for name, ms in self.layers:
            self.profiler.report_layer_time(name, ms * self.reported)
        return True


def _fake_runner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, inspector: bool) -> tuple[Any, FakeContext]:
    from cnn_deploy.backends.tensorrt import TrtRunner

    class IProfiler:
        def __init__(self) -> None:
            pass

    trt = SimpleNamespace(__name__="tensorrt", IProfiler=IProfiler,
                          LayerInformationFormat=SimpleNamespace(JSON="json"))
    if inspector:
        trt.EngineInspector = object
    context = FakeContext([("Reformatting CopyNode for Input Tensor 0 to node_conv2d + node_relu", 0.01),
                           ("node_conv2d + node_relu", 0.2), ("node_max_pool2d", 0.05)])
    runner = TrtRunner(tmp_path / "net.plan")
    seen: dict[str, Any] = {}

    def get_engine_information(fmt: str) -> str:
        seen["format"], seen["context"] = fmt, inspector_obj.execution_context
        return DETAILED

    inspector_obj = SimpleNamespace(execution_context=None, get_engine_information=get_engine_information)
    runner._trt, runner._context, runner._active = trt, context, True
    runner._engine = SimpleNamespace(create_engine_inspector=lambda: inspector_obj)
    runner._stream = SimpleNamespace(synchronize=lambda: None)
    monkeypatch.setattr(runner, "stage", lambda x: seen.setdefault("staged", x.shape))
    monkeypatch.setattr(runner, "_copy", lambda ios, kind: None)

    def execute() -> None:
        context.enqueued += 1

    monkeypatch.setattr(runner, "_execute", execute)
    runner.seen = seen
    return runner, context


def test_profile_layers_drops_the_warm_up_and_keeps_one_time_per_layer_per_run(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runner, context = _fake_runner(tmp_path, monkeypatch, inspector=True)
    times = runner.profile_layers(np.zeros((64, 1, 28, 28), np.float32), runs=2)
    assert context.enqueued == context.reported == 3  # warm-up + 2
    assert [(t.layer, t.run) for t in times] == [(name, run) for run in (0, 1) for name, _ in context.layers]
    assert times[1] == LayerTime("node_conv2d + node_relu", "CaskConvolution", 0.4, 0,
                                 ("node_conv2d", "node_relu"))  # 0.2 ms x report 2: run 0 is report 2
    assert times[0].constituents == () and times[0].op == "Reformat"
    assert runner.seen["format"] == "json" and runner.seen["context"] is context
    assert context.profiler is None and context.enqueue_emits_profile is True  # restored


def test_profile_layers_without_an_inspector_names_layers_from_their_names(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runner, _context = _fake_runner(tmp_path, monkeypatch, inspector=False)
    times = runner.profile_layers(np.zeros((8, 1, 28, 28), np.float32), runs=1)
    assert [(t.op, t.constituents) for t in times] == [("", ()), ("", ("node_conv2d", "node_relu")),
                                                        ("", ("node_max_pool2d",))]
    assert any("no engine inspector" in note for note in runner.notes)
    with pytest.raises(BenchError, match="at least 1 run"):
        runner.profile_layers(np.zeros((8, 1, 28, 28), np.float32), runs=0)


def test_a_failed_report_is_an_error_and_still_detaches_the_profiler(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from cnn_deploy.errors import BackendError

    runner, context = _fake_runner(tmp_path, monkeypatch, inspector=False)
    monkeypatch.setattr(context, "report_to_profiler", lambda: False)
    with pytest.raises(BackendError, match="no layer times"):
        runner.profile_layers(np.zeros((8, 1, 28, 28), np.float32), runs=1)
    assert context.profiler is None and context.enqueue_emits_profile is True


# -- a real engine on a real GPU --------------------------------------------------------------------
@pytest.mark.gpu
@pytest.mark.tensorrt
@pytest.mark.slow
def test_a_real_lenet_3c1f_profile_is_categorised(tmp_path: Path) -> None:
    from cnn_deploy.arch import NetSpec
    from cnn_deploy.backends.tensorrt import TrtRunner
    from cnn_deploy.engine import BuildOptions, build_engine
    from cnn_deploy.export import export_module, raw_pixel_module

    spec = NetSpec.from_name("lenet_3c1f")
    onnx = export_module(raw_pixel_module(spec.build()), tmp_path / f"{spec.name}.onnx",
                         {"spec": spec.name, "precision": "fp32", "trained": "false"})
    plan, _sidecar = build_engine(onnx, BuildOptions(min_batch=1, opt_batch=256, max_batch=256),
                                  tmp_path / f"{spec.name}_fp32.plan")
    x = np.random.default_rng(0).uniform(0, 255, (256, 1, 28, 28)).astype(np.float32)
    with TrtRunner(plan) as runner:
        times = runner.profile_layers(x, runs=3)
    assert {t.run for t in times} == {0, 1, 2}
    per_run = [[t.layer for t in times if t.run == r] for r in range(3)]
    assert per_run[0] == per_run[1] == per_run[2] and per_run[0]
    assert all(t.time_ms >= 0 for t in times) and any(t.op for t in times)  # inspector: DETAILED build
    labelled = [(category_of_trt_layer(t.layer, t.op, onnx_layers=t.constituents), t.time_ms) for t in times]
    total = sum(ms for _, ms in labelled)
    covered = sum(ms for (category, _), ms in labelled if category != "other")
    assert total > 0 and covered / total >= 0.95, labelled
    found = {c for (category, parts), _ in labelled for c in (category, *parts)}
    assert "conv" in found and "gemm" in found
