"""TensorRT layer names and layer information, mapped onto the thesis's operation categories.

Pure functions over strings and dicts; TensorRT is never imported. Two sources feed them:

- the names ``IProfiler.report_layer_time`` receives, which are the engine's layer names:
  fused layers join their parts with `` + `` (``conv1 + relu1``), pointwise fusions read
  ``PWN(...)``, format conversions ``Reformatting CopyNode for Input Tensor 0 to <layer>``
  (TREx's example graphs, Polygraphy's tests), regions handed to DLA or Myelin
  ``{ForeignNode[...]}`` (sampleCudla's README), inner names joined by ``...`` or `` + ``, and
  Myelin kernels ``__myl_DivMul_myl0_2`` (sampleEditableTimingCache's README);
- the engine inspector's JSON (``get_engine_information(LayerInformationFormat.JSON)``):
  ``{"Layers": [...], "Bindings": [...]}``, each layer a dict with ``Name``, ``LayerType``
  and, since TensorRT 8.6, ``Metadata`` naming the ONNX nodes (``[ONNX Layer: <node>]``,
  joined by the control characters U+001E/U+001F) when the engine was built with
  ``ProfilingVerbosity.DETAILED``; with ``LAYER_NAMES_ONLY`` each layer is just its name.

Categories are those of DESIGN.md (thesis eq. 13): conv, gemm, pool, elementwise, memory,
other, and fused for a layer whose parts fall in more than one of them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from cnn_deploy.errors import EngineError

CATEGORIES = ("conv", "gemm", "pool", "elementwise", "memory", "other", "fused")
COMPUTE = ("conv", "gemm", "pool", "elementwise")

# One lower-case word (a path segment, a snake_case part or a CamelCase part, trailing digits
# dropped) per ONNX op type, PyTorch op or module name, or TensorRT layer type. Checked in this
# order, so that e.g. the layer type CaskGemmConvolution is gemm, not conv.
_WORDS: tuple[tuple[str, str], ...] = (
    ("memory", r"reformat(ting)?|myelinreformat|copy(node)?|shuffle|reshape|flatten|view|tra|transpose"
               r"|permute|noop|identity|concat(enation)?|slice|gather|squeeze|unsqueeze|pad(ding)?|expand|tile"),
    ("gemm", r"gemm|matmul|matrixmultiply|fullyconnected|fc|linear|addmm|bmm|mm|dense"
             r"|caskgemmconvolution|caskflattenconvolution|gemmconvolution"),
    ("conv", r"conv(olution)?(\dd)?|caskconvolution|cudnnconvolution|cublasconvolution|convtranspose"
             r"|deconv(olution)?|caskdeconvolution(v2)?"),
    ("pool", r"[a-z]*pool(ing)?(\dd)?"),
    ("elementwise", r"relu|leakyrelu|prelu|elu|selu|gelu|silu|sigmoid|tanh|hardtanh|clip|clamp|add|sub|mul"
                    r"|div|pow|sqrt|exp|log|erf|neg|abs|cast|pwn|pointwise(v\d)?|caskpointwise|elementwise"
                    r"|activation|scale|batchnorm(alization)?|bn|bias|dropout|quantize"
                    r"|quantizelinear|dequantizelinear"),
    ("other", r"constant|weights?|softmax|logsoftmax|reduce[a-z]*|sum|mean|shape|signal|wait"
              r"|trainstation|topk|argmax"),
)
_MATCHERS = tuple((category, re.compile(pattern)) for category, pattern in _WORDS)
_PRIORITY = ("conv", "gemm", "pool", "memory", "elementwise", "other")  # within one name part

_REFORMAT_PREFIX = "Reformatting CopyNode for "
_MEMORY_LAYER_TYPES = {"reformat", "myelinreformat", "noop", "shuffle"}
_FOREIGN = re.compile(r"^\{ForeignNode\[(?P<inner>.*)\]\}$", re.S)
_PWN = re.compile(r"^PWN\((?P<inner>.*)\)$", re.S)
_ONNX_LAYER = re.compile(r"\[ONNX Layer: (?P<node>[^\]\x1e\x1f]*)\]")
_PROFILE_SUFFIX = re.compile(r"\s*\[profile \d+\]")
_ONELINE = re.compile(r"^Name: (?P<name>.*?), LayerType: (?P<type>[^,]*)")
_SEPARATORS = re.compile(r"[\x1e\x1f]")
_MYELIN_KERNEL = "__myl_"
_CAMEL = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|\d+")


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
    name = _clean(name)
    parameter_type = str(info.get("ParameterType") or "")  # TREx's layer type: Convolution, Pooling...
    types = {layer_type.lower(), parameter_type.lower()}
    if name.startswith(_REFORMAT_PREFIX) or types & _MEMORY_LAYER_TYPES:
        return "memory", ()
    nodes = tuple(onnx_layers) or onnx_layer_names(info)
    foreign = _FOREIGN.match(name)
    parts = nodes or (_foreign_parts(foreign.group("inner")) if foreign else _top_level_parts(name))
    found = _unique(c for p in parts for c in _categories_of_part(p))
    if foreign or layer_type.lower() == "myelin":  # a Myelin region: what is inside, when named
        return ("fused", _compute_first(found)) if found else ("other", ())
    if not found:
        by_type = _category_of_words(layer_type) or _category_of_words(parameter_type)
        return (by_type or "other"), ()
    kept = _compute_first(found)
    return (kept[0], ()) if len(kept) == 1 else ("fused", kept)


def onnx_layer_names(info: Mapping[str, Any]) -> tuple[str, ...]:
    """The ONNX node names in a detailed layer's ``Metadata`` (empty without one)."""
    return tuple(m.group("node") for m in _ONNX_LAYER.finditer(str(info.get("Metadata") or "")))


def constituent_names(name: str, info: Mapping[str, Any] | None = None) -> tuple[str, ...]:
    """The original layers fused into a TensorRT layer: the ONNX nodes its ``Metadata`` names,
    else the parts of its name; none for a format conversion."""
    name = _clean(name)
    if name.startswith(_REFORMAT_PREFIX):
        return ()
    nodes = onnx_layer_names(info or {})
    if nodes:
        return nodes
    foreign = _FOREIGN.match(name)
    parts = _foreign_parts(foreign.group("inner")) if foreign else _top_level_parts(name)
    return tuple(n for p in parts for n in _unwrap_pwn(p))


def parse_layer_information(text: str) -> list[dict[str, Any]]:
    """The inspector's layer information as one dict per layer (at least a ``Name``).

    Accepts ``get_engine_information`` JSON (``{"Layers": [...], "Bindings": [...]}``, layers as
    dicts with DETAILED verbosity or as plain names with LAYER_NAMES_ONLY), one layer's
    ``get_layer_information`` JSON (a dict, or a JSON string of its name), and the ONELINE format
    (one layer per line: its name, or ``Name: ..., LayerType: ..., ...``). Bindings are left out.
    """
    stripped = text.strip()
    if not stripped:
        return []
    try:
        # strict=False: TensorRT writes raw U+001E/U+001F inside strings (NVIDIA/TensorRT#2779)
        doc = json.loads(stripped, strict=False)
    except json.JSONDecodeError:
        if stripped[0] in "{[":
            raise EngineError("TensorRT layer information is not valid JSON (truncated?): "
                              f"{stripped[:80]!r}") from None
        return [_oneline_layer(line.strip()) for line in stripped.splitlines() if line.strip()]
    if isinstance(doc, dict) and "Layers" in doc:
        layers = doc["Layers"]
    elif isinstance(doc, list):
        layers = doc
    else:
        layers = [doc]
    if not isinstance(layers, list):
        raise EngineError(f"TensorRT layer information has 'Layers' of type {type(layers).__name__}, "
                          "not a list")
    out: list[dict[str, Any]] = []
    for layer in layers:
        if isinstance(layer, str):
            out.append({"Name": layer})
        elif isinstance(layer, dict) and isinstance(layer.get("Name"), str):
            out.append(dict(layer))
        else:
            raise EngineError(f"TensorRT layer information holds a layer without a name: {str(layer)[:80]}")
    return out


# -- helpers ----------------------------------------------------------------------------------------
def _oneline_layer(line: str) -> dict[str, Any]:
    """One ONELINE line: the bare name (names only), or with DETAILED verbosity
    ``Name: matMul1_myl0_0, LayerType: gemm, Inputs: [...], ..., Metadata: ...``
    (samples/sampleEditableTimingCache/README.md)."""
    detailed = _ONELINE.match(line)
    if detailed is None:
        return {"Name": line}
    layer: dict[str, Any] = {"Name": detailed.group("name"), "LayerType": detailed.group("type")}
    metadata = line.partition(", Metadata: ")[2]
    if metadata:
        layer["Metadata"] = metadata
    return layer


def _clean(name: str) -> str:
    """Drop the ``[profile N]`` suffix of later optimisation profiles; control separators -> ' + '."""
    return _SEPARATORS.sub(" + ", _PROFILE_SUFFIX.sub("", name)).strip()


def _top_level_parts(name: str) -> tuple[str, ...]:
    """Split on `` + `` outside brackets: ``a + PWN(b + c)`` -> ('a', 'PWN(b + c)')."""
    parts, depth, start, i = [], 0, 0, 0
    while i < len(name):
        ch = name[i]
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth = max(depth - 1, 0)
        elif depth == 0 and name.startswith(" + ", i):
            parts.append(name[start:i])
            start = i = i + 3
            continue
        i += 1
    parts.append(name[start:])
    return tuple(p.strip() for p in parts if p.strip())


def _foreign_parts(inner: str) -> tuple[str, ...]:
    """``a...b`` (the first and last layer of a Myelin region), or ``a + b``, into names."""
    return tuple(p for chunk in inner.split("...") for p in _top_level_parts(chunk))


def _categories_of_part(part: str) -> tuple[str, ...]:
    """What one part of a layer name computes: one category, or several for a Myelin kernel."""
    if _PWN.match(part):  # a pointwise fusion: every op inside is elementwise
        return ("elementwise",)
    if part.startswith(_MYELIN_KERNEL):  # '__myl_FcAddRelu': the fused ops, CamelCase-joined
        return _categories_of_words(part[len(_MYELIN_KERNEL):])
    segments = [s for s in re.split(r"[/.]", part) if s]
    if len(segments) > 1:  # '/features/conv0/Relu': the exporter's last segment is the op type
        last = _categories_of_words(segments[-1])
        if last:
            return last[:1]
    return _categories_of_words(part)[:1]


def _unwrap_pwn(part: str) -> tuple[str, ...]:
    """``PWN(PWN(a + b), c)`` -> ('a', 'b', 'c')."""
    pwn = _PWN.match(part)
    if pwn is None:
        return (part,)
    return tuple(n for p in _top_level_parts(pwn.group("inner").replace(", ", " + "))
                 for n in _unwrap_pwn(p))


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
