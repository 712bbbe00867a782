"""`cnndeploy model fit|adapt|validate`, `predict` and `select` from the command line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_cli import assert_fails, cli, table_rows
from test_perfmodel import sweep_records, write

from cnn_deploy.study import modelfiles


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def fitted(tmp_path: Path) -> Path:
    records = write(tmp_path / "sweep.jsonl", sweep_records())
    cli("model", "fit", records, "-o", tmp_path / "m.json")
    return tmp_path / "m.json"


def test_fit_writes_a_model_and_says_how_well_it_fits(tmp_path: Path) -> None:
    records = write(tmp_path / "sweep.jsonl", sweep_records())
    result = cli("model", "fit", records)
    path = Path("models/latency_cpu-synthetic-2c.json")  # the records' device, by default
    assert modelfiles.load(path).source.backend == "onnxruntime extended 2t"
    rows = {r[0]: r for r in table_rows(result.stdout)}
    assert set(rows) == {"additive", "thesis"}
    assert f"wrote {path}" in result.stderr
    before = path.read_bytes()
    assert_fails("model", "fit", records, match=r"exists: give another -o, or --force")
    assert path.read_bytes() == before
    cli("model", "fit", records, "--force")


def test_fit_refuses_mixed_backends_and_names_them(tmp_path: Path) -> None:
    mixed = write(tmp_path / "mixed.jsonl", sweep_records(passes=1)
                  + sweep_records(passes=1, backend="openvino", label="openvino latency"))
    assert_fails("model", "fit", mixed, "-o", "m.json",
                 match=r"mix 2 .*choose with --backend")
    cli("model", "fit", mixed, "-o", "m.json", "-b", "openvino")
    assert modelfiles.load(Path("m.json")).source.backend_name == "openvino"


@pytest.mark.parametrize(("args", "match"), [
    (["model", "fit", "nothere.jsonl", "-o", "new.json"], r"nothere.jsonl"),
    (["model", "fit", "{records}", "-o", "new.txt"], r"should end in .json"),
    (["predict", "lenet_9x", "-m", "{model}"], r"not a network name"),
    (["predict", "lenet_1c1f", "-m", "none.json"], r"no latency model at none.json: fit one"),
    (["predict", "lenet_1c1f", "-m", "{model}", "--batch", "0"], r"--batch .*positive"),
    (["predict", "lenet_1c1f", "-m", "{model}", "--form", "magic"], r"--form takes"),
    (["select", "-m", "{model}"], r"give a budget"),
    (["select", "-m", "{model}", "--tiles-per-ms", "1e9"], r"no candidate meets .* the fastest"),
    (["select", "-m", "{model}", "--tiles-per-ms", "1", "--train-top", "50"], r"--train-top"),
    (["select", "-m", "{model}", "--tiles-per-ms", "1", "--grid", "depth=0"], r"depth must be"),
    (["model", "validate", "-m", "{model}", "--nets", "0"], r"--nets must be within"),
    (["model", "validate", "-m", "{model}", "--no-measure", "--results", "none.jsonl"],
     r"no held-out records"),
    (["model", "adapt", "{records}", "-m", "{model}", "-o", "a.json"], r"which the model was fitted on"),
    (["model", "validate", "-m", "{model}", "--nets", "2"],
     r"speaks for cpu-synthetic-2c, and this machine is .*: validate it there, or fit one here"),
    (["model", "validate", "-m", "{model}", "--png", "."], r"--png \. .*(folder|\.png)"),
    (["model", "fit", "{records}", "-o", "."], r"(folder|\.json)"),
    (["select", "-m", "{model}", "--tiles-per-ms", "1", "--grid", "batch=16"], r"network fields only"),
    (["select", "-m", "{model}", "--tiles-per-ms", "1", "--grid", "depth=1..300;neurons=1..300"],
     r"has 90000 cells .*beyond 5000"),
    (["select", "-m", "{model}", "--tiles-per-ms", "1", "--models", "{records}"], r"is a file"),
    (["select", "-m", "{model}", "--tiles-per-ms", "1", "--train-top", "1"],
     r"speaks for cpu-synthetic-2c"),
])
def test_bad_input_is_one_clear_error(tmp_path: Path, fitted: Path, args: list[str], match: str) -> None:
    records = tmp_path / "sweep.jsonl"
    before = records.read_bytes()
    assert_fails(*[a.format(model=fitted, records=records) for a in args], match=match)
    assert records.read_bytes() == before


def test_adapt_from_ten_cells_of_another_backend(tmp_path: Path, fitted: Path) -> None:
    other = write(tmp_path / "ov.jsonl", sweep_records(passes=1, backend="openvino",
                                                       label="openvino latency"))
    result = cli("model", "adapt", other, "-m", fitted, "-o", tmp_path / "ov.json")
    adapted = modelfiles.load(tmp_path / "ov.json")
    assert adapted.source.backend == "openvino latency" and len(adapted.training) == 10
    assert adapted.adapted_from == "onnxruntime extended 2t (fp32) on cpu-synthetic-2c"
    assert "adapted from onnxruntime" in result.stdout


def test_fit_refuses_mixed_devices_from_the_cli(tmp_path: Path) -> None:
    both = write(tmp_path / "two.jsonl", sweep_records(passes=1) + sweep_records(passes=1, device="cpu-b"))
    assert_fails("model", "fit", both, "-o", "m2.json", match=r"mix 2 .*on cpu-b.*--device SLUG")
    cli("model", "fit", both, "-o", "m2.json", "--device", "cpu-b")


def test_predict_table_and_json(fitted: Path) -> None:
    result = cli("predict", "lenet_3c2f_d30_n768", "lenet_1c0f_k3", "-m", fitted, "--batch", "1,256")
    rows = table_rows(result.stdout)
    assert [(r[0], r[1]) for r in rows] == [("lenet_3c2f_d30_n768", "1"), ("lenet_3c2f_d30_n768", "256"),
                                            ("lenet_1c0f_k3", "1"), ("lenet_1c0f_k3", "256")]
    assert "outside the fitted range" in result.stderr and "kernel 3" in result.stderr
    data = json.loads(cli("predict", "lenet_1c1f", "-m", fitted, "--json").stdout)
    assert data[0]["measured"] > 0 and data[0]["low"] < data[0]["tiles_per_ms"] < data[0]["high"]


def test_select_names_the_pick_with_its_margin(tmp_path: Path, fitted: Path) -> None:
    records = [*sweep_records(passes=1)]
    for r in records:  # trained: deeper nets are more accurate
        spec = r["model"]["name"]
        r["test_accuracy"] = 0.9 + 0.01 * int(spec[6])
    write(tmp_path / "trained.jsonl", records)
    out = json.loads(cli("select", "--budget-ms", "100", "--tiles-per-frame", "1024", "-m", fitted,
                         "--records", tmp_path / "trained.jsonl", "--json").stdout)
    assert out["pick"] is not None and out["required_tiles_per_ms"] == pytest.approx(10.24)
    pick = next(c for c in out["candidates"] if c["net"] == out["pick"])
    assert pick["low"] >= 10.24 and pick["meets"] == "yes" and pick["source"] == "measured"
    assert pick["accuracy"] == max(c["accuracy"] for c in out["candidates"] if c["meets"] == "yes")
    table = cli("select", "--budget-ms", "100", "--tiles-per-frame", "1024", "-m", fitted,
                "--records", tmp_path / "trained.jsonl")
    assert f"pick: {out['pick']}: the most accurate" in table.stdout
    assert [r[0] for r in table_rows(table.stdout) if r[0].startswith(">")] == [f"> {out['pick']}"]


def test_validate_measures_held_out_nets_for_real(tmp_path: Path) -> None:
    """A model of this machine's ONNX Runtime (from a real grid) predicts two unseen nets
    measured fresh, in two passes: the figures, the plot and the records are real."""
    cli("sweep", "--grid", "conv_layers=1,2;fc_layers=1,2;batch=16,256", "--passes", "1",
        "--duration", "0.05", "--no-tune", "--results", tmp_path / "fit.jsonl")
    cli("model", "fit", tmp_path / "fit.jsonl", "-o", tmp_path / "m.json")
    result = cli("model", "validate", "-m", tmp_path / "m.json", "--nets", "2",
                 "--results", tmp_path / "held.jsonl", "--json")
    data = json.loads(result.stdout)
    assert data["summary"]["additive"]["n"] == 2 and data["summary"]["repeat"]["n"] == 2
    assert Path(data["png"]).read_bytes().startswith(b"\x89PNG")
    assert len([ln for ln in (tmp_path / "held.jsonl").read_text().splitlines() if ln]) == 4
    again = json.loads(cli("model", "validate", "-m", tmp_path / "m.json", "--nets", "2", "--results",
                           tmp_path / "held.jsonl", "--json").stdout)  # resumes: nothing re-measured
    assert again["summary"] == data["summary"]


def test_a_model_fitted_with_another_backend_version_is_used_with_a_warning(tmp_path: Path) -> None:
    records = sweep_records(passes=1)
    for r in records:
        r["versions"] = {"onnxruntime": "0.0.1"}
    cli("model", "fit", write(tmp_path / "old.jsonl", records), "-o", tmp_path / "old.json")
    result = cli("predict", "lenet_1c1f", "-m", tmp_path / "old.json")
    import onnxruntime

    assert f"fitted with onnxruntime 0.0.1; this machine has {onnxruntime.__version__}" in result.stderr
