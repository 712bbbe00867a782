"""The one categoriser: the same ONNX op lands in the same category whatever backend names it."""

from __future__ import annotations

import pytest

from cnn_deploy.backends.base import LayerTime
from cnn_deploy.profile.categories import CATEGORIES, categorise, op_category

# ONNX op -> (its category, how each backend's profiler names a layer that runs it:
# (layer name, op type, constituents)).
SAME_OPS = {
    "Conv": ("conv", {
        "onnxruntime": ("node_conv2d", "Conv", ()),
        "torch": ("aten::conv2d#0", "aten::conv2d", ()),
        "tensorrt": ("node_conv2d", "CaskConvolution", ("node_conv2d",)),
    }),
    "Gemm": ("gemm", {
        "onnxruntime": ("node_linear", "Gemm", ()),
        "torch": ("aten::linear#0", "aten::linear", ()),
        "tensorrt": ("node_linear", "CaskGemmConvolution", ("node_linear",)),
    }),
    "MaxPool": ("pool", {
        "onnxruntime": ("node_max_pool2d", "MaxPool", ()),
        "torch": ("aten::max_pool2d#0", "aten::max_pool2d", ()),
        "tensorrt": ("node_max_pool2d", "CaskPooling", ("node_max_pool2d",)),
    }),
    "Relu": ("elementwise", {
        "onnxruntime": ("node_relu", "Relu", ()),
        "torch": ("aten::relu#0", "aten::relu", ()),
        "tensorrt": ("PWN(node_relu)", "PointWiseV2", ()),
    }),
    "Reshape": ("memory", {
        "onnxruntime": ("node_Reshape_7", "Reshape", ()),
        "torch": ("aten::flatten#0", "aten::flatten", ()),
        "tensorrt": ("node_Reshape_7", "Shuffle", ("node_Reshape_7",)),
    }),
    "Cast": ("memory", {
        "onnxruntime": ("node_Cast_0", "Cast", ()),
        "torch": ("aten::to#0", "aten::to", ()),
        "tensorrt": ("node_Cast_0", "Cast", ("node_Cast_0",)),
    }),
    "Concat": ("memory", {
        "onnxruntime": ("node_cat", "Concat", ()),
        "torch": ("aten::cat#0", "aten::cat", ()),
        "tensorrt": ("node_cat", "Concatenation", ("node_cat",)),
    }),
    "Gather": ("memory", {
        "onnxruntime": ("node_index", "Gather", ()),
        "torch": ("aten::index_select#0", "aten::index_select", ()),
        "tensorrt": ("node_index", "Gather", ("node_index",)),
    }),
    "Slice": ("memory", {
        "onnxruntime": ("node_slice", "Slice", ()),
        "torch": ("aten::slice#0", "aten::slice", ()),
        "tensorrt": ("node_slice", "Slice", ("node_slice",)),
    }),
    "Pad": ("memory", {
        "onnxruntime": ("node_pad", "Pad", ()),
        "torch": ("aten::constant_pad_nd#0", "aten::constant_pad_nd", ()),
        "tensorrt": ("node_pad", "Padding", ("node_pad",)),
    }),
}


@pytest.mark.parametrize("onnx_op", SAME_OPS)
def test_the_same_onnx_op_lands_in_the_same_category_on_every_backend(onnx_op: str) -> None:
    want, names = SAME_OPS[onnx_op]
    got = {backend: categorise(LayerTime(layer, op, 1.0, 0, parts))
           for backend, (layer, op, parts) in names.items()}
    assert got == {backend: (want, ()) for backend in names}
    assert op_category(onnx_op) == want


def test_a_fused_conv_relu_is_the_same_fusion_on_every_backend() -> None:
    fused = ("fused", ("conv", "elementwise"))
    assert categorise(LayerTime("node_conv2d", "FusedConv", 1.0, 0, ("Conv", "Relu"))) == fused
    assert categorise(LayerTime("conv1 + relu1", "CaskConvolution", 1.0, 0)) == fused
    assert categorise(LayerTime("node_conv2d + node_relu", "", 1.0, 0,
                                ("node_conv2d", "node_relu"))) == fused


def test_unknown_names_are_other_and_categories_are_the_designs() -> None:
    assert categorise(LayerTime("mystery", "SomethingNew", 1.0, 0)) == ("other", ())
    assert CATEGORIES == ("conv", "gemm", "pool", "elementwise", "memory", "other", "fused")
