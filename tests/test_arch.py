"""NetSpec names, build() and the analytic cost model."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from cnn_deploy.arch import NetSpec, known_names
from cnn_deploy.errors import SpecError


@pytest.mark.parametrize("name", ["lenet_1c1f", "lenet_1c0f", "lenet_5c1f", "lenet_3c2f_d40_n1024",
                                  "lenet_2c1f_k3_p1", "lenet_1c5f_n128"])
def test_name_round_trip(name: str) -> None:
    spec = NetSpec.from_name(name)
    assert spec.name == name
    assert NetSpec.from_name(spec.name) == spec
    assert NetSpec.from_dict(spec.to_dict()) == spec


def test_defaults_follow_the_thesis() -> None:
    spec = NetSpec.from_name("lenet_3c1f")
    assert (spec.conv_layers, spec.fc_layers, spec.depth, spec.neurons, spec.kernel) == (3, 1, 20,
                                                                                         512, 5)
    assert spec.conv_sides() == [24, 20, 16]
    assert spec.flat_features == 20 * 8 * 8
    assert NetSpec(depth=40).name == "lenet_1c1f_d40"


@pytest.mark.parametrize(("bad", "suggestion"), [("lenet3c1f", "lenet_3c1f"),
                                                 ("LeNet-3c-1f", "lenet_3c1f"),
                                                 ("lenet_3c1", None), ("resnet50", None)])
def test_malformed_names_suggest_the_closest(bad: str, suggestion: str | None) -> None:
    with pytest.raises(SpecError, match="not a network name") as info:
        NetSpec.from_name(bad)
    if suggestion:
        assert f"Did you mean '{suggestion}'" in str(info.value)


def test_impossible_specs_say_why() -> None:
    with pytest.raises(SpecError, match="shrink a 28x28 tile to nothing"):
        NetSpec.from_name("lenet_7c1f")
    with pytest.raises(SpecError, match="unknown suffix"):
        NetSpec.from_name("lenet_1c1f_z3")
    with pytest.raises(SpecError, match=r"gives _d twice: give each of _d, _n, _k, _p, _q at most once"):
        NetSpec.from_name("lenet_1c1f_d10_d20")  # not silently the last


@pytest.mark.parametrize("name", ["lenet_1c0f", "lenet_1c1f", "lenet_3c3f", "lenet_5c1f",
                                  "lenet_2c1f_k3_p1_d10"])
def test_build_shapes_and_costs_match_torch(name: str) -> None:
    spec = NetSpec.from_name(name)
    model = spec.build().eval()
    x = torch.randn(3, 1, 28, 28)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        out = model(x)
    assert out.shape == (3, 10)
    assert spec.parameters == sum(p.numel() for p in model.parameters())
    # torch counts 2 FLOPs per multiply-add in conv and matmul only (no bias, ReLU or pool).
    ours = sum(c.flops for c in spec.layer_costs() if c.category in ("conv", "gemm"))
    bias_adds = sum(c.flops for c in spec.layer_costs() if c.category in ("conv", "gemm")) - sum(
        2 * (c.params - _bias(spec, c.layer)) * _positions(spec, c.layer)
        for c in spec.layer_costs() if c.category in ("conv", "gemm"))
    assert counter.get_total_flops() == 3 * (ours - bias_adds)


def _bias(spec: NetSpec, layer: str) -> int:
    return 10 if layer == "classifier" else (spec.neurons if layer.startswith("fc")
                                             else spec.depth)


def _positions(spec: NetSpec, layer: str) -> int:
    if layer.startswith("conv"):
        return spec.conv_sides()[int(layer[4:]) - 1] ** 2
    return 1


def test_known_names_parse() -> None:
    for name in known_names():
        assert NetSpec.from_name(name).name == name


def test_a_network_too_large_to_allocate_is_refused_by_name() -> None:
    from cnn_deploy.errors import SpecError

    with pytest.raises(SpecError, match=r"lenet_1c1f_d1000000000000 has 7.38e\+16 parameters "
                                        r".*use a smaller depth"):
        NetSpec.from_name("lenet_1c1f_d1000000000000")
    assert NetSpec.from_name("lenet_5c5f_d80_n2048").parameters < 25_000_000  # the family fits
