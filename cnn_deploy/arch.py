"""The network family of the thesis: ``NetSpec``, its names, ``build()`` and its analytic cost.

``lenet_{C}c{F}f`` is C conv layers (each conv -> ReLU, one 2x2 max-pool after the last)
followed by F hidden fully-connected layers (FC -> ReLU) and the 10-way classifier.
Non-default values are appended: ``lenet_3c2f_d40_n1024``.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from cnn_deploy.errors import SpecError

if TYPE_CHECKING:
    from torch import nn

TILE = 28
IN_CHANNELS = 1
CLASSES = 10
BYTES_PER_ELEMENT = 4  # fp32

# Suffix letter -> (field, default). The order here is the order in a canonical name.
_SUFFIXES: dict[str, tuple[str, int]] = {
    "d": ("depth", 20),
    "n": ("neurons", 512),
    "k": ("kernel", 5),
    "p": ("padding", 0),
    "q": ("pool", 2),
}
_NAME = re.compile(r"lenet_(\d+)c(\d+)f((?:_[a-z]\d+)*)")


# Far above any LeNet of the thesis's family (lenet_5c5f_d80_n2048: ~20 M), far below what
# allocating fails on: a depth of 10**12 was an allocator traceback in train, bench and sweep.
MAX_PARAMETERS = 1_000_000_000
# Layers of either kind: the thesis's family has at most 5; 1x1 kernels with padding would let
# 10**9 conv layers through the shape check (and hang it), so the count is bounded first.
MAX_LAYERS = 1000


@dataclass(frozen=True)
class NetSpec:
    """One network of the family; every layer size is derived from these fields."""

    conv_layers: int = 1
    fc_layers: int = 1
    depth: int = 20
    neurons: int = 512
    kernel: int = 5
    padding: int = 0
    pool: int = 2

    def __post_init__(self) -> None:
        for name in _FIELDS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise SpecError(f"{name} must be an integer, got {getattr(self, name)!r}")
        for name in ("conv_layers", "fc_layers"):
            if getattr(self, name) > MAX_LAYERS:
                raise SpecError(f"{name} is {getattr(self, name)}, beyond {MAX_LAYERS}: use at "
                                f"most {MAX_LAYERS} (the thesis's nets have 1 to 5)")
        for name in ("conv_layers", "depth", "neurons", "kernel", "pool"):
            if getattr(self, name) < 1:
                raise SpecError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.fc_layers < 0 or self.padding < 0:
            raise SpecError("fc_layers and padding must not be negative")
        side = TILE
        for _ in range(self.conv_layers):
            side = side + 2 * self.padding - self.kernel + 1
            if side < 1:
                raise SpecError(
                    f"{self.conv_layers} conv layers of {self.kernel}x{self.kernel} "
                    f"(padding {self.padding}) shrink a {TILE}x{TILE} tile to nothing: "
                    "use fewer conv layers, a smaller kernel or padding"
                )
        if side // self.pool < 1:
            raise SpecError(f"a {self.pool}x{self.pool} pool does not fit a {side}x{side} map")
        params = self.parameters
        if params > MAX_PARAMETERS:  # checked here, before any allocation tries it
            size = f"{params:.3g} parameters ({params * 4 / 2**30:.3g} GiB in fp32)" \
                if params < 10**300 else "more than 1e300 parameters"  # a float cannot hold it
            raise SpecError(f"{self.name[:80]} has {size}, beyond {MAX_PARAMETERS:.0e}: use a "
                            "smaller depth (_d), neurons (_n) or padding (_p)")

    # -- names -----------------------------------------------------------------
    @property
    def name(self) -> str:
        """The canonical name; ``NetSpec.from_name(spec.name) == spec``."""
        parts = [f"lenet_{self.conv_layers}c{self.fc_layers}f"]
        for letter, (attr, default) in _SUFFIXES.items():
            value = getattr(self, attr)
            if value != default:
                parts.append(f"{letter}{value}")
        return "_".join(parts)

    @classmethod
    def from_name(cls, name: str) -> NetSpec:
        """Parse a canonical name; a malformed one raises with the closest valid name."""
        text = name.strip().lower()
        match = _NAME.fullmatch(text)
        if match is None:
            raise SpecError(_unknown_name_message(name))
        if any(len(d) > 18 for d in re.findall(r"\d+", text)):
            raise SpecError(f"'{name[:60]}': a number in it is far too large for a network "
                            "(layers at most 1000; depth and neurons within 10**9 parameters)")
        kwargs: dict[str, int] = {
            "conv_layers": int(match.group(1)),
            "fc_layers": int(match.group(2)),
        }
        for part in filter(None, match.group(3).split("_")):
            letter, value = part[0], int(part[1:])
            if letter in _SUFFIXES and _SUFFIXES[letter][0] in kwargs:
                raise SpecError(f"'{name}' gives _{letter} twice: give each of "
                                + ", ".join(f"_{k}" for k in _SUFFIXES) + " at most once")
            if letter not in _SUFFIXES:
                raise SpecError(
                    f"unknown suffix '_{part}' in '{name}': known suffixes are "
                    + ", ".join(f"_{k}N ({v[0]})" for k, v in _SUFFIXES.items())
                )
            kwargs[_SUFFIXES[letter][0]] = value
        return cls(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, **asdict(self)}

    @classmethod
    def from_dict(cls, data: Any) -> NetSpec:
        """A spec from its dict (a checkpoint's, a record's); anything else is a SpecError."""
        if not isinstance(data, dict):
            raise SpecError(f"not a network specification: {str(data)[:200]!r} (expected a dict "
                            f"of {', '.join(_FIELDS)})")
        try:
            fields = {k: _integer(k, v) for k, v in data.items() if k != "name"}
            return cls(**fields)
        except TypeError as exc:
            raise SpecError(f"not a network specification: {str(data)[:200]} ({exc})") from None

    # -- shapes ----------------------------------------------------------------
    def conv_sides(self) -> list[int]:
        """Output side of each conv layer, e.g. [24, 20, 16] for three 5x5 valid convs."""
        sides, side = [], TILE
        for _ in range(self.conv_layers):
            side = side + 2 * self.padding - self.kernel + 1
            sides.append(side)
        return sides

    @property
    def pooled_side(self) -> int:
        return self.conv_sides()[-1] // self.pool

    @property
    def flat_features(self) -> int:
        return self.depth * self.pooled_side**2

    def build(self, seed: int | None = None) -> nn.Module:
        """A torch module taking normalised (N, 1, 28, 28) float32 tiles to (N, 10) logits;
        with ``seed``, the same initial weights every time (untrained nets: an exported file
        and the PyTorch rows beside it hold the same weights)."""
        import torch
        from torch import nn

        if seed is not None:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                return self.build()

        layers: list[nn.Module] = []
        channels = IN_CHANNELS
        for _ in range(self.conv_layers):
            # (N, channels, s, s) -> (N, depth, s - k + 1 + 2p, ...)
            layers += [nn.Conv2d(channels, self.depth, self.kernel, padding=self.padding), nn.ReLU()]
            channels = self.depth
        layers.append(nn.MaxPool2d(self.pool))  # (N, depth, side // pool, side // pool)
        layers.append(nn.Flatten())  # (N, flat_features)
        width = self.flat_features
        for _ in range(self.fc_layers):
            layers += [nn.Linear(width, self.neurons), nn.ReLU()]
            width = self.neurons
        layers.append(nn.Linear(width, CLASSES))  # (N, 10)
        return nn.Sequential(*layers)

    # -- analytic cost ---------------------------------------------------------
    def layer_costs(self) -> list[LayerCost]:
        """Per-layer cost for one tile: FLOPs (2 per multiply-add), parameters, bytes moved."""
        costs: list[LayerCost] = []
        channels, side = IN_CHANNELS, TILE
        for i, out_side in enumerate(self.conv_sides()):
            macs = out_side**2 * self.depth * channels * self.kernel**2
            params = self.depth * channels * self.kernel**2 + self.depth
            act_in, act_out = channels * side**2, self.depth * out_side**2
            costs.append(LayerCost(f"conv{i + 1}", "conv", 2 * macs + act_out, params,
                                   _bytes(act_in + act_out + params)))
            costs.append(LayerCost(f"relu_conv{i + 1}", "elementwise", act_out, 0,
                                   _bytes(2 * act_out)))
            channels, side = self.depth, out_side
        pooled = self.depth * self.pooled_side**2
        costs.append(LayerCost("pool", "pool", pooled * (self.pool**2 - 1), 0,
                               _bytes(channels * side**2 + pooled)))
        width = pooled
        for i in range(self.fc_layers):
            params = width * self.neurons + self.neurons
            costs.append(LayerCost(f"fc{i + 1}", "gemm", 2 * width * self.neurons + self.neurons,
                                   params, _bytes(width + self.neurons + params)))
            costs.append(LayerCost(f"relu_fc{i + 1}", "elementwise", self.neurons, 0,
                                   _bytes(2 * self.neurons)))
            width = self.neurons
        params = width * CLASSES + CLASSES
        costs.append(LayerCost("classifier", "gemm", 2 * width * CLASSES + CLASSES, params,
                               _bytes(width + CLASSES + params)))
        return costs

    @property
    def flops_per_tile(self) -> int:
        return sum(c.flops for c in self.layer_costs())

    @property
    def parameters(self) -> int:
        return sum(c.params for c in self.layer_costs())

    def activation_bytes(self, batch: int) -> int:
        """Largest live activation footprint of one forward pass at this batch (input + output)."""
        widest = max(c.bytes - _bytes(c.params) for c in self.layer_costs())
        return widest * batch


_FIELDS = ("conv_layers", "fc_layers", "depth", "neurons", "kernel", "padding", "pool")


def _integer(key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise SpecError(f"spec field {key} is {value!r}, not an integer")
    try:
        number = int(value)
    except (ValueError, OverflowError):
        raise SpecError(f"spec field {key} is {str(value)[:40]!r}, not an integer") from None
    if number != value and str(number) != str(value).strip():
        raise SpecError(f"spec field {key} is {value!r}, not an integer")
    return number


@dataclass(frozen=True)
class LayerCost:
    layer: str
    category: str  # thesis eq. 13 categories: conv, gemm, pool, elementwise
    flops: int
    params: int
    bytes: int = field(default=0)


def _bytes(elements: int) -> int:
    return elements * BYTES_PER_ELEMENT


THESIS_GROUPS = ("1", "2", "3", "4")
GROUP_BATCHES = tuple(16 * 2**i for i in range(9))  # 16, 32, ..., 4096


def thesis_group(group: str) -> tuple[list[NetSpec], tuple[int, ...]]:
    """The networks and batches of one of the thesis's four experiment groups (§3.1): 1 FC
    layers 1-5 x batch 16..4096; 2 conv layers 1-5 x the same batches; 3 FC layers 1-5 x
    neurons 128..2048 at batch 1024; 4 conv layers 1-5 x depth 5..80 at batch 1024."""
    layers = range(1, 6)
    if group == "1":
        return [NetSpec(conv_layers=1, fc_layers=n) for n in layers], GROUP_BATCHES
    if group == "2":
        return [NetSpec(conv_layers=n, fc_layers=1) for n in layers], GROUP_BATCHES
    if group == "3":
        return [NetSpec(fc_layers=n, neurons=w) for n in layers
                for w in (128, 256, 512, 1024, 2048)], (1024,)
    if group == "4":
        return [NetSpec(conv_layers=n, depth=d) for n in layers for d in (5, 10, 20, 40, 80)], (1024,)
    raise SpecError(f"no thesis group '{group}': choose one of {', '.join(THESIS_GROUPS)}")


def known_names() -> list[str]:
    """Names of the thesis's networks (groups 1-4, and every C x F), for suggestions."""
    names = [NetSpec(c, f).name for c in range(1, 6) for f in range(0, 6)]
    names += [s.name for g in THESIS_GROUPS for s in thesis_group(g)[0]]
    return list(dict.fromkeys(names))


def _unknown_name_message(name: str) -> str:
    text = name.strip().lower()
    guess = _repair(text)
    close = [guess] if guess else difflib.get_close_matches(text, known_names(), n=1, cutoff=0.5)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    return (
        f"'{name}' is not a network name: expected lenet_<C>c<F>f (C conv layers, F hidden FC "
        f"layers) with optional _d<depth>_n<neurons>_k<kernel>_p<padding>_q<pool>.{hint}"
    )


def _repair(text: str) -> str | None:
    """Best effort: 'lenet3c1f', 'LeNet-3c-1f', '3c1f' -> 'lenet_3c1f'."""
    match = re.search(r"(\d+)\s*[-_ ]?c\s*[-_ ]?(\d+)\s*f", text)
    if match is None:
        return None
    try:
        return NetSpec(int(match.group(1)), int(match.group(2))).name
    except SpecError:
        return None
