"""TensorRT's layer names and its engine inspector's layer information, parsed.

Pure functions over strings and dicts (TensorRT is never imported); the tensorrt backend
uses them to name the ONNX nodes fused into each layer, and the one categoriser
(:mod:`cnn_deploy.profile.categories`) to split fused names. The formats:

- the names ``IProfiler.report_layer_time`` receives: fused layers join their parts with
  `` + `` (``conv1 + relu1``), pointwise fusions read ``PWN(...)``, format conversions
  ``Reformatting CopyNode for Input Tensor 0 to <layer>``, regions handed to DLA or Myelin
  ``{ForeignNode[...]}``, inner names joined by ``...`` or `` + ``, Myelin kernels ``__myl_...``;
- the inspector's JSON (``get_engine_information(LayerInformationFormat.JSON)``):
  ``{"Layers": [...], "Bindings": [...]}``, each layer a dict with ``Name``, ``LayerType``
  and, since TensorRT 8.6, ``Metadata`` naming the ONNX nodes (``[ONNX Layer: <node>]``,
  joined by U+001E/U+001F) when built with ``ProfilingVerbosity.DETAILED``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from cnn_deploy.errors import EngineError

REFORMAT_PREFIX = "Reformatting CopyNode for "
FOREIGN = re.compile(r"^\{ForeignNode\[(?P<inner>.*)\]\}$", re.S)
PWN = re.compile(r"^PWN\((?P<inner>.*)\)$", re.S)
_ONNX_LAYER = re.compile(r"\[ONNX Layer: (?P<node>[^\]\x1e\x1f]*)\]")
_PROFILE_SUFFIX = re.compile(r"\s*\[profile \d+\]")
_ONELINE = re.compile(r"^Name: (?P<name>.*?), LayerType: (?P<type>[^,]*)")
_SEPARATORS = re.compile(r"[\x1e\x1f]")


def onnx_layer_names(info: Mapping[str, Any]) -> tuple[str, ...]:
    """The ONNX node names in a detailed layer's ``Metadata`` (empty without one)."""
    return tuple(m.group("node") for m in _ONNX_LAYER.finditer(str(info.get("Metadata") or "")))


def constituent_names(name: str, info: Mapping[str, Any] | None = None) -> tuple[str, ...]:
    """The original layers fused into a TensorRT layer: the ONNX nodes its ``Metadata`` names,
    else the parts of its name; none for a format conversion."""
    name = clean_name(name)
    if name.startswith(REFORMAT_PREFIX):
        return ()
    nodes = onnx_layer_names(info or {})
    if nodes:
        return nodes
    foreign = FOREIGN.match(name)
    parts = foreign_parts(foreign.group("inner")) if foreign else top_level_parts(name)
    return tuple(n for p in parts for n in unwrap_pwn(p))


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


def clean_name(name: str) -> str:
    """Drop the ``[profile N]`` suffix of later optimisation profiles; control separators -> ' + '."""
    return _SEPARATORS.sub(" + ", _PROFILE_SUFFIX.sub("", name)).strip()


def top_level_parts(name: str) -> tuple[str, ...]:
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


def foreign_parts(inner: str) -> tuple[str, ...]:
    """``a...b`` (the first and last layer of a Myelin region), or ``a + b``, into names."""
    return tuple(p for chunk in inner.split("...") for p in top_level_parts(chunk))


def unwrap_pwn(part: str) -> tuple[str, ...]:
    """``PWN(PWN(a + b), c)`` -> ('a', 'b', 'c')."""
    pwn = PWN.match(part)
    if pwn is None:
        return (part,)
    return tuple(n for p in top_level_parts(pwn.group("inner").replace(", ", " + "))
                 for n in unwrap_pwn(p))
