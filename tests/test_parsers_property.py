"""Property tests for every parser of user input: for any input, a parser returns a value or
raises the project's error (:class:`CnnDeployError`), never anything else, and never hangs."""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cnn_deploy.errors import CnnDeployError

SETTINGS = settings(max_examples=200, deadline=None, derandomize=True,  # the same examples in CI every run
                    suppress_health_check=[HealthCheck.too_slow])
NUMBER = st.one_of(st.integers(-3, 40).map(str), st.integers().map(str), st.sampled_from(
    ["", "0", "-0", "1e3", "٣", "9" * 30, " 7", "0x10", "nan", "1_000"]))


def never_else(call, *args):  # type: ignore[no-untyped-def]
    try:
        return call(*args)
    except CnnDeployError:
        return None


# -- network names -------------------------------------------------------------------------
NAMES = st.one_of(
    st.text(max_size=40),
    st.builds(lambda c, f, rest: f"lenet_{c}c{f}f{rest}", NUMBER, NUMBER,
              st.lists(st.builds(lambda k, v: f"_{k}{v}", st.sampled_from("dnkpqxz"), NUMBER),
                       max_size=4).map("".join)),
)


@SETTINGS
@given(NAMES)
def test_net_names(name: str) -> None:
    from cnn_deploy.arch import NetSpec

    spec = never_else(NetSpec.from_name, name)
    if spec is not None:
        assert NetSpec.from_name(spec.name) == spec


@SETTINGS
@given(st.dictionaries(st.sampled_from(["conv_layers", "fc_layers", "depth", "neurons", "kernel",
                                        "padding", "pool", "name", "other"]),
                       st.one_of(st.integers(-5, 10**13), st.text(max_size=6), st.none(),
                                 st.floats(allow_nan=True), st.booleans()), max_size=8))
def test_spec_dicts(data: dict) -> None:  # type: ignore[type-arg]
    from cnn_deploy.arch import NetSpec

    spec = never_else(NetSpec.from_dict, data)
    if spec is not None:  # what it accepts is a buildable spec that round-trips by name
        assert NetSpec.from_name(spec.name) == spec
        assert spec.conv_layers >= 1 and spec.depth >= 1 and spec.fc_layers >= 0


# -- grids -----------------------------------------------------------------------------------
VALUES = st.lists(st.one_of(
    NUMBER, st.builds(lambda a, b: f"{a}..{b}", NUMBER, NUMBER),
    st.builds(lambda a, b, s: f"{a}..{b}:{s}", NUMBER, NUMBER, NUMBER),
    st.builds(lambda a, b, s: f"{a}..{b}*{s}", NUMBER, NUMBER, NUMBER)), max_size=3).map(",".join)
GRIDS = st.one_of(st.text(max_size=40), st.lists(st.builds(
    lambda f, v: f"{f}={v}", st.sampled_from(["batch", "fc_layers", "conv_layers", "depth",
                                             "neurons", "kernel", "padding", "pool", "x"]),
    VALUES), max_size=3).map(";".join))


@SETTINGS
@given(GRIDS)
def test_grids(text: str) -> None:
    from cnn_deploy.study.sweep import MAX_CELLS, parse_grid

    cells = never_else(parse_grid, text)
    if cells is not None:
        assert 0 < len(cells) <= MAX_CELLS


@SETTINGS
@given(st.text(max_size=12))
def test_shards(text: str) -> None:
    from cnn_deploy.study.sweep import parse_shard

    got = never_else(parse_shard, text)
    if got is not None:
        assert 1 <= got[0] <= got[1]


# -- batch lists and -o options ----------------------------------------------------------------
@SETTINGS
@given(st.one_of(st.text(max_size=30), st.lists(NUMBER, max_size=5).map(",".join)))
def test_batch_lists(text: str) -> None:
    from cnn_deploy.cli.options import parse_batches

    batches = never_else(parse_batches, text)
    if batches is not None:
        assert batches and all(isinstance(b, int) and b >= 1 for b in batches)


OPTION = st.one_of(st.text(max_size=30), st.builds(
    lambda b, k, v: f"{b}.{k}={v}",
    st.sampled_from(["torch", "onnxruntime", "ort", "openvino", "tensorrt", "nope", ""]),
    st.sampled_from(["threads", "opt_level", "spinning", "memory_format", "device", "compile",
                     "hint", "provider", "bogus", ""]),
    st.one_of(NUMBER, st.sampled_from(["true", "no", "all", "cuda", "cuda:9", "none", "x"]))))


@SETTINGS
@given(st.lists(OPTION, max_size=3))
def test_backend_options(items: list[str]) -> None:
    from cnn_deploy.backends import registry

    got = never_else(registry.parse_options, items)
    if got is not None:  # only registered backends, each key one of its schema's options
        for backend, options in got.items():
            entry = registry.get(backend)
            assert entry.name == backend
            assert set(options) <= {o.key for o in entry.options}


# -- IDX headers -------------------------------------------------------------------------------
@SETTINGS
@given(st.one_of(st.binary(max_size=64), st.builds(
    lambda t, dims, body: bytes([0, 0, t, len(dims)]) + b"".join(
        d.to_bytes(4, "big") for d in dims) + body,
    st.sampled_from([0x08, 0x09, 0x0B, 0x0C, 0x0D, 0x0E, 0x01]),
    st.lists(st.one_of(st.integers(0, 4), st.integers(0, 2**32 - 1)), max_size=4),
    st.binary(max_size=64))))
def test_idx_headers(raw: bytes) -> None:
    from cnn_deploy.data import read_idx

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "file-idx"
        path.write_bytes(raw)
        array = never_else(read_idx, path)
        if array is not None:  # accepted: exactly the shape its header declares
            ndim = raw[3]
            dims = tuple(int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
            assert array.shape == dims


# -- JSONL lines ---------------------------------------------------------------------------
JSON_VALUE = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), st.floats(),
                                    st.text(max_size=5)),
                          lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                  st.dictionaries(st.text(max_size=5), inner,
                                                                  max_size=3)), max_leaves=8)
RECORD = st.fixed_dictionaries({"schema": st.one_of(st.just(1), JSON_VALUE)},
                               optional={"kind": st.sampled_from(["bench", "profile", "x"]),
                                         "stats": JSON_VALUE, "batch": JSON_VALUE,
                                         "model": JSON_VALUE, "backend": JSON_VALUE,
                                         "cell": JSON_VALUE, "samples_ms": JSON_VALUE})


@SETTINGS
@given(st.lists(st.one_of(RECORD.map(lambda r: __import__("json").dumps(r).encode()),
                          st.binary(max_size=30)), max_size=5))
def test_jsonl_lines(lines: list[bytes]) -> None:
    """Any lines: read skips what is not a record, and the analyses built on it hold."""
    from cnn_deploy.results import store, tidy

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "r.jsonl"
        path.write_bytes(b"\n".join(lines))
        found = never_else(store.read, path)
        if found is None:
            return
        assert all(isinstance(r, dict) and type(r.get("schema")) is int
                   and r["schema"] <= store.SCHEMA_VERSION for r in found.records)
        never_else(tidy.tidy, found.records)
        never_else(tidy.cell_passes, path)
