"""Predict the tiles/ms of networks nobody has measured, from one device's sweep records.

Two forms, fitted to the same records by non-negative least squares on relative error:

- ``thesis``: eq. 13 of the thesis (§4.2, eq. 14-18): ms per tile = C1·FC + C2·FC·N² +
  C3·FC·N + C4·D·Σ out² + C5·D·Σ in² + C6·D²·Σ out² + C7, the sums over conv layers 2..C
  (``out``/``in``: a layer's output/input side), one figure per tile whatever the batch.
- ``additive``: nn-Meter's idea, a network's time is the sum of its layers' times. Per batch
  of B tiles: a fixed cost per call and per layer, the weights read once, and per operation
  category (the first conv, the other convs, gemm, pool, elementwise) B x its FLOPs and
  B x its activation bytes, from ``NetSpec.layer_costs``, plus B x the bytes a convolution
  unfolds into a GEMM (im2col), and the weight bytes beyond the device's last-level cache (read
  from DRAM each batch: what makes a wide FC layer slow at a tiny batch), a term fitted only
  when the records hold such cells (``DRAM_MIN_NETS`` nets at a batch of at most
  ``DRAM_MAX_BATCH`` with weights beyond the cache; `sweep --group coverage` measures some),
  otherwise zero. A backend that lays channels out in blocks (oneDNN, so OpenVINO on a CPU: 16
  floats per AVX-512 register) computes and stores each conv's channels rounded up to the
  block (a later conv reads its input's padded blocks too): the FLOPs that padding adds and
  the blocked output bytes are terms too. The block is the CPU's fp32 vector lanes the records
  name (``channel_block``); where they name none (a GPU, older records), the one of
  CHANNEL_BLOCKS (1: none) whose leave-one-net-out predictions rank best (``_block_rank``).

A prediction carries an interval: figure x e^(±q), q the 95th percentile of |ln(predicted /
measured)| over the fit's leave-one-net-out predictions; a net or batch outside the fitted
range gets a warning and twice that.
"""

from __future__ import annotations

import math
import re
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cnn_deploy.arch import BYTES_PER_ELEMENT, IN_CHANNELS, TILE, NetSpec
from cnn_deploy.errors import PredictError, SpecError
from cnn_deploy.results.tidy import Rows

SCHEMA = "cnn_deploy.latency_model/3"
FORMS = ("additive", "thesis")
MIN_NETS = 4  # distinct networks a fit needs
MIN_POINTS = 8  # (net, batch) cells a fit needs
MAX_FIGURE = 1e7  # tiles/ms: far above any device (an H200 peaks near 1e5 for lenet_1c0f)
MAX_BATCH = 1 << 20  # the largest batch a record or a prediction may speak of
OUTSIDE_FLOOR = math.log(1.2)  # outside the fitted range, the interval is at least 20 % wider
MAX_COEF = 1e9  # ms per unit of a term: far beyond any device, far below overflowing a sum
WORST_RATIO = 1000.0  # a left-out prediction of no time at all counts as this far off
RANGE_FIELDS = ("conv_layers", "fc_layers", "depth", "neurons", "kernel", "padding", "batch")
# The profile rows' weight in all, against the whole-net rows' (what a model predicts). On a
# 2-core EPYC, 0 to 3 moved the held-out shares by up to 10 points either way (benchmarks/
# README.md): the parts inform, the totals decide.
PROFILE_WEIGHT = 0.3
DRAM_MAX_BATCH = 8  # cells at batches up to this, with weights beyond the cache, tell the
DRAM_MIN_NETS = 2  # DRAM term apart from the compute terms; with fewer nets it stays zero
# Terms the thesis groups can tell apart (each column independent of the others over their
# cells): pooling's FLOPs are proportional to the bytes it moves, the first conv's unfolding
# to its FLOPs; every ReLU's bytes, and the later convs' activation bytes, are sums of the
# other terms there (and backends fuse the ReLU into the op before it): they have no term.
ADDITIVE_TERMS = ("call", "layers", "weight_MB", "weight_dram_MB", "conv1_MFLOP", "conv1_MB",
                  "conv1_pad_MFLOP", "conv_MFLOP", "conv_im2col_MB", "conv_pad_MFLOP",
                  "conv_blocked_MB", "gemm_MFLOP", "gemm_MB", "pool_MB")
# Channel blocks a model may pad to (1: none); a fit tries each where the records name no
# vector lanes. With the AVX-512 lanes (16) on a 2-core EPYC, OpenVINO's held-out cells within
# ±10 % went from 28-48 % to 52-78 % over three draws (benchmarks/README.md); ONNX Runtime's
# (no blocked layout at its 'extended' level) barely moved.
CHANNEL_BLOCKS = (1, 4, 8, 16, 32)
THESIS_TERMS = ("FC", "FC*N^2", "FC*N", "D*sum(out^2)", "D*sum(in^2)", "D^2*sum(out^2)", "C7")
# The thesis's own GTX960 constants (eq. 14-18, C7 = 9.8e-3), in THESIS_TERMS order: FC sums
# GpuDot22's 6.8e-6 and GpuElemwise's 4.9e-5; D*sum(in^2) sums GpuAlloc and GpuDnnPool.
THESIS_PUBLISHED = (6.8e-6 + 4.9e-5, 6.6e-11, 1.9e-7, 2.4e-7, 3.5e-8 + 8.2e-8, 3.03e-8, 9.8e-3)


@dataclass(frozen=True)
class Point:
    """One measured cell: the median tiles/ms of its records (passes, processes)."""

    spec: NetSpec
    batch: int
    tiles_per_ms: float
    figures: tuple[float, ...] = ()  # each record's tiles/ms


@dataclass(frozen=True)
class PartPoint:
    """One part of one profiled cell: the median time (ms per batch) of its layers over the
    profile records, scaled to the unprofiled run."""

    spec: NetSpec
    batch: int
    part: str  # one of PARTS
    ms: float
    share: float = 1.0  # its share of the profiled layers' time: its share of the call term


@dataclass(frozen=True)
class Source:
    """Which measurements a model speaks for: one device, one backend setting, one precision."""

    device: str
    backend: str  # the record's backend label, e.g. 'onnxruntime extended 2t'
    backend_name: str
    precision: str

    def describe(self) -> str:
        return f"{self.backend} ({self.precision}) on {self.device}"


# -- records -> points --------------------------------------------------------------
def sources(rows: Rows) -> dict[Source, list[dict[str, Any]]]:
    """Bench rows of named networks, by (device, backend setting, precision)."""
    out: dict[Source, list[dict[str, Any]]] = {}
    for r in rows:
        figure, batch = r.get("tiles_per_ms"), r.get("batch")
        if r.get("kind") != "bench" or isinstance(figure, bool) \
                or not isinstance(figure, (int, float)) or not 0 < figure < MAX_FIGURE \
                or isinstance(batch, bool) or not isinstance(batch, int) \
                or not 1 <= batch <= MAX_BATCH or not isinstance(r.get("net"), str):
            continue  # not a measurement a model can take (hand-edited, damaged, absurd)
        key = Source(str(r.get("device")), str(r.get("backend")), str(r.get("backend_name")),
                     str(r.get("precision") or "fp32"))
        out.setdefault(key, []).append(r)
    return out


def choose_source(rows: Rows, backend: str | None = None, device: str | None = None) -> Source:
    """The one source ``rows`` hold, or the one ``backend``/``device`` pick; several without a
    pick is an error listing them (a model speaks for one device and one backend setting)."""
    found = sources(rows)
    picked = [s for s in found
              if (backend is None or backend in (s.backend, s.backend_name))
              and (device is None or device == s.device)]
    listing = "; ".join(f"'{s.backend}' on {s.device} ({len(v)} records)"
                        for s, v in found.items())
    if not found:
        raise PredictError("no bench records of named networks to fit: give the results of "
                            "`cnndeploy sweep` (or `bench --spec`)")
    if not picked:
        raise PredictError(f"no records match --backend {backend!r} --device {device!r}: "
                            f"the files hold {listing}")
    if len(picked) > 1:
        raise PredictError(f"the records mix {len(picked)} devices or backend settings "
                            f"({listing}): a model speaks for one; choose with --backend LABEL "
                            "(or its backend name) and --device SLUG")
    return picked[0]


def points(rows: Rows, source: Source) -> list[Point]:
    """The median tiles/ms of each (net, batch) cell of ``source`` (names that are not of the
    family, e.g. a foreign ONNX file, are left out)."""
    cells: dict[tuple[NetSpec, int], list[float]] = {}
    for r in sources(rows).get(source, []):
        try:
            spec = NetSpec.from_name(r["net"])
        except SpecError:
            continue
        cells.setdefault((spec, r["batch"]), []).append(float(r["tiles_per_ms"]))
    return [Point(spec, batch, statistics.median(v), tuple(v))
            for (spec, batch), v in sorted(cells.items(), key=lambda kv: (kv[0][0].name, kv[0][1]))]


def part_points(rows: Rows, source: Source) -> list[PartPoint]:
    """The per-part times of ``source``'s profile records (`cnndeploy profile`: each layer's
    time, mapped to the network's layers), each record's times scaled by its unprofiled run
    over its summed layers (the profiler's own overhead out), so the parts carry the call's
    fixed cost too: each part row gets its share of the call term. A record whose layers do
    not name each of the net's layers exactly once (a mapping gone wrong), or whose layer
    spans two parts, is left out."""
    seen: set[tuple[Any, ...]] = set()
    cells: dict[tuple[NetSpec, int, str], list[tuple[float, float]]] = {}
    for r in rows:
        if r.get("kind") != "profile" or str(r.get("device")) != source.device \
                or str(r.get("backend")) != source.backend \
                or str(r.get("precision") or "fp32") != source.precision:
            continue
        key = (r.get("run_id"), r.get("net"), r.get("batch"))
        batch, scale = r.get("batch"), r.get("profile_scale")
        if key in seen or not isinstance(batch, int) or isinstance(batch, bool) \
                or not 1 <= batch <= MAX_BATCH or not isinstance(scale, float) \
                or not 0.2 < scale < 5.0 or not isinstance(r.get("net"), str):
            continue
        seen.add(key)
        try:
            spec = NetSpec.from_name(r["net"])
        except SpecError:
            continue
        times = _part_times(r.get("layer_times") or [], spec)
        total = sum(times.values()) if times else 0.0
        if not times or not total > 0 or not math.isfinite(total):
            continue
        for part, ms in times.items():
            if ms > 0:
                cells.setdefault((spec, batch, part), []).append((ms * scale, ms / total))
    return [PartPoint(spec, batch, part, statistics.median(m for m, _ in v),
                      statistics.median(f for _, f in v))
            for (spec, batch, part), v in sorted(cells.items(), key=lambda kv: (
                kv[0][0].name, kv[0][1], kv[0][2]))]


def _part_times(layers: Sequence[Any], spec: NetSpec) -> dict[str, float] | None:
    """Each part's summed layer time; None unless every conv, pool and FC layer of ``spec``
    is named by exactly one profiled layer and no profiled layer spans two parts."""
    out: dict[str, float] = {}
    named: list[str] = []
    for item in layers:
        try:
            names, ms = str(item[0]), float(item[1])
        except (TypeError, ValueError, IndexError):
            return None
        parts = {part_of(n) for n in names.split("+") if n}
        if not names or None in parts:
            continue  # a layer of no part (a reshape, a copy): not in the model's terms
        if len(parts) != 1 or not ms >= 0 or not math.isfinite(ms):
            return None
        named += [n for n in names.split("+") if not n.startswith("relu_")]
        part = parts.pop()
        assert part is not None
        out[part] = out.get(part, 0.0) + ms
    wanted = [c.layer for c in spec.layer_costs() if not c.layer.startswith("relu_")]
    return out if sorted(named) == sorted(wanted) else None


def cache_size(rows: Rows, source: Source) -> float | None:
    """The last-level cache (MB) the records of ``source`` name (the most common figure), or
    None where none does (records from before it was recorded)."""
    sizes = [r["cache_mb"] for r in sources(rows).get(source, [])
             if isinstance(r.get("cache_mb"), (int, float)) and 0 < r["cache_mb"] < 1e6]
    return statistics.mode(sizes) if sizes else None


def channel_block(rows: Rows, source: Source) -> int | None:
    """The channel block of ``source``'s device: its CPU's fp32 vector lanes (the most common
    figure its records name) where that is one of CHANNEL_BLOCKS, else None (a GPU, records
    from before it was recorded: the fit chooses)."""
    lanes = [r["simd_lanes"] for r in sources(rows).get(source, [])
             if r.get("simd_lanes") in CHANNEL_BLOCKS]
    return int(statistics.mode(lanes)) if lanes else None


# -- features ----------------------------------------------------------------------------
def additive_features(spec: NetSpec, batch: int, cache_mb: float | None = None,
                      block: int = 1) -> list[float]:
    """ADDITIVE_TERMS for one batch: the model's time (ms) is their dot product with the
    coefficients. Per batch: one call, and per layer part (``part_features``, which this sums)
    its layers, its weights, read once, and its share of the weights beyond a last-level cache
    of ``cache_mb`` (None: unknown, no such term); per tile: FLOPs and the activation bytes
    each category moves, the bytes a CPU convolution unfolds into a GEMM (im2col), and what
    a channel ``block`` pads (1: nothing)."""
    total = np.zeros(len(ADDITIVE_TERMS))
    total[0] = 1.0
    for row in part_features(spec, batch, cache_mb, block).values():
        total += row
    return [float(v) for v in total]


PARTS = ("conv1", "conv", "gemm", "pool")  # the layer parts a profile record times apart


def part_of(layer: str) -> str | None:
    """The part of one of ``NetSpec.layer_costs``' layers (a ReLU goes with the layer it
    follows, as backends fuse it): conv1, conv (the later convs), gemm, pool; else None."""
    name = layer.removeprefix("relu_")
    if name == "conv1":
        return "conv1"
    if re.fullmatch(r"conv\d+", name):
        return "conv"
    if re.fullmatch(r"fc\d+", name) or name == "classifier":
        return "gemm"
    return "pool" if name == "pool" else None


def part_features(spec: NetSpec, batch: int, cache_mb: float | None = None, block: int = 1
                  ) -> dict[str, np.ndarray]:
    """ADDITIVE_TERMS of each part's layers alone (no call term): a profile record's time of
    that part is their dot product with the coefficients. Per tile: FLOPs and activation bytes
    per category, for the later convs the bytes they unfold into a GEMM (im2col: each output
    position's receptive field, out² x in-channels x k² elements), and with a channel
    ``block`` > 1 the FLOPs its padding adds (output channels rounded up to the block; a later
    conv's input channels too) and each conv's output bytes so laid out."""
    rows = {part: np.zeros(len(ADDITIVE_TERMS)) for part in PARTS}
    col = {t: i for i, t in enumerate(ADDITIVE_TERMS)}
    sides = spec.conv_sides()
    blocked = -(-spec.depth // block) * block  # each conv's output channels, rounded up
    weights = 0.0
    for cost in spec.layer_costs():
        part = part_of(cost.layer)
        assert part is not None, cost.layer  # every layer of the family has a part
        row = rows[part]
        weight_bytes = float(BYTES_PER_ELEMENT * cost.params)
        weights += weight_bytes
        row[col["layers"]] += 1.0
        row[col["weight_MB"]] += weight_bytes / 1e6
        category = "conv1" if cost.layer == "conv1" else cost.category
        if f"{category}_MFLOP" in col:
            row[col[f"{category}_MFLOP"]] += batch * cost.flops / 1e6
        if f"{category}_MB" in col:
            row[col[f"{category}_MB"]] += batch * (cost.bytes - weight_bytes) / 1e6
        if cost.category != "conv":
            continue
        side = sides[int(cost.layer.removeprefix("conv")) - 1]
        if part == "conv":
            row[col["conv_im2col_MB"]] += batch * side * side * spec.depth * spec.kernel**2 \
                * BYTES_PER_ELEMENT / 1e6
        if block > 1:
            # the image's one channel is not blocked; a later conv reads the padded blocks
            inputs, padded_inputs = (IN_CHANNELS, IN_CHANNELS) if cost.layer == "conv1" \
                else (spec.depth, blocked)
            row[col[f"{category}_pad_MFLOP"]] += batch * 2 * side * side * spec.kernel**2 \
                * (blocked * padded_inputs - spec.depth * inputs) / 1e6
            row[col["conv_blocked_MB"]] += batch * side * side * blocked * BYTES_PER_ELEMENT / 1e6
    beyond = max(0.0, weights / 1e6 - cache_mb) if cache_mb else 0.0
    for row in rows.values():  # the weights beyond the cache, shared by weight
        row[col["weight_dram_MB"]] = beyond * row[col["weight_MB"]] * 1e6 / weights if weights else 0.0
    return rows



def thesis_features(spec: NetSpec) -> list[float]:
    """THESIS_TERMS of one tile (eq. 14-18 with the sides of this spec's convolutions)."""
    outs = spec.conv_sides()
    ins = [TILE, *outs[:-1]]
    out2 = float(sum(s * s for s in outs[1:]))  # conv layers 2..C, as the thesis sums
    in2 = float(sum(s * s for s in ins[1:]))
    fc, n, d = spec.fc_layers, spec.neurons, spec.depth
    return [fc, fc * n * n, fc * n, d * out2, d * in2, d * d * out2, 1.0]


def _design(form: str, pts: Sequence[tuple[NetSpec, int]], cache_mb: float | None = None,
            block: int = 1) -> np.ndarray:
    if form == "additive":
        return np.array([additive_features(s, b, cache_mb, block) for s, b in pts], dtype=float)
    return np.array([thesis_features(s) for s, _ in pts], dtype=float)


def _target(form: str, batch: int, tiles_per_ms: float) -> float:
    """What the form models: ms per batch (additive) or ms per tile (thesis)."""
    return (batch if form == "additive" else 1.0) / tiles_per_ms


def _tiles_per_ms(form: str, batch: int, value: float) -> float:
    return (batch if form == "additive" else 1.0) / value if value > 0 else math.inf


def _nnls(x: np.ndarray, y: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Non-negative coefficients minimising the relative error sum(w·((x·c - y) / y)²)
    (bounded-variable least squares: scipy's nnls has changed algorithm and failure modes
    across the versions a Jetson's Python 3.10 can install)."""
    from scipy.optimize import lsq_linear

    root = np.ones(len(y)) if weights is None else np.sqrt(weights)
    a = x / y[:, None] * root[:, None]
    scale = np.linalg.norm(a, axis=0)
    scale[scale == 0] = 1.0
    try:
        with np.errstate(all="ignore"):
            found = lsq_linear(a / scale, root, bounds=(0.0, np.inf), method="bvls")
    except (np.linalg.LinAlgError, ValueError):
        found = None
    if found is None or not np.all(np.isfinite(found.x)):
        raise PredictError("the least-squares fit did not converge on these records: check them "
                           "for zero or absurd figures, or measure more cells")
    return np.asarray(np.maximum(found.x, 0.0) / scale)  # bvls can return -1e-20


# -- the model ---------------------------------------------------------------------------
@dataclass
class Prediction:
    net: str
    batch: int
    tiles_per_ms: float
    low: float  # the interval on tiles/ms
    high: float
    form: str
    outside: list[str] = field(default_factory=list)  # fields outside the fitted range
    measured: float | None = None  # a measured figure of this cell, where the model holds one

    @property
    def ms_per_batch(self) -> float:
        return self.batch / self.tiles_per_ms


@dataclass
class LatencyModel:
    source: Source
    coef: dict[str, list[float]]  # form -> coefficients
    interval: dict[str, float]  # form -> q: figure x e^(±q) (95th pct of held-out |ln ratio|)
    errors: dict[str, dict[str, float]]  # form -> fit figures
    ranges: dict[str, list[int]]
    training: list[tuple[str, int, float]]  # (net, batch, tiles/ms) fitted to
    versions: dict[str, str] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)  # the backend's, as the records ran it
    adapted_from: str | None = None
    nets: list[str] = field(default_factory=list)  # every net behind it (an adapted model's source's too)
    cache_mb: float | None = None  # the device's last-level cache (None: unknown)
    block: int = 1  # the channel block of the additive form's padding terms (1: none)

    def __post_init__(self) -> None:
        self.nets = sorted({*self.nets, *(n for n, _, _ in self.training)})

    def predict(self, spec: NetSpec, batch: int, form: str = "additive") -> Prediction:
        if form not in FORMS:
            raise PredictError(f"--form takes one of {', '.join(FORMS)}, got '{form}'")
        if isinstance(batch, bool) or not 1 <= batch <= MAX_BATCH:
            raise PredictError(f"--batch must be within 1..{MAX_BATCH}, got {batch}")
        with np.errstate(over="ignore", invalid="ignore"):  # an absurd net: no time, below
            value = float(_design(form, [(spec, batch)], self.cache_mb, self.block)[0]
                          @ np.array(self.coef[form]))
        if not (value > 0 and math.isfinite(value)):
            raise PredictError(f"the {form} model gives {spec.name} no time at batch {batch} "
                               "(every term it has is zero there): refit it on records that "
                               "vary what this net varies")
        figure = _tiles_per_ms(form, batch, value)
        if not 1e-6 < figure < MAX_FIGURE:
            raise PredictError(f"the {form} model gives {spec.name} {figure:.3g} tiles/ms at batch "
                               f"{batch}, beyond any device: the model file is damaged or was "
                               "fitted on absurd records; fit it again with `cnndeploy model fit`")
        outside = self.outside(spec, batch)
        q = self.interval[form]
        half = max(2 * q, q + OUTSIDE_FLOOR) if outside else q
        measured = {(n, b): t for n, b, t in self.training}.get((spec.name, batch))
        return Prediction(spec.name, batch, figure, figure * math.exp(-half),
                          figure * math.exp(half), form, outside, measured)

    @property
    def dram_fitted(self) -> bool:
        """Whether its cells isolated the DRAM term (it was fitted, maybe at 0)."""
        return dram_identified([Point(NetSpec.from_name(n), b, t) for n, b, t in self.training],
                               self.cache_mb)

    def outside(self, spec: NetSpec, batch: int) -> list[str]:
        values = {**{f: getattr(spec, f) for f in RANGE_FIELDS if f != "batch"}, "batch": batch}
        return [f"{f} {values[f]} (fitted {lo}..{hi})" for f, (lo, hi) in self.ranges.items()
                if not lo <= values[f] <= hi]

    def problem(self) -> str | None:
        """What makes a loaded model unusable (a hand edit, a damaged file), or None."""
        for form in FORMS:
            coef = self.coef[form]
            if not all(0 <= c < MAX_COEF for c in coef) or not any(c > 0 for c in coef):
                return (f"{form} coefficients must be non-negative, below {MAX_COEF:.0e} and not "
                        "all zero")
            if not 0 <= self.interval[form] <= 2 * math.log(WORST_RATIO):
                return f"{form} interval {self.interval[form]} is outside 0..{2 * math.log(WORST_RATIO):.1f}"
        if set(self.ranges) != set(RANGE_FIELDS) or any(lo > hi for lo, hi in self.ranges.values()):
            return f"ranges must give lo <= hi for each of {', '.join(RANGE_FIELDS)}"
        if not all(0 < t < MAX_FIGURE and 1 <= b <= MAX_BATCH for _, b, t in self.training):
            return "a training figure or batch is out of range"
        if self.cache_mb is not None and not 0 < self.cache_mb < 1e6:
            return f"cache_mb {self.cache_mb} is not a cache size in MB"
        if not all(isinstance(v, str) and v.isprintable() for v in vars(self.source).values()):
            return "its source names hold control characters"
        if self.block not in CHANNEL_BLOCKS:
            return f"block {self.block} is not one of {', '.join(map(str, CHANNEL_BLOCKS))}"
        return None

    def to_dict(self) -> dict[str, Any]:
        return {"schema": SCHEMA, "source": vars(self.source), "coef": self.coef,
                "terms": {"additive": ADDITIVE_TERMS, "thesis": THESIS_TERMS},
                "interval": self.interval, "errors": self.errors, "ranges": self.ranges,
                "training": self.training, "versions": self.versions, "options": self.options,
                "adapted_from": self.adapted_from, "nets": self.nets, "cache_mb": self.cache_mb,
                "block": self.block}

    @classmethod
    def from_dict(cls, d: Any, where: str) -> LatencyModel:
        if not isinstance(d, dict) or d.get("schema") != SCHEMA:
            got = d.get("schema") if isinstance(d, dict) else type(d).__name__
            raise PredictError(f"{where} is not a latency model of this version (schema {got!r}, "
                                f"expected {SCHEMA!r}): fit it again with `cnndeploy model fit`")
        try:
            model = cls(Source(**d["source"]), {f: _numbers(d["coef"][f]) for f in FORMS},
                        {f: _numbers([d["interval"][f]])[0] for f in FORMS}, d["errors"],
                        {k: [int(v[0]), int(v[1])] for k, v in d["ranges"].items()},
                        [(str(n), int(b), float(t)) for n, b, t in d["training"]],
                        dict(d.get("versions") or {}), dict(d.get("options") or {}),
                        d.get("adapted_from"), [str(n) for n in d.get("nets") or []],
                        None if d.get("cache_mb") is None else float(d["cache_mb"]),
                        _integer(d["block"]))
        except (KeyError, TypeError, ValueError, IndexError, OverflowError) as exc:
            raise PredictError(f"{where} is damaged ({type(exc).__name__}: {str(exc)[:100]}): fit it "
                               "again with `cnndeploy model fit`") from None
        problem = model.problem()
        if problem:
            raise PredictError(f"{where} is damaged ({problem}): fit it again with `cnndeploy "
                               "model fit`")
        lengths = {"additive": len(ADDITIVE_TERMS), "thesis": len(THESIS_TERMS)}
        if any(len(model.coef[f]) != n for f, n in lengths.items()):
            raise PredictError(f"{where} has the wrong number of coefficients: fit it again with "
                                "`cnndeploy model fit`")
        return model


def _numbers(values: Any) -> list[float]:
    """A model file's list of numbers as floats (a string, a boolean or a mapping is damage)."""
    if not isinstance(values, list) or any(isinstance(v, bool) or not isinstance(v, (int, float))
                                           for v in values):
        raise TypeError(f"{str(values)[:40]} is not a list of numbers")
    return [float(v) for v in values]


def _integer(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{value!r} is not an integer")
    return value


def fit(pts: Sequence[Point], source: Source, versions: dict[str, str] | None = None,
        options: dict[str, Any] | None = None, cache_mb: float | None = None,
        parts: Sequence[PartPoint] = (), block: int | None = None) -> LatencyModel:
    """Both forms fitted to ``pts``, each with its leave-one-net-out interval; ``cache_mb``:
    the device's last-level cache (``cache_size``); ``parts``: profiled layer times
    (``part_points``), extra rows for the additive form (nn-Meter's kernel-level fit);
    ``block``: the additive form's channel block, or None for the one of CHANNEL_BLOCKS whose
    leave-one-net-out predictions rank best (``_block_rank``; the interval then comes from the
    same predictions that chose it, a little optimistic with five candidates)."""
    if block is not None and block not in CHANNEL_BLOCKS:
        raise PredictError(f"--channel-block {block}: give one of "
                           f"{', '.join(map(str, CHANNEL_BLOCKS))}")
    nets = {p.spec for p in pts}
    if len(pts) < MIN_POINTS or len(nets) < MIN_NETS:
        raise PredictError(f"{len(pts)} cells of {len(nets)} networks of {source.describe()} are "
                            f"too few to fit (at least {MIN_POINTS} cells of {MIN_NETS} networks): "
                            "run `cnndeploy sweep --group all` first")
    tried = {b: _held_out_ratios("additive", pts, cache_mb, parts, b)
             for b in ([block] if block else CHANNEL_BLOCKS)}
    block = min(tried, key=lambda b: _block_rank(tried[b], b))
    coef, interval, errors = {}, {}, {}
    for form in FORMS:
        c = _fit_form(form, pts, cache_mb, parts, block)
        ratios = tried[block] if form == "additive" else _held_out_ratios(form, pts, cache_mb)
        held = [abs(r - 1.0) for r in ratios]
        inside = [abs(_predict_point(form, c, p, cache_mb, block) / p.tiles_per_ms - 1.0)
                  for p in pts]
        coef[form] = [float(v) for v in c]
        interval[form] = _log_quantile(ratios)
        errors[form] = {"median_abs_error": float(np.median(inside)),
                        "held_out_median_abs_error": float(np.median(held)),
                        "held_out_within_10": float(np.mean(np.array(held) <= 0.10)),
                        "held_out_within_20": float(np.mean(np.array(held) <= 0.20))}
        if form == "additive" and parts:
            errors[form]["profile_rows"] = float(len(parts))
    ranges = {f: [min(_field(p, f) for p in pts), max(_field(p, f) for p in pts)]
              for f in RANGE_FIELDS}
    training = [(p.spec.name, p.batch, p.tiles_per_ms) for p in pts]
    return LatencyModel(source, coef, interval, errors, ranges, training, dict(versions or {}),
                        dict(options or {}), nets=[p.spec.name for p in parts], cache_mb=cache_mb,
                        block=block)


def _block_rank(ratios: Sequence[float], block: int) -> tuple[float, float, int]:
    """How a channel block ranks by its leave-one-net-out predictions: the most cells within
    ±10 % (the figure a user reads), then the lower median error, then the smaller block."""
    errors = np.abs(np.array(ratios) - 1.0)
    return -float(np.mean(errors <= 0.10)), float(np.median(errors)), block


def _field(p: Point, name: str) -> int:
    return p.batch if name == "batch" else int(getattr(p.spec, name))


def _fit_form(form: str, pts: Sequence[Point], cache_mb: float | None = None,
              parts: Sequence[PartPoint] = (), block: int = 1) -> np.ndarray:
    x = _design(form, [(p.spec, p.batch) for p in pts], cache_mb, block)
    y = np.array([_target(form, p.batch, p.tiles_per_ms) for p in pts])
    weights = np.ones(len(y))
    if form == "additive" and parts:  # one more row per profiled part, in ms per batch too
        x = np.vstack([x, [_part_row(q, cache_mb, block) for q in parts]])
        y = np.concatenate([y, [q.ms for q in parts]])
        weights = np.concatenate([weights, np.full(len(parts), PROFILE_WEIGHT * len(pts)
                                                   / len(parts))])
    if form != "additive" or dram_identified(pts, cache_mb):
        return _nnls(x, y, weights)
    dram = ADDITIVE_TERMS.index("weight_dram_MB")
    keep = [i for i in range(x.shape[1]) if i != dram]
    out = np.zeros(x.shape[1])
    out[keep] = _nnls(x[:, keep], y, weights)
    return out


def _part_row(q: PartPoint, cache_mb: float | None, block: int = 1) -> np.ndarray:
    row = part_features(q.spec, q.batch, cache_mb, block)[q.part].copy()
    row[0] = q.share  # the profiled time holds the call's fixed cost, spread over the parts
    return row


def dram_identified(pts: Sequence[Point], cache_mb: float | None) -> bool:
    """Whether ``pts`` can tell the DRAM weight term apart: DRAM_MIN_NETS nets measured at a
    batch of at most DRAM_MAX_BATCH with weights beyond the cache. (At large batches the term
    is a sliver of the time, and a fit would give it whatever the compute terms leave over.)"""
    if not cache_mb:
        return False
    dram = ADDITIVE_TERMS.index("weight_dram_MB")
    return len({p.spec for p in pts if p.batch <= DRAM_MAX_BATCH
                and additive_features(p.spec, p.batch, cache_mb)[dram] > 0}) >= DRAM_MIN_NETS


def _predict_point(form: str, coef: np.ndarray, p: Point, cache_mb: float | None = None,
                   block: int = 1) -> float:
    value = float(_design(form, [(p.spec, p.batch)], cache_mb, block)[0] @ coef)
    return _tiles_per_ms(form, p.batch, value)


def _held_out_ratios(form: str, pts: Sequence[Point], cache_mb: float | None = None,
                     parts: Sequence[PartPoint] = (), block: int = 1) -> list[float]:
    """predicted / measured of every point (in ``pts``' order), each predicted by a fit
    without its net (its profiles left out too)."""
    ratio: dict[int, float] = {}
    for net in {p.spec for p in pts}:
        c = _fit_form(form, [p for p in pts if p.spec != net], cache_mb,
                      [q for q in parts if q.spec != net], block)
        ratio.update({i: _predict_point(form, c, p, cache_mb, block) / p.tiles_per_ms
                      for i, p in enumerate(pts) if p.spec == net})
    return [ratio[i] for i in range(len(pts))]


def _log_quantile(ratios: Sequence[float], q: float = 0.95) -> float:
    """The ``q`` quantile of |ln(predicted / measured)|: the interval is figure x e^(±that)."""
    logs = [abs(math.log(r)) if r > 0 and math.isfinite(r) else math.log(WORST_RATIO)
            for r in ratios]  # a prediction of no time is an error, not a point to drop
    return float(np.quantile(logs, q)) if logs else math.log(WORST_RATIO)


def published_thesis(spec: NetSpec) -> float:
    """Tiles/ms by the thesis's own GTX960 constants (eq. 14-18, C7)."""
    return 1.0 / float(np.array(thesis_features(spec)) @ np.array(THESIS_PUBLISHED))


# -- a new device from few measurements ----------------------------------------------------
_ADAPT_GROUPS = {"overhead": ("call", "layers"), "weights": ("weight_MB", "weight_dram_MB"),
                 "conv1": ("conv1_MFLOP", "conv1_MB", "conv1_pad_MFLOP"),
                 "conv": ("conv_MFLOP", "conv_im2col_MB", "conv_pad_MFLOP", "conv_blocked_MB"),
                 "gemm": ("gemm_MFLOP", "gemm_MB"), "other": ("pool_MB",)}
# The pull of each group's log-scale towards 1 (the source device's coefficient): 10 cells
# cannot pin 6 scales alone. Chosen on the seed-1 held-out cells (ONNX Runtime -> OpenVINO:
# 22 %/56 % within ±10/±20 % with four free scales, 28 %/74 % with six and this prior; 0.003
# and 0.03 gave 22 %/68 % and 28 %/70 %).
ADAPT_PRIOR = 0.01
MAX_ADAPT_POINTS = 10


def adapt(model: LatencyModel, pts: Sequence[Point], source: Source,
          versions: dict[str, str] | None = None, options: dict[str, Any] | None = None,
          cache_mb: float | None = None) -> LatencyModel:
    """``model`` carried to ``source`` from a few of its measurements: one positive scale per
    group of terms of the additive form (call and layers, weights, first conv, later convs,
    FC, pool), fitted on relative error with each scale's logarithm pulled towards 0 (ridge:
    groups the few cells do not exercise stay as the source had them); the thesis form gets
    one scale overall. Its interval is the leave-one-out error on ``pts`` where there
    are enough of them, never narrower than the source model's."""
    if len(pts) < 2:
        raise PredictError(f"adapting takes 2 to {MAX_ADAPT_POINTS} measurements of the new "
                            f"device, got {len(pts)}: measure a few nets there with `cnndeploy "
                            "sweep --grid ...`")
    pts = thin(pts, MAX_ADAPT_POINTS)
    if cache_mb is None and source.device == model.source.device:
        cache_mb = model.cache_mb  # another backend on the same device: the same cache
    coef, interval, errors = {}, {}, {}
    for form in FORMS:
        scaled = _adapt_form(model, form, pts, cache_mb)
        loo = [_predict_point(form, _adapt_form(model, form, [q for q in pts if q != p], cache_mb),
                              p, cache_mb, model.block) / p.tiles_per_ms
               for p in pts] if len(pts) >= 4 else []
        coef[form] = [float(v) for v in scaled]
        interval[form] = max(_log_quantile(loo) if loo else 0.0, model.interval[form])
        errors[form] = {"adapt_points": float(len(pts))}
        if loo:  # leave-one-out over the adapting cells, where there are enough of them
            errors[form]["held_out_median_abs_error"] = float(np.median([abs(r - 1.0) for r in loo]))
    return LatencyModel(source, coef, interval, errors, model.ranges,
                        [(p.spec.name, p.batch, p.tiles_per_ms) for p in pts], dict(versions or {}),
                        dict(options or {}), adapted_from=model.source.describe(),
                        nets=model.nets, cache_mb=cache_mb, block=model.block)


def thin(pts: Sequence[Point], n: int) -> list[Point]:
    """At most ``n`` points spread over the list (deterministic)."""
    if len(pts) <= n:
        return list(pts)
    step = len(pts) / n
    return [pts[int(i * step)] for i in range(n)]


def _adapt_form(model: LatencyModel, form: str, pts: Sequence[Point],
                cache_mb: float | None) -> np.ndarray:
    base = np.array(model.coef[form])
    if form == "thesis":
        groups = [list(range(len(base)))]
    else:
        groups = [[ADDITIVE_TERMS.index(t) for t in terms] for terms in _ADAPT_GROUPS.values()]
    x = _design(form, [(p.spec, p.batch) for p in pts], cache_mb, model.block)
    y = np.array([_target(form, p.batch, p.tiles_per_ms) for p in pts])
    contrib = np.stack([x[:, g] @ base[g] for g in groups], axis=1) / y[:, None]
    scales = _log_ridge(contrib, ADAPT_PRIOR)
    out = base.copy()
    for g, s in zip(groups, scales, strict=True):
        out[g] = base[g] * s
    return out


def _log_ridge(a: np.ndarray, prior: float) -> np.ndarray:
    """Positive scales s minimising sum((a·s - 1)²) + prior·sum(ln(s)²)."""
    from scipy.optimize import least_squares

    def residuals(logs: np.ndarray) -> np.ndarray:
        return np.concatenate([a @ np.exp(logs) - 1.0, math.sqrt(prior) * logs])

    with np.errstate(all="ignore"):
        found = least_squares(residuals, np.zeros(a.shape[1]), bounds=(-12.0, 12.0))
    if not np.all(np.isfinite(found.x)):
        raise PredictError("adapting did not converge on these records: check them for zero "
                           "or absurd figures")
    return np.asarray(np.exp(found.x))


def check_version(model: LatencyModel, versions: dict[str, str]) -> list[str]:
    """Notes where this machine's backend package differs from the one the model was fitted on."""
    name = model.source.backend_name
    fitted, here = model.versions.get(name), versions.get(name)
    if fitted and here and fitted != here:
        return [f"the model was fitted with {name} {fitted}; this machine has {here}: refit if "
                "the figures look off"]
    return []
