"""OpenVINO's per-layer profile, read: running-mean snapshots of ``get_profiling_info()`` turned
back into per-run layer times, and the original ops each fused runtime node absorbed.

Pure functions over plain values (OpenVINO objects only in :func:`model_graph`); the openvino
backend uses them, the one categoriser reads the result.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from cnn_deploy.backends.base import LayerTime

# The OpenVINO ONNX frontend names a biased Conv's Convolution / a Gemm's MatMul
# "<node>/WithoutBiases" and the bias Add "<node>" (see fused_constituents).
WITHOUT_BIASES = "/WithoutBiases"


@dataclass(frozen=True)
class NodeMean:
    """One node of one ``get_profiling_info()`` snapshot: its running mean so far, in µs."""

    name: str
    op: str
    executed: bool
    mean_us: int


def openvino_layer_times(snapshots: Sequence[Sequence[NodeMean]],
                         constituents: dict[str, tuple[str, ...]], skip: int = 1) -> list[LayerTime]:
    """Running-mean snapshots (one after each inference) -> one LayerTime per node per run,
    the first ``skip`` runs dropped. Nodes that never ran (fused away: NOT_RUN, OPTIMIZED_OUT,
    always 0 µs) are left out; executed nodes are kept even at 0 µs, so the layers of a run
    add up to the whole inference.

    After ``k`` inferences the plugin reports ``m_k = T_k // k`` (``T_k`` the node's total µs),
    so ``T_k`` lies in ``[k m_k, k m_k + k - 1]``; its middle is the estimate, and run ``k``'s
    time is ``T_k - T_(k-1)`` (never below 0).
    """
    ran = {n.name for snap in snapshots for n in snap if n.executed or n.mean_us > 0}
    out: list[LayerTime] = []
    previous: dict[str, float] = {}
    for k, snap in enumerate(snapshots, start=1):
        for node in snap:
            if node.name not in ran:
                continue
            total = k * node.mean_us + (k - 1) / 2.0
            if k > skip:
                spent_us = max(0.0, total - previous.get(node.name, 0.0))
                out.append(LayerTime(node.name, node.op, spent_us / 1000.0, k - 1 - skip,
                                     constituents.get(node.name, ())))
            previous[node.name] = total
    return out


def fused_constituents(runtime: Iterable[tuple[str, str]],
                       original: dict[str, tuple[str, tuple[str, ...]]]) -> dict[str, tuple[str, ...]]:
    """Runtime node -> the original op types fused into it (in graph order), for nodes that
    fused several; e.g. ``("Convolution", "Relu")`` or ``("MatMul", "Relu")``: a bias Add
    counts as part of its Conv or Gemm, as the ONNX op it came from holds the bias.

    ``runtime`` is (node name, its ``originalLayersNames`` rt_info) per node of
    ``CompiledModel.get_runtime_model()``; those names are ops of the ``openvino.Model`` that
    was compiled, and ``original`` gives each op's type and the ops feeding it, in graph
    order (:func:`model_graph`).

    The CPU plugin's FullyConnected lists only the bias Add it absorbed, not the MatMul under
    it, which the ONNX frontend names ``<node>/WithoutBiases`` (as it names a biased Conv's
    Convolution). So the ops listed by no node that feed a listed op through ops listed by
    no node are searched for such a ``*/WithoutBiases`` op and for bias Adds, which are
    counted in; the Gemm's alpha/beta Multiplies (by 1, folded away) and the bias's shape
    arithmetic are not.
    """
    order = {name: i for i, name in enumerate(original)}
    lists = [(node, [n.strip() for n in names.split(",") if n.strip()]) for node, names in runtime]
    listed = {n for _, names in lists for n in names}
    out: dict[str, tuple[str, ...]] = {}
    for node, names in lists:
        members = {n for n in names if n in original}
        for name in list(members):
            members.update(_lost_members(name, original, listed))
        # The bias Add the frontend split off a Conv or Gemm (fed by its '<node>/WithoutBiases'
        # op, directly or through the Gemm's alpha Multiply) is part of that ONNX op, as in
        # every other backend.
        cores = {n for n in members if n.endswith(WITHOUT_BIASES)}
        members -= {n for n in members if original[n][0] == "Add"
                    and _fed_by(n, cores, members, original)}
        types = tuple(original[n][0] for n in sorted(members, key=order.__getitem__))
        if len(types) > 1:
            out[node] = types
    return out


def _fed_by(name: str, cores: set[str], members: set[str],
            original: dict[str, tuple[str, tuple[str, ...]]]) -> bool:
    """Whether ``name`` is fed by one of ``cores`` through ops outside ``members``."""
    stack, seen = list(original[name][1]), set()
    while stack:
        producer = stack.pop()
        if producer in cores:
            return True
        if producer in seen or producer in members or producer not in original:
            continue
        seen.add(producer)
        stack.extend(original[producer][1])
    return False


def _lost_members(name: str, original: dict[str, tuple[str, tuple[str, ...]]],
                  listed: set[str]) -> set[str]:
    """Unlisted ``*/WithoutBiases`` ops and Adds upstream of ``name`` through unlisted ops."""
    found: set[str] = set()
    stack = list(original[name][1])
    seen: set[str] = set()
    while stack:
        producer = stack.pop()
        if producer in seen or producer in listed or producer not in original:
            continue
        seen.add(producer)
        op_type, inputs = original[producer]
        if op_type in ("Constant", "Parameter"):
            continue
        if producer.endswith(WITHOUT_BIASES):
            found.add(producer)  # the layer's core op: nothing above it is this layer's
            continue
        if op_type == "Add":
            found.add(producer)
        stack.extend(inputs)
    return found


def model_graph(model: Any) -> dict[str, tuple[str, tuple[str, ...]]]:
    """An ``openvino.Model`` as {op name: (op type, names of the ops feeding it)}."""
    return {op.get_friendly_name(): (op.get_type_name(),
                                     tuple(op.input_value(i).get_node().get_friendly_name()
                                           for i in range(op.get_input_size())))
            for op in model.get_ordered_ops()}
