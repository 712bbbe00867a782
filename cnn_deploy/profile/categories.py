"""The one categoriser: every backend's per-layer names onto the thesis's operation categories.

Categories are DESIGN.md's (thesis eq. 13): ``conv``, ``gemm``, ``pool``, ``elementwise``,
``memory``, ``other``, and ``fused`` for a layer whose parts fall in more than one. One
word table covers ONNX op types (what ONNX Runtime reports), aten ops (torch), TensorRT layer
names and types, and OpenVINO node types, so the same ONNX op lands in the same category
whatever the backend: a ``Cast`` or a ``Reorder`` is memory everywhere, a ``Concat``,
``Gather``, ``Slice`` or ``Pad`` moves data and is memory everywhere.

:func:`categorise` takes a :class:`~cnn_deploy.backends.base.LayerTime` from any backend:
the ops or nodes fused into it (``constituents``) decide first, then its op type, then its
name (TensorRT's fused names such as ``conv1 + relu1`` or ``PWN(...)`` are split into parts).
Pure functions over strings; no backend is imported.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from cnn_deploy.backends.base import LayerTime
from cnn_deploy.backends.trt_layers import (
    FOREIGN,
    PWN,
    REFORMAT_PREFIX,
    clean_name,
    foreign_parts,
    onnx_layer_names,
    top_level_parts,
)

CATEGORIES = ("conv", "gemm", "pool", "elementwise", "memory", "other", "fused")
COMPUTE = ("conv", "gemm", "pool", "elementwise")

# One lower-case word (a path segment, a snake_case part or a CamelCase part, trailing digits
# dropped) per ONNX op type, PyTorch op or module name, or TensorRT layer type. Checked in this
# order, so that e.g. the layer type CaskGemmConvolution is gemm, not conv.
_WORDS: tuple[tuple[str, str], ...] = (
    ("memory", r"reformat(ting)?|myelinreformat|copy(node)?|shuffle|reshape|flatten|view|tra|transpose"
               r"|permute|noop|identity|concat(enation)?|slice|gather|squeeze|unsqueeze|pad(ding)?|expand|tile"
               r"|cast|convert|reorder(input|output)?|memcpy(tohost|fromhost)?|contiguous|clone|to|empty"
               r"|emptylike|t|unsafeview|strided|split|broadcast|input|output|parameter|result|cat|select"
               r"|index|stridedslice"),
    ("gemm", r"gemm|matmul|matrixmultiply|fullyconnected|fc|linear|addmm|bmm|mm|dense"
             r"|caskgemmconvolution|caskflattenconvolution|gemmconvolution|fusedmatmul|fusedgemm|innerproduct"),
    ("conv", r"conv(olution)?(\dd)?|caskconvolution|cudnnconvolution|cublasconvolution|convtranspose"
             r"|nchwcconv|fusedconv|mkldnnconvolution|groupconvolution|convolutionbackpropdata"
             r"|deconv(olution)?|caskdeconvolution(v2)?"),
    ("pool", r"[a-z]*pool(ing)?(\dd)?"),
    ("elementwise", r"relu|leakyrelu|prelu|elu|selu|gelu|silu|sigmoid|tanh|hardtanh|clip|clamp|add|sub|mul"
                    r"|div|pow|sqrt|exp|log|erf|neg|abs|pwn|eltwise|multiply|subtract|divide|power|clampmin|pointwise(v\d)?|caskpointwise|elementwise"
                    r"|activation|scale|batchnorm(alization)?|bn|bias|dropout|quantize"
                    r"|quantizelinear|dequantizelinear"),
    ("other", r"constant|weights?|softmax|logsoftmax|reduce[a-z]*|sum|mean|shape|signal|wait"
              r"|trainstation|topk|argmax"),
)
_MATCHERS = tuple((category, re.compile(pattern)) for category, pattern in _WORDS)
_PRIORITY = ("conv", "gemm", "pool", "memory", "elementwise", "other")  # within one name part

_MEMORY_LAYER_TYPES = {"reformat", "myelinreformat", "noop", "shuffle"}
_MYELIN_KERNEL = "__myl_"
_CAMEL = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|\d+")


def categorise(layer: LayerTime) -> tuple[str, tuple[str, ...]]:
    """(category, constituent categories) of one layer from any backend; constituents only
    when it is fused across more than one category."""
    name = clean_name(layer.layer)
    if _looks_fused(name) or layer.op.lower() in (*_MEMORY_LAYER_TYPES, "myelin"):
        return category_of_trt_layer(name, layer.op, onnx_layers=layer.constituents)
    if layer.constituents:
        found = _unique(c for part in layer.constituents for c in _categories_of_part(part))
        if not found:
            return op_category(layer.op), ()
        kept = _compute_first(found)
        return (kept[0], ()) if len(kept) == 1 else ("fused", kept)
    return (_op_category(layer.op) or _category_of_name(name) or "other"), ()


def op_category(op: str) -> str:
    """An op type from any backend ('Conv', 'aten::conv2d', 'FullyConnected', 'Reorder',
    'CaskConvolution') -> its category, 'other' when no word of it is known."""
    return _op_category(op) or "other"


def _op_category(op: str) -> str | None:
    """The whole op name first ('LogSoftmax', 'log_softmax' -> 'logsoftmax'), then its words."""
    if not op:
        return None
    name = op.split("::")[-1]
    return _word_category(re.sub(r"[^a-z0-9]", "", name.lower())) or _category_of_words(name)


def _category_of_name(name: str) -> str | None:
    found = _categories_of_part(name.split("#")[0])
    return found[0] if found else None


def _looks_fused(name: str) -> bool:
    return (" + " in name or name.startswith(REFORMAT_PREFIX) or bool(FOREIGN.match(name))
            or bool(PWN.match(name)) or name.startswith(_MYELIN_KERNEL))


def category_of_trt_layer(name: str, layer_type: str | None = None, metadata: Mapping[str, Any] | None = None,
                          onnx_layers: Sequence[str] = ()) -> tuple[str, tuple[str, ...]]:
    """(category, constituent categories) of one TensorRT layer; constituents only when fused.

    ``metadata`` is the inspector's dict for the layer (its ``LayerType`` and ``Metadata`` are
    used); ``onnx_layers`` the ONNX node names fused into it where they are known already (a
    LayerTime's ``constituents``). The ONNX names, else the parts of the layer name, decide; the
    layer type (then its ParameterType) decides only when no name does.

    >>> category_of_trt_layer("conv1 + relu1")
    ('fused', ('conv', 'elementwise'))
    """
    info = dict(metadata or {})
    layer_type = layer_type or str(info.get("LayerType") or "")
    name = clean_name(name)
    parameter_type = str(info.get("ParameterType") or "")  # TREx's layer type: Convolution, Pooling...
    types = {layer_type.lower(), parameter_type.lower()}
    if name.startswith(REFORMAT_PREFIX) or types & _MEMORY_LAYER_TYPES:
        return "memory", ()
    nodes = tuple(onnx_layers) or onnx_layer_names(info)
    foreign = FOREIGN.match(name)
    parts = nodes or (foreign_parts(foreign.group("inner")) if foreign else top_level_parts(name))
    found = _unique(c for p in parts for c in _categories_of_part(p))
    if foreign or layer_type.lower() == "myelin":  # a Myelin region: what is inside, when named
        return ("fused", _compute_first(found)) if found else ("other", ())
    if not found:
        by_type = _category_of_words(layer_type) or _category_of_words(parameter_type)
        return (by_type or "other"), ()
    kept = _compute_first(found)
    return (kept[0], ()) if len(kept) == 1 else ("fused", kept)


# -- helpers ----------------------------------------------------------------------------------------


def _categories_of_part(part: str) -> tuple[str, ...]:
    """What one part of a layer name computes: one category, or several for a Myelin kernel."""
    if PWN.match(part):  # a pointwise fusion: every op inside is elementwise
        return ("elementwise",)
    if part.startswith(_MYELIN_KERNEL):  # '__myl_FcAddRelu': the fused ops, CamelCase-joined
        return _categories_of_words(part[len(_MYELIN_KERNEL):])
    segments = [s for s in re.split(r"[/.]", part) if s]
    if len(segments) > 1:  # '/features/conv0/Relu': the exporter's last segment is the op type
        last = _categories_of_words(segments[-1])
        if last:
            return last[:1]
    return _categories_of_words(part)[:1]


def _category_of_words(text: str) -> str | None:
    """The highest-priority category any word of ``text`` names, or None."""
    found = _categories_of_words(text)
    return found[0] if found else None


def _categories_of_words(text: str) -> tuple[str, ...]:
    """Every category the words of ``text`` name, highest priority first."""
    hits: set[str] = set()
    for chunk in re.split(r"[^A-Za-z0-9]+", text):
        word = _word_category(chunk.lower().rstrip("0123456789"))
        if word is not None:
            hits.add(word)
            continue
        for camel in _CAMEL.findall(chunk):  # 'CaskPooling', 'MaxPool', 'FcAddRelu'
            found = _word_category(camel.lower())
            if found is not None:
                hits.add(found)
    return tuple(c for c in _PRIORITY if c in hits)


def _word_category(word: str) -> str | None:
    if not word:
        return None
    return next((category for category, pattern in _MATCHERS if pattern.fullmatch(word)), None)


def _compute_first(found: tuple[str, ...]) -> tuple[str, ...]:
    """A reshape or constant fused into a compute kernel costs no pass of its own: keep the
    compute categories when there are any, in CATEGORIES order."""
    ordered = tuple(c for c in CATEGORIES if c in found)
    return tuple(c for c in ordered if c in COMPUTE) or ordered


def _unique(items: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(items))
