"""Latency models (thesis eq. 13 and the additive per-layer model), held-out validation,
adaptation to a new device, and `select`: on records of a synthetic device whose true cost
is known, so that every figure the fit gives can be checked against the truth."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from cnn_deploy.arch import NetSpec, thesis_group
from cnn_deploy.errors import PredictError
from cnn_deploy.results.tidy import tidy
from cnn_deploy.study import heldout, modelfiles
from cnn_deploy.study import perfmodel as pm
from cnn_deploy.study import select as sel

# ms per batch = TRUTH . additive_features: 50 µs per call, 5 µs per layer, conv at ~100
# GFLOP/s, gemm at ~200, a little for bytes and pooling.
TRUTH = dict(zip(pm.ADDITIVE_TERMS, (0.05, 0.005, 0.002, 0.0, 0.02, 0.001, 0.0, 0.01, 0.0005,
                                     0.0, 0.0, 0.005, 0.001, 0.002), strict=True))
# (no cache size: no DRAM term; no channel blocks: no padding terms)
DEVICE = "cpu-synthetic-2c"


def true_tiles_per_ms(spec: NetSpec, batch: int, slow: dict[str, float] | None = None) -> float:
    coef = {k: v * (slow or {}).get(k.split("_")[0], 1.0) for k, v in TRUTH.items()}
    ms = float(np.dot(pm.additive_features(spec, batch), [coef[t] for t in pm.ADDITIVE_TERMS]))
    return batch / ms


def record(spec: NetSpec, batch: int, tiles_per_ms: float, backend: str = "onnxruntime",
           label: str = "onnxruntime extended 2t", device: str = DEVICE,
           accuracy: float | None = None) -> dict[str, Any]:
    r: dict[str, Any] = {
        "schema": 1, "kind": "bench", "device": {"kind": "cpu", "slug": device},
        "versions": {backend: "1.0"}, "model": {"name": spec.name, "spec": {"name": spec.name}},
        "backend": {"name": backend, "label": label, "options": {"threads": 2, "spinning": None}},
        "scenario": "offline", "precision": "fp32", "batch": batch,
        "stats": {"tiles_per_ms": tiles_per_ms}}
    if accuracy is not None:
        r["test_accuracy"] = accuracy
    return r


def sweep_records(noise: float = 0.02, seed: int = 0, passes: int = 2, **kw: Any) -> list[dict[str, Any]]:
    """Every cell of the four thesis groups, ``passes`` records each, with multiplicative noise."""
    rng = random.Random(seed)
    out = []
    for g in ("1", "2", "3", "4"):
        nets, batches = thesis_group(g)
        for spec in nets:
            for b in batches:
                for _ in range(passes):
                    figure = true_tiles_per_ms(spec, b, kw.get("slow"))
                    out.append(record(spec, b, figure * (1 + rng.uniform(-noise, noise)),
                                      **{k: v for k, v in kw.items() if k != "slow"}))
    return out


def write(path: Path, records: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


@pytest.fixture(scope="module")
def model() -> pm.LatencyModel:
    rows = tidy(sweep_records())
    source = pm.choose_source(rows)
    return pm.fit(pm.points(rows, source), source, {"onnxruntime": "1.0"}, {"threads": 2})


# -- the thesis's model ------------------------------------------------------------------
def test_the_thesis_constants_give_its_table_2_only_in_part() -> None:
    """Eq. 14-18 with C7 = 9.8e-3 against Table 2's measured 33.6 / 148.6 / 42.0 tiles/ms: the
    paper's model reproduces two of its three networks and misses 1c5f by a third."""
    got = {n: pm.published_thesis(NetSpec.from_name(n)) for n in ("lenet_5c1f", "lenet_1c5f", "lenet_3c3f")}
    assert got["lenet_5c1f"] == pytest.approx(36.0, abs=0.1)
    assert got["lenet_3c3f"] == pytest.approx(42.2, abs=0.1)
    assert got["lenet_1c5f"] == pytest.approx(93.9, abs=0.1)  # measured: 148.6


def test_thesis_features_follow_eq_15_to_18_for_the_default_family() -> None:
    f = dict(zip(pm.THESIS_TERMS, pm.thesis_features(NetSpec(conv_layers=3, fc_layers=2)), strict=True))
    # conv layers 2..3 of 28 -> 24 -> 20 -> 16: outputs 20, 16; inputs 24, 20
    assert f["D*sum(out^2)"] == 20 * (20**2 + 16**2)
    assert f["D*sum(in^2)"] == 20 * (24**2 + 20**2)
    assert f["D^2*sum(out^2)"] == 400 * (20**2 + 16**2)
    assert (f["FC"], f["FC*N^2"], f["FC*N"], f["C7"]) == (2, 2 * 512**2, 2 * 512, 1)


# -- fitting -----------------------------------------------------------------------------
def test_the_additive_fit_recovers_a_known_device(model: pm.LatencyModel) -> None:
    assert model.errors["additive"]["median_abs_error"] < 0.02
    assert model.errors["additive"]["held_out_within_10"] > 0.95
    # an unseen net inside the fitted range
    spec = NetSpec(conv_layers=3, fc_layers=2, depth=30, neurons=768)
    p = model.predict(spec, 256)
    assert p.tiles_per_ms == pytest.approx(true_tiles_per_ms(spec, 256), rel=0.05)
    assert p.low < true_tiles_per_ms(spec, 256) < p.high
    assert not p.outside


def test_the_thesis_form_cannot_follow_the_batch(model: pm.LatencyModel) -> None:
    """Eq. 13 has no batch term: one figure per tile at every batch, so it is worse."""
    spec = NetSpec(1, 1)
    assert model.predict(spec, 16, "thesis").tiles_per_ms == \
        pytest.approx(model.predict(spec, 4096, "thesis").tiles_per_ms)
    assert model.errors["thesis"]["median_abs_error"] > model.errors["additive"]["median_abs_error"]


def test_outside_the_fitted_range_warns_and_widens_the_interval(model: pm.LatencyModel) -> None:
    inside = model.predict(NetSpec(2, 2), 1024)
    out = model.predict(NetSpec(2, 0, kernel=3), 1)
    assert out.outside == ["fc_layers 0 (fitted 1..5)", "kernel 3 (fitted 5..5)",
                           "batch 1 (fitted 16..4096)"]
    q = math.log(inside.high / inside.low) / 2
    assert math.log(out.high / out.low) / 2 == pytest.approx(max(2 * q, q + math.log(1.2)))


def test_mixed_sources_are_refused_with_a_listing_and_picked_by_backend() -> None:
    rows = tidy(sweep_records(passes=1) + sweep_records(passes=1, backend="openvino",
                                                        label="openvino latency"))
    with pytest.raises(PredictError, match=r"mix 2 .*'onnxruntime extended 2t'.*'openvino "
                                           r"latency'.*--backend"):
        pm.choose_source(rows)
    assert pm.choose_source(rows, backend="openvino").backend == "openvino latency"
    with pytest.raises(PredictError, match="no records match"):
        pm.choose_source(rows, backend="torch")


def test_too_few_records_are_refused() -> None:
    rows = tidy([record(NetSpec(1, f), 1024, 10.0) for f in (1, 2, 3)])
    source = pm.choose_source(rows)
    with pytest.raises(PredictError, match=r"too few to fit .* sweep --group all"):
        pm.fit(pm.points(rows, source), source)


def test_no_bench_records_of_named_nets() -> None:
    with pytest.raises(PredictError, match="no bench records of named networks"):
        pm.choose_source(tidy([{"kind": "profile", "model": {"name": "x"}}]))


# -- the file ----------------------------------------------------------------------------
def test_model_file_round_trip(model: pm.LatencyModel, tmp_path: Path) -> None:
    path = modelfiles.save(model, tmp_path / "m.json")
    again = modelfiles.load(path)
    assert json.loads(json.dumps(again.to_dict())) == json.loads(json.dumps(model.to_dict()))
    assert again.predict(NetSpec(2, 2), 64).tiles_per_ms == model.predict(NetSpec(2, 2), 64).tiles_per_ms


@pytest.mark.parametrize("value", [1e308, -1.0, float("nan")])
def test_absurd_coefficients_are_a_damaged_file(model: pm.LatencyModel, value: float) -> None:
    """A hand-edited 1e308 would overflow a prediction into warnings and an infinite figure."""
    d = json.loads(json.dumps(model.to_dict()))
    d["coef"]["additive"][0] = value
    with pytest.raises(PredictError, match=r"damaged \(additive coefficients must be non-negative"):
        pm.LatencyModel.from_dict(d, "m.json")


@pytest.mark.parametrize(("where", "value"), [
    (("coef", "additive", 0), "0.01"), (("coef", "additive", 0), True),
    (("coef", "thesis"), {str(i): 0.01 for i in range(7)}), (("interval", "additive"), "0.1"),
    (("block",), True), (("block",), 16.5), (("block",), "16"),
    (("source", "backend"), "open\nvino\x1b[2J"),
])
def test_hand_edited_types_are_a_damaged_file(model: pm.LatencyModel, where: tuple[Any, ...],
                                              value: Any) -> None:
    """A string, a boolean or a mapping where a number goes, or a control character in a name
    the tables print, is damage, not a value to coerce."""
    d = json.loads(json.dumps(model.to_dict()))
    inner = d
    for key in where[:-1]:
        inner = inner[key]
    inner[where[-1]] = value
    with pytest.raises(PredictError, match=r"m\.json is damaged"):
        pm.LatencyModel.from_dict(d, "m.json")


def test_a_prediction_beyond_any_device_is_refused(model: pm.LatencyModel) -> None:
    d = json.loads(json.dumps(model.to_dict()))
    d["coef"]["additive"] = [1e-300] * len(pm.ADDITIVE_TERMS)
    tiny = pm.LatencyModel.from_dict(d, "m.json")
    with pytest.raises(PredictError, match=r"tiles/ms at batch 64, beyond any device"):
        tiny.predict(NetSpec(2, 2), 64)


@pytest.mark.parametrize(("content", "match"), [
    (None, r"no latency model at .*model fit"),
    ("{not json", "not a readable latency model"),
    ('{"schema": "cnn_deploy.latency_model/0"}', "not a latency model of this version"),
    ('[1, 2]', "not a latency model of this version"),
    ('{"schema": "cnn_deploy.latency_model/2", "source": {}}', "not a latency model of this version"),
    (f'{{"schema": "{pm.SCHEMA}", "source": {{}}}}', "is damaged"),
])
def test_bad_model_files_are_one_clear_error(tmp_path: Path, content: str | None, match: str) -> None:
    path = tmp_path / "m.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(PredictError, match=match):
        modelfiles.load(path)


# -- adapting to a new device --------------------------------------------------------------
def test_ten_measurements_carry_the_model_to_a_slower_device(model: pm.LatencyModel) -> None:
    slow = {"conv": 2.0, "conv1": 2.0, "gemm": 1.5, "call": 3.0, "layers": 3.0}
    target = tidy(sweep_records(passes=1, backend="openvino", label="openvino 1t", slow=slow))
    source = pm.choose_source(target)
    few = pm.thin(pm.points(target, source), pm.MAX_ADAPT_POINTS)
    adapted = pm.adapt(model, few, source)
    assert len(adapted.training) == 10 and adapted.adapted_from == model.source.describe()
    unseen = [(NetSpec(3, 2, depth=30, neurons=768), 256), (NetSpec(2, 3, depth=12, neurons=300), 64),
              (NetSpec(4, 1, depth=50), 2048), (NetSpec(1, 4, neurons=1500), 128),
              (NetSpec(5, 2, depth=8), 512), (NetSpec(2, 0, kernel=3), 4)]
    errors = [abs(adapted.predict(s, b).tiles_per_ms / true_tiles_per_ms(s, b, slow) - 1)
              for s, b in unseen]
    assert max(errors[:5]) < 0.10, errors
    # batch 4 lies below the ten cells' batches (16 and up), where the 3x slower call barely
    # shows: the prior keeps part of that scale at the source's, so this cell is looser
    assert errors[5] < 0.15, errors
    # and the source model, unadapted, is far off there
    spec = NetSpec(3, 1)
    assert model.predict(spec, 1024).tiles_per_ms > 1.5 * true_tiles_per_ms(spec, 1024, slow)


def test_a_group_the_cells_do_not_exercise_keeps_the_sources_scale(model: pm.LatencyModel) -> None:
    """Ten cells without an FC layer say nothing of the gemm terms: the adapted model keeps
    the source's gemm coefficients (the prior), and fits what the cells do show."""
    slow = {"conv": 2.0, "conv1": 2.0, "gemm": 5.0}
    cells = [(NetSpec(c, 0, depth=d), b) for c, d, b in ((1, 10, 64), (2, 20, 256), (3, 40, 16),
                                                        (4, 20, 1024), (5, 10, 128), (2, 80, 512))]
    target = tidy([record(s, b, true_tiles_per_ms(s, b, slow), backend="openvino",
                          label="openvino 1t") for s, b in cells])
    source = pm.choose_source(target)
    adapted = pm.adapt(model, pm.points(target, source), source)
    gemm = [pm.ADDITIVE_TERMS.index(t) for t in ("gemm_MFLOP", "gemm_MB")]
    classifier_only = [i for i in gemm if model.coef["additive"][i] > 0]
    assert classifier_only and all(adapted.coef["additive"][i] == pytest.approx(
        model.coef["additive"][i], rel=0.02) for i in gemm)
    conv = pm.ADDITIVE_TERMS.index("conv_MFLOP")
    assert adapted.coef["additive"][conv] == pytest.approx(2 * model.coef["additive"][conv], rel=0.1)


def test_adapting_needs_two_measurements(model: pm.LatencyModel) -> None:
    rows = tidy([record(NetSpec(1, 1), 16, 5.0, label="x")])
    with pytest.raises(PredictError, match="2 to 10 measurements"):
        pm.adapt(model, pm.points(rows, pm.choose_source(rows)), pm.choose_source(rows))


# -- held-out validation --------------------------------------------------------------------
def test_the_draw_is_wide_seeded_unseen_and_affordable(model: pm.LatencyModel) -> None:
    fitted = [n for n, _, _ in model.training]
    cells = heldout.draw(60, seed=5, exclude=fitted)
    assert cells == heldout.draw(60, seed=5, exclude=fitted)
    assert len({s.name for s, _ in cells}) == 60 and not {s.name for s, _ in cells} & set(fitted)
    assert {s.kernel for s, _ in cells} == {3, 5}
    assert {s.padding for s, _ in cells} >= {0, 1, 2}
    assert {s.fc_layers for s, _ in cells} >= {0, 5}
    assert min(b for _, b in cells) < 16 and max(b for _, b in cells) > 1024
    for s, b in cells:
        assert 4 <= s.depth <= 96 and 64 <= s.neurons <= 4096 and 1 <= s.conv_layers <= 5
        assert s.flops_per_tile * b / 100e9 <= heldout.MAX_ITERATION_S
    with pytest.raises(PredictError, match="--nets must be within"):
        heldout.draw(0)


def test_evaluate_scores_predictions_and_the_repeat_floor(model: pm.LatencyModel) -> None:
    cells = heldout.draw(12, seed=7, exclude=[n for n, _, _ in model.training])
    recs = []
    for i, (spec, batch) in enumerate(cells):
        truth = true_tiles_per_ms(spec, batch)
        off = 1.4 if i < 3 else 1.0  # 3 of 12 cells measured 40 % fast in both passes
        second = truth * off * (1.15 if i == 5 else 1.0)
        recs += [record(spec, batch, truth * off), record(spec, batch, second)]
    result = heldout.evaluate(model, tidy(recs), cells)
    assert result.summary["repeat"]["within_10"] == pytest.approx(11 / 12)
    assert result.summary["additive"]["n"] == 12
    assert result.summary["additive"]["within_20"] == 9 / 12  # the three 40 % cells miss
    assert result.summary["thesis"]["median_abs_error"] > result.summary["additive"]["median_abs_error"]


def test_evaluate_refuses_other_sources_and_fitted_nets(model: pm.LatencyModel) -> None:
    cells = [(NetSpec(2, 2, kernel=3), 64)]
    other = tidy([record(NetSpec(2, 2, kernel=3), 64, 9.0, label="onnxruntime all 1t")])
    with pytest.raises(PredictError, match="not of onnxruntime extended 2t"):
        heldout.evaluate(model, other, cells)
    seen = tidy([record(NetSpec(1, 1), 16, 9.0)])
    with pytest.raises(PredictError, match="was in the fit"):
        heldout.evaluate(model, seen, [(NetSpec(1, 1), 16)])


# -- select --------------------------------------------------------------------------------------
@pytest.mark.parametrize(("kw", "match"), [
    ({}, "give a budget"),
    ({"ms_per_frame": 33.0}, "go together"),
    ({"ms_per_frame": 33.0, "tiles_per_frame": 374, "tiles_per_ms": 5.0}, "not both"),
    ({"ms_per_frame": -1.0, "tiles_per_frame": 374}, "--budget-ms must be a positive"),
    ({"tiles_per_ms": float("nan")}, "--tiles-per-ms must be a positive"),
    ({"ms_per_frame": 33.0, "tiles_per_frame": 0}, "--tiles-per-frame must be at least 1"),
    ({"tiles_per_ms": 5.0, "batch": 0}, "--batch must be within"),
])
def test_bad_budgets(kw: dict[str, Any], match: str) -> None:
    with pytest.raises(PredictError, match=match):
        sel.Budget(**kw)


def test_frame_budget_is_a_rate_at_the_frame_batch() -> None:
    b = sel.Budget(ms_per_frame=33.0, tiles_per_frame=374)
    assert (b.at_batch, b.required) == (374, pytest.approx(374 / 33))
    assert sel.Budget(ms_per_frame=10.0, tiles_per_frame=9000).at_batch == 4096


def _accuracy(spec: NetSpec) -> float:
    return 0.95 + 0.001 * spec.conv_layers * spec.depth / 20 + 0.0001 * spec.fc_layers


def test_select_picks_the_most_accurate_net_that_meets_the_budget_with_margin(
        model: pm.LatencyModel) -> None:
    specs = sel.candidate_specs(model)
    rows = tidy(sweep_records(passes=1))
    acc = {s.name: _accuracy(s) for s in specs}
    budget = sel.Budget(tiles_per_ms=20.0, batch=1024)
    got = sel.rank(model, specs, budget, rows, acc)
    assert got.pick is not None
    meeting = [c for c in got.candidates if c.low >= 20.0]
    assert got.pick.accuracy == max(c.accuracy or 0 for c in meeting)
    assert all(c.measured for c in got.candidates)  # every candidate was measured at 1024
    front = [c for c in got.candidates if c.front]
    for c in got.candidates:  # nothing off the front is both faster and more accurate
        assert c.front or any(f.tiles_per_ms >= c.tiles_per_ms and (f.accuracy or 0) >= (c.accuracy or 0)
                              for f in front)
    assert sel.summary(got)["pick"] == got.pick.spec.name


def test_select_predicts_unmeasured_batches_and_says_so(model: pm.LatencyModel) -> None:
    specs = [NetSpec(2, 1, depth=12), NetSpec(1, 1)]
    got = sel.rank(model, specs, sel.Budget(ms_per_frame=33.0, tiles_per_frame=374), [], {})
    assert not any(c.measured for c in got.candidates) and got.pick is None
    assert "--train-top" in got.why
    assert [c.spec for c in sel.to_train(got, 1)] == [NetSpec(2, 1, depth=12)]  # most FLOPs first


def test_an_impossible_budget_names_the_fastest_net(model: pm.LatencyModel) -> None:
    with pytest.raises(PredictError, match=r"no candidate meets 1e\+06 tiles/ms .* the fastest, "
                                           r"lenet_1c1f_d5, is predicted at"):
        sel.rank(model, sel.candidate_specs(model), sel.Budget(tiles_per_ms=1e6), [], {})


def test_an_accuracy_floor_nobody_meets_names_the_best(model: pm.LatencyModel) -> None:
    specs = sel.candidate_specs(model)
    with pytest.raises(PredictError, match=r"--min-accuracy 99.90%: the best known is .* at 9"):
        sel.rank(model, specs, sel.Budget(tiles_per_ms=1.0), [],
                 {s.name: _accuracy(s) for s in specs}, min_accuracy=0.999)
    with pytest.raises(PredictError, match="a fraction in"):
        sel.rank(model, specs, sel.Budget(tiles_per_ms=1.0), [], {}, min_accuracy=98.0)


def test_train_top_trains_measures_and_reranks(model: pm.LatencyModel, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """The re-ranking reads what the run wrote (the run itself is the sweep's, tested there)."""
    trained: list[str] = []

    def fake_sweep(cells: Any, results: Path, **kw: Any) -> None:
        assert kw["train_epochs"] == 1 and kw["passes"] == 2
        trained.extend(c.spec.name for c in cells)
        write(results, [record(c.spec, c.batch, true_tiles_per_ms(c.spec, c.batch), accuracy=0.99)
                        for c in cells])

    monkeypatch.setattr(sel, "run_sweep", fake_sweep)
    with pytest.raises(PredictError, match=r"speaks for cpu-synthetic-2c, and this machine is"):
        sel.choose(model, sel.Budget(tiles_per_ms=10.0, batch=64), [], train_top=2, epochs=1,
                   results=tmp_path / "select.jsonl", models=tmp_path)
    assert not trained and not (tmp_path / "select.jsonl").exists()  # refused before any work
    monkeypatch.setattr("cnn_deploy.device.device_slug", lambda _record: DEVICE)
    got = sel.choose(model, sel.Budget(tiles_per_ms=10.0, batch=64), [], train_top=2, epochs=1,
                     results=tmp_path / "select.jsonl", models=tmp_path)
    assert len(trained) == 2
    assert got.pick is not None and got.pick.spec.name in trained and got.pick.measured
    assert any("trained and measured" in n for n in got.notes)


# -- the report's section ------------------------------------------------------------------------
def test_report_section_fits_validates_on_held_out_cells_and_draws_the_front(tmp_path: Path) -> None:
    from cnn_deploy.study import perfreport
    from cnn_deploy.study.report import THESIS_TABLE2

    recs = sweep_records(passes=1)
    for r in recs[:20]:
        r["test_accuracy"] = 0.9 + 0.001 * len(r["model"]["name"])
    for spec, batch in heldout.draw(6, seed=2):
        for _ in range(2):
            recs.append({**record(spec, batch, true_tiles_per_ms(spec, batch)),
                         "sweep": {"group": modelfiles.HELD_OUT}})
    got = perfreport.section(tidy(recs), THESIS_TABLE2, tmp_path)
    assert [r["error"] for r in got.thesis] == ["+7%", "-37%", "+0%"]
    assert [r["form"] for r in got.fits] == ["additive", "thesis"]
    assert got.fits[0]["held-out cells"] == 6 and got.fits[0]["repeat within ±10 %"] == "100%"
    assert got.fits[0]["within ±10 %"] == "100%"
    assert [p.name for _, p in got.pngs] == ["heldout_1.png", "pareto.png"]
    assert all(p.read_bytes().startswith(b"\x89PNG") for _, p in got.pngs)


def test_an_accuracy_floor_waits_for_train_top(model: pm.LatencyModel, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """No known net reaches the floor yet: with --train-top the first ranking must not refuse
    (the training is what may reach it)."""
    monkeypatch.setattr("cnn_deploy.device.device_slug", lambda _record: DEVICE)
    monkeypatch.setattr(sel, "run_sweep", lambda cells, results, **kw: write(results, [
        record(c.spec, c.batch, true_tiles_per_ms(c.spec, c.batch), accuracy=0.995) for c in cells]))
    low = write(tmp_path / "low.jsonl", [record(NetSpec(1, 1), 64, 30.0, accuracy=0.9)])
    got = sel.choose(model, sel.Budget(tiles_per_ms=5.0, batch=64), [low], min_accuracy=0.99,
                     train_top=1, epochs=1, results=tmp_path / "s.jsonl", models=tmp_path)
    assert got.pick is not None and (got.pick.accuracy or 0) >= 0.99


def test_a_frame_larger_than_one_batch_is_timed_batch_by_batch(model: pm.LatencyModel) -> None:
    spec = NetSpec(2, 1)
    c = sel.candidate(model, spec, sel.Budget(ms_per_frame=100.0, tiles_per_frame=5000), {}, None)
    full, rest = model.predict(spec, 4096), model.predict(spec, 904)
    assert c.tiles_per_ms == pytest.approx(5000 / (4096 / full.tiles_per_ms + 904 / rest.tiles_per_ms))
    assert c.low < c.tiles_per_ms < c.high and c.batch == 4096


def test_a_cell_measured_once_keeps_the_models_margin(model: pm.LatencyModel) -> None:
    spec = NetSpec(1, 1)
    once = sel.measured(tidy([record(spec, 64, 20.0)]), model.source)
    c = sel.candidate(model, spec, sel.Budget(tiles_per_ms=1.0, batch=64), once, None)
    p = model.predict(spec, 64)
    assert c.measured and c.tiles_per_ms == 20.0
    assert c.low == pytest.approx(20.0 * p.low / p.tiles_per_ms) and c.low < 20.0


def test_the_thesis_groups_determine_every_additive_term() -> None:
    """Each term's coefficient is pinned down by the four groups' cells: full column rank;
    all but the DRAM term, which they never isolate (no small batch reads weights beyond a
    32 MB cache), so the fit leaves it out and `sweep --group coverage` supplies it. With
    AVX-512's 16-channel blocks, group 4's depths (5 to 80) tell the padding terms apart."""
    cells = [(s, b) for g in "1234" for s in thesis_group(g)[0] for b in thesis_group(g)[1]]
    x = pm._design("additive", cells, 32.0, 16)
    dram = pm.ADDITIVE_TERMS.index("weight_dram_MB")
    x = np.delete(x, dram, axis=1)
    assert np.linalg.matrix_rank(x / np.linalg.norm(x, axis=0)) == len(pm.ADDITIVE_TERMS) - 1
    pts = [pm.Point(s, b, 1.0) for s, b in cells]
    assert not pm.dram_identified(pts, 32.0)
    wide = [pm.Point(NetSpec(1, 3, neurons=n), b, 1.0) for n in (2048, 4096) for b in (1, 8)]
    assert pm.dram_identified(pts + wide, 32.0) and not pm.dram_identified(pts + wide, None)
    assert not pm.dram_identified(pts + wide[:2], 32.0)  # one net: not enough


def test_the_fit_weighs_relative_not_absolute_error() -> None:
    """Cells a thousand times apart in time count alike: a 10 % miss on a fast cell costs
    what a 10 % miss on a slow one does, so neither end is sacrificed."""
    x = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    y = np.array([0.001, 1.0, 1.001 * 1.1])  # the third is 10 % off either way
    coef = pm._nnls(x, y)
    assert coef[0] == pytest.approx(0.001, rel=0.06) and coef[1] == pytest.approx(1.0, rel=0.06)


def test_left_out_predictions_of_no_time_widen_the_interval() -> None:
    ok = [1.0] * 90
    assert pm._log_quantile(ok + [math.inf] * 10) == pytest.approx(math.log(pm.WORST_RATIO))
    assert pm._log_quantile(ok) == 0.0


def test_leave_one_net_out_leaves_every_batch_of_the_net_out(monkeypatch: pytest.MonkeyPatch) -> None:
    rows = tidy(sweep_records(passes=1))
    pts = pm.points(rows, pm.choose_source(rows))
    seen: list[set[tuple[str, int]]] = []
    real = pm._fit_form

    def spy(form: str, given: Any, cache_mb: float | None = None, parts: Any = (),
            block: int = 1) -> Any:
        seen.append({(p.spec.name, p.batch) for p in given})
        return real(form, given, cache_mb, parts, block)

    monkeypatch.setattr(pm, "_fit_form", spy)
    pm._held_out_ratios("additive", pts)
    nets = {p.spec.name for p in pts}
    assert len(seen) == len(nets)
    for fitted in seen:  # each fit misses exactly one net, all of its batches
        missing = {(p.spec.name, p.batch) for p in pts} - fitted
        assert len({n for n, _ in missing}) == 1
        assert missing == {(p.spec.name, p.batch) for p in pts if p.spec.name == next(iter(missing))[0]}


def test_weights_beyond_the_cache_are_fitted_from_coverage_cells(tmp_path: Path) -> None:
    """A device whose weights beyond its 32 MB cache cost 0.03 ms/MB per batch (DRAM): the
    groups alone cannot see it (the term stays zero), the groups plus a few wide FC nets at
    tiny batches recover it, and a wide unseen net at batch 1 is then predicted within 5 %
    where the groups-only model is far too fast. The cache size comes from the records."""
    cache = 32.0

    def truth(spec: NetSpec, batch: int) -> float:
        ms = float(np.dot(pm.additive_features(spec, batch, cache),
                          [{**TRUTH, "weight_dram_MB": 0.03}[t] for t in pm.ADDITIVE_TERMS]))
        return batch / ms

    def rec(spec: NetSpec, batch: int) -> dict[str, Any]:
        r = record(spec, batch, truth(spec, batch))
        r["device"]["llc_bytes"] = int(cache * 1e6)
        return r

    groups = [rec(s, b) for g in "1234" for s in thesis_group(g)[0] for b in thesis_group(g)[1]]
    wide = [rec(NetSpec(1, f, neurons=n), b) for f, n in ((3, 2048), (2, 4096), (1, 3000))
            for b in (1, 4)]
    unseen, batch = NetSpec(1, 4, depth=50, neurons=1900, kernel=3, padding=1), 1
    only_groups, _ = modelfiles.fit_files([write(tmp_path / "g.jsonl", groups)])
    assert only_groups.cache_mb == cache
    assert only_groups.coef["additive"][pm.ADDITIVE_TERMS.index("weight_dram_MB")] == 0.0
    assert only_groups.predict(unseen, batch).tiles_per_ms > 2 * truth(unseen, batch)
    assert not only_groups.dram_fitted
    both, _ = modelfiles.fit_files([write(tmp_path / "w.jsonl", groups + wide)])
    assert both.coef["additive"][pm.ADDITIVE_TERMS.index("weight_dram_MB")] == \
        pytest.approx(0.03, rel=0.1)
    assert both.predict(unseen, batch).tiles_per_ms == pytest.approx(truth(unseen, batch), rel=0.05)
    assert both.dram_fitted
    again = pm.LatencyModel.from_dict(json.loads(json.dumps(both.to_dict())), "m")
    assert again.cache_mb == cache and again.predict(unseen, batch).tiles_per_ms == \
        both.predict(unseen, batch).tiles_per_ms


# -- channel blocks ------------------------------------------------------------------------
# A backend that computes each conv's channels in blocks of 16 (oneDNN on AVX-512): the padded
# channels' FLOPs cost as much as the real ones, and the blocked output bytes cost too.
PADDED = {**TRUTH, "conv1_pad_MFLOP": 0.02, "conv_pad_MFLOP": 0.01, "conv_blocked_MB": 0.002}


def blocked_tiles_per_ms(spec: NetSpec, batch: int) -> float:
    ms = float(np.dot(pm.additive_features(spec, batch, None, 16),
                      [PADDED[t] for t in pm.ADDITIVE_TERMS]))
    return batch / ms


def blocked_records(lanes: int | None) -> list[dict[str, Any]]:
    out = []
    for g in "1234":
        for spec in thesis_group(g)[0]:
            for batch in thesis_group(g)[1]:
                r = record(spec, batch, blocked_tiles_per_ms(spec, batch))
                if lanes is not None:
                    r["device"]["simd_lanes"] = lanes
                out.append(r)
    return out


UNSEEN_DEPTHS = [(NetSpec(2, 1, depth=4, kernel=3, padding=1), 512),
                 (NetSpec(3, 0, depth=17), 64), (NetSpec(1, 2, depth=33, neurons=300), 2048)]


def test_channels_padded_to_the_cpus_vector_lanes_are_fitted(tmp_path: Path) -> None:
    """The records name 16 lanes (AVX-512): the fit pads channels to 16 and predicts nets of
    depths it never saw (4, 17, 33: 12 to 15 channels of padding) within 1 %; told there is no
    block, it is far off on at least one of them."""
    rows = tidy(blocked_records(16))
    assert pm.channel_block(rows, pm.choose_source(rows)) == 16
    path = write(tmp_path / "r.jsonl", blocked_records(16))
    model, _ = modelfiles.fit_files([path])
    unblocked, _ = modelfiles.fit_files([path], block=1)
    assert model.block == 16 and unblocked.block == 1
    errors = [(m.predict(s, b).tiles_per_ms / blocked_tiles_per_ms(s, b) - 1)
              for m in (model, unblocked) for s, b in UNSEEN_DEPTHS]
    assert max(map(abs, errors[:3])) < 0.01 and max(map(abs, errors[3:])) > 0.10
    again = pm.LatencyModel.from_dict(json.loads(json.dumps(model.to_dict())), "m")
    assert again.block == 16 and again.predict(*UNSEEN_DEPTHS[0]).tiles_per_ms == \
        model.predict(*UNSEEN_DEPTHS[0]).tiles_per_ms
    damaged = {**model.to_dict(), "block": 12}
    with pytest.raises(PredictError, match=r"damaged \(block 12 is not one of 1, 4, 8, 16, 32\)"):
        pm.LatencyModel.from_dict(damaged, "m")


def test_padding_features_by_hand() -> None:
    """lenet_3c1f_d5 (5x5 valid convs: sides 24, 20, 16) in 16-channel blocks, per tile: conv1
    pads 11 output channels of its one input, 2·24²·25·11 = 0.3168 MFLOP; conv2 and conv3 read
    and write 16 channels for 5, 2·(20² + 16²)·25·(16² - 5²) = 7.5768 MFLOP; the outputs take
    (24² + 20² + 16²)·16 floats, 0.078848 MB."""
    parts = pm.part_features(NetSpec.from_name("lenet_3c1f_d5"), 1, None, 16)
    term = pm.ADDITIVE_TERMS.index
    assert parts["conv1"][term("conv1_pad_MFLOP")] == pytest.approx(0.3168)
    assert parts["conv"][term("conv_pad_MFLOP")] == pytest.approx(7.5768)
    assert parts["conv1"][term("conv_blocked_MB")] + parts["conv"][term("conv_blocked_MB")] == \
        pytest.approx(0.078848)
    assert parts["conv"][term("conv1_pad_MFLOP")] == parts["conv1"][term("conv_pad_MFLOP")] == 0
    none = pm.part_features(NetSpec.from_name("lenet_3c1f_d16"), 1, None, 16)  # a whole block
    assert none["conv"][term("conv_pad_MFLOP")] == none["conv1"][term("conv1_pad_MFLOP")] == 0
    with pytest.raises(PredictError, match=r"--channel-block 3: give one of 1, 4, 8, 16, 32"):
        pm.fit([], pm.Source("d", "b", "b", "fp32"), block=3)


def test_an_adapted_model_keeps_its_block(tmp_path: Path) -> None:
    """A blocked model carried to a device twice as slow in every term, from 10 cells: it still
    pads to 16, so nets of unseen depths come out within 6 % (the ridge keeps a little of the
    source's speed); read without its block, they would be 22 % to 6x off."""
    model, _ = modelfiles.fit_files([write(tmp_path / "r.jsonl", blocked_records(16))])
    slower = [{**r, "stats": {"tiles_per_ms": r["stats"]["tiles_per_ms"] / 2},
               "backend": {**r["backend"], "label": "onnxruntime 1t"}} for r in blocked_records(16)]
    adapted, _, _ = modelfiles.adapt_files(model, [write(tmp_path / "s.jsonl", slower)])
    assert adapted.block == 16
    for spec, batch in UNSEEN_DEPTHS:
        assert adapted.predict(spec, batch).tiles_per_ms == \
            pytest.approx(blocked_tiles_per_ms(spec, batch) / 2, rel=0.06)


def test_records_that_name_no_lanes_let_the_fit_choose_the_block(tmp_path: Path) -> None:
    """Records from before the lanes were recorded (or of a GPU): the block whose
    leave-one-net-out predictions are best, here the 16 the device pads to."""
    model, _ = modelfiles.fit_files([write(tmp_path / "r.jsonl", blocked_records(None))])
    assert model.block == 16
    plain = tidy(sweep_records(noise=0.0, passes=1))
    assert pm.channel_block(plain, pm.choose_source(plain)) is None


def test_a_backend_that_does_not_pad_fits_the_padding_terms_near_zero(tmp_path: Path) -> None:
    """The module's device pads nothing: given 16 lanes, its fit keeps the padding terms small
    and predicts as well as without them."""
    records = sweep_records()
    for r in records:
        r["device"]["simd_lanes"] = 16
    lanes, _ = modelfiles.fit_files([write(tmp_path / "r.jsonl", records)])
    assert lanes.block == 16
    padding = [pm.ADDITIVE_TERMS.index(t) for t in ("conv1_pad_MFLOP", "conv_pad_MFLOP",
                                                    "conv_blocked_MB")]
    coef = np.array(lanes.coef["additive"])
    for s, b in UNSEEN_DEPTHS:
        assert lanes.predict(s, b).tiles_per_ms == pytest.approx(true_tiles_per_ms(s, b), rel=0.05)
        x = np.array(pm.additive_features(s, b, None, 16))
        assert x[padding] @ coef[padding] < 0.05 * (x @ coef)  # under 5 % of the time


# -- profile records as fitting rows ---------------------------------------------------
def test_the_parts_add_up_to_the_whole_net() -> None:
    """Each part's features are its layers' alone; with the call term they sum to the net's."""
    rng = random.Random(3)
    for _ in range(200):
        spec = NetSpec(rng.randint(1, 5), rng.randint(0, 5), depth=rng.randint(4, 96),
                       neurons=rng.randint(64, 4096), kernel=rng.choice((3, 5)),
                       padding=rng.choice((0, 1, 2)))
        batch, cache = rng.randint(1, 4096), rng.choice((None, 1.0, 32.0))
        block = rng.choice(pm.CHANNEL_BLOCKS)
        parts = pm.part_features(spec, batch, cache, block)
        whole = np.array(pm.additive_features(spec, batch, cache, block))
        assert whole[0] == 1.0 and np.allclose(whole[1:], sum(parts.values())[1:], rtol=1e-12)
        assert parts["conv1"][pm.ADDITIVE_TERMS.index("conv_MFLOP")] == 0  # its own terms
        if spec.conv_layers == 1:
            assert not parts["conv"].any()
    assert [pm.part_of(n) for n in ("conv1", "relu_conv1", "conv4", "fc2", "relu_fc2",
                                    "classifier", "pool", "-", "reshape")] == \
        ["conv1", "conv1", "conv", "gemm", "gemm", "gemm", "pool", None, None]


def profile_record(spec: NetSpec, batch: int, overhead: float = 1.3,
                   label: str = "onnxruntime extended 2t", run_id: str = "p") -> dict[str, Any]:
    """A `cnndeploy profile` record of the TRUTH device: one profiled layer per part naming
    its layers (ReLUs fused in), at ``overhead`` x their true time, and a reshape; the
    unprofiled run is the true time, the call's fixed cost included."""
    coef = np.array([TRUTH[t] for t in pm.ADDITIVE_TERMS])
    names: dict[str, list[str]] = {}
    for cost in spec.layer_costs():
        part = pm.part_of(cost.layer)
        assert part is not None
        names.setdefault(part, []).append(cost.layer)
    parts = pm.part_features(spec, batch)
    layers = [{"arch_layers": "+".join(names[p]), "time_ms": overhead * float(row @ coef)}
              for p, row in parts.items() if p in names] + [{"arch_layers": "-", "time_ms": 0.0}]
    summed = sum(layer["time_ms"] for layer in layers)
    return {"schema": 1, "kind": "profile", "run_id": run_id, "device": {"kind": "cpu", "slug": DEVICE},
            "versions": {"onnxruntime": "1.0"}, "model": {"name": spec.name, "spec": {"name": spec.name}},
            "backend": {"name": "onnxruntime", "label": label, "options": {}}, "batch": batch,
            "layers": layers, "categories": [{"category": "conv", "time_ms": summed}],
            "layer_sum_ms": summed, "unprofiled_ms": TRUTH["call"] + summed / overhead}


def test_profiled_parts_become_rows_the_fit_uses(tmp_path: Path) -> None:
    """Profile records of the model's device and backend give one row per part, scaled to
    the unprofiled run; with them the fit pins each part's terms from fewer whole-net cells;
    a profiled net counts as seen (never a held-out net), and leaving a net out of the
    interval's fit leaves its profiles out too."""
    few = [record(s, b, true_tiles_per_ms(s, b)) for g in "12" for s in thesis_group(g)[0]
           for b in (16, 1024)]
    profiled = [NetSpec(c, f, depth=d, neurons=n) for c, f, d, n in
                ((1, 1, 40, 256), (3, 2, 10, 1024), (5, 1, 20, 512), (2, 4, 80, 128),
                 (4, 3, 5, 2048))]
    profiles = [profile_record(s, b, run_id=f"p{i}") for i, s in enumerate(profiled)
                for b in (8, 256, 2048)]
    profiles += [profile_record(profiled[0], 8, label="openvino latency 2t", run_id="other")]
    rows = tidy(few + profiles)
    source = pm.choose_source(rows)
    parts = pm.part_points(rows, source)
    assert {q.part for q in parts} == set(pm.PARTS) and len({q.spec for q in parts}) == 5
    q = next(q for q in parts if q.spec == profiled[1] and q.batch == 256 and q.part == "conv")
    coef = np.array([TRUTH[t] for t in pm.ADDITIVE_TERMS])
    own = float(pm.part_features(profiled[1], 256)["conv"] @ coef)
    assert q.ms == pytest.approx(own + q.share * TRUTH["call"])  # its share of the call
    assert sum(r.share for r in parts if r.spec == profiled[1] and r.batch == 256) \
        == pytest.approx(1.0)
    # a record whose layers do not name each of the net's layers once is left out
    broken = profile_record(profiled[2], 8, run_id="broken")
    broken["layers"][0]["arch_layers"] = "conv1+relu_conv1+conv2"
    assert not [r for r in pm.part_points(tidy([*few, broken]), source)]
    with_parts, _ = modelfiles.fit_files([write(tmp_path / "a.jsonl", few + profiles)])
    assert with_parts.errors["additive"]["profile_rows"] == len(parts)
    without, _ = modelfiles.fit_files([tmp_path / "a.jsonl"], profiles=False)  # --no-profiles
    assert "profile_rows" not in without.errors["additive"]
    assert {s.name for s in profiled} & set(without.nets) == {"lenet_5c1f"}  # also swept
    assert {s.name for s in profiled} <= set(with_parts.nets)
    assert not {s.name for s, _ in heldout.draw(40, 1, exclude=with_parts.nets)} & \
        {s.name for s in profiled}
    unseen = NetSpec(4, 2, depth=60, neurons=900)
    truth = true_tiles_per_ms(unseen, 512)
    assert with_parts.predict(unseen, 512).tiles_per_ms == pytest.approx(truth, rel=0.03)
    assert np.allclose(with_parts.coef["additive"], coef, rtol=0.05, atol=1e-6)


def test_a_real_onnxruntime_profile_gives_parts_that_add_up(tmp_path: Path) -> None:
    """`cnndeploy profile` on this machine: its record's layers map onto the conv1, gemm and
    pool parts, and the scaled parts add up to the unprofiled run less the unmapped reshape."""
    from typer.testing import CliRunner

    from cnn_deploy.cli import app
    from cnn_deploy.results.tidy import load

    out = tmp_path / "p.jsonl"
    done = CliRunner().invoke(app, ["profile", "--spec", "lenet_1c2f", "--batch", "16",
                                    "--runs", "3", "--results", str(out)])
    assert done.exit_code == 0, done.output
    rows = tidy(load([out])[0])
    (r,) = [r for r in rows if r["kind"] == "profile"][:1]
    source = pm.Source(r["device"], r["backend"], r["backend_name"], "fp32")
    parts = {q.part: q.ms for q in pm.part_points(rows, source)}
    assert set(parts) == {"conv1", "pool", "gemm"} and all(v > 0 for v in parts.values())
    record_ = json.loads(out.read_text().splitlines()[0])
    mapped = sum(layer["time_ms"] for layer in record_["layers"] if layer["arch_layers"])
    assert sum(parts.values()) == pytest.approx(
        record_["unprofiled_ms"] * mapped / record_["layer_sum_ms"], rel=1e-6)
    assert mapped > 0.8 * record_["layer_sum_ms"]  # the reshape is a sliver


def test_profiles_of_another_setting_are_named_not_silently_dropped(tmp_path: Path) -> None:
    rows = [*sweep_records(passes=1), profile_record(NetSpec(2, 2), 16, label="onnxruntime all 2t")]
    model, skipped = modelfiles.fit_files([write(tmp_path / "a.jsonl", rows)])
    assert "profile_rows" not in model.errors["additive"]
    assert any("1 profile records: none is of onnxruntime extended 2t" in s for s in skipped)
