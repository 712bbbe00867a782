"""`cnndeploy report` and `compare` on a small real set of records made by the library."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from cnn_deploy import jobs
from cnn_deploy.bench.targets import resolve_target
from cnn_deploy.bench.timing import TimingConfig
from cnn_deploy.cli import app
from cnn_deploy.profile import run as prof
from cnn_deploy.results import records as result_records
from cnn_deploy.results.store import read
from cnn_deploy.results.tidy import tidy
from cnn_deploy.study import report as rep

NETS = ("lenet_1c1f", "lenet_2c1f", "lenet_1c2f")
BATCHES = (16, 64)
PNG = b"\x89PNG\r\n\x1a\n"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
runner = CliRunner()


@pytest.fixture(scope="module")
def records(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Real onnxruntime bench records (3 nets x 2 batches) and one real profile record."""
    path = tmp_path_factory.mktemp("results") / "bench.jsonl"
    quick = TimingConfig(warmup_ms=5.0, min_duration_ms=30.0, min_iterations=3)
    for net in NETS:
        with resolve_target(None, net) as (target, _):
            jobs.benchmark(target, ["onnxruntime"], BATCHES, timing=quick, processes=0,
                               results=path)
    with resolve_target(None, "lenet_2c1f") as (target, _):
        p = prof.profile_target(target, "onnxruntime", 16, runs=2, timing=quick)
    result_records.save_profiles([p], path)
    return path


@pytest.fixture(scope="module")
def built(records: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("report")
    result = runner.invoke(app, ["report", str(records), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    return out


def test_report_draws_every_figure_with_data(built: Path) -> None:
    for key in ("fig10_batch_by_fc", "fig11_batch_by_conv", "fig18_35_profile_1"):
        png = built / f"{key}.png"
        assert png.read_bytes()[:8] == PNG, key
    # no neuron or depth sweep, no Fig. 36 cells: listed as "no data", not drawn
    for key in ("fig12_neurons_by_fc", "fig15_depth_by_conv", "fig36_neurons_128"):
        assert not (built / f"{key}.png").exists()


def test_index_is_self_contained(built: Path) -> None:
    page = (built / "index.html").read_text()
    assert not re.search(r"""(src|href)\s*=\s*['"]?https?://""", page)
    assert page.count("data:image/png;base64,") == 3
    assert page.count("<p>no data</p>") >= 3  # figs 12, 15, 36 (+ Table 2, speed-ups)


def test_conclusions_have_verdicts_and_numbers(built: Path) -> None:
    page = (built / "index.html").read_text()
    lines = re.findall(r"<li class='verdict'>(.*?)</li>", page)
    assert len(lines) == 5
    for line in lines:
        verdicts = "holds|does not hold here|cannot tell at this noise level|no data"
        assert re.search(rf": ({verdicts}) \(", line), line
    fc = next(v for v in lines if "FC layers is cheaper" in v)
    assert "lenet_1c2f" in fc and "lenet_2c1f" in fc and "at batch 64" in fc
    conv2 = next(v for v in lines if "second conv" in v)
    assert re.search(r"lenet_2c1f \[.*\]: conv2 \d+% of conv time", conv2)
    assert "no data" in next(v for v in lines if "saturates" in v)  # no batch 512


def test_fc_verdict_follows_the_numbers() -> None:
    def row(net: str, tiles: float) -> dict[str, Any]:
        c, f = map(int, re.findall(r"\d+", net))
        return {"kind": "bench", "net": net, "conv_layers": c, "fc_layers": f, "batch": 1024,
                "backend": "ort", "device": "cpu", "tiles_per_ms": tiles}

    assert rep.fc_cheaper_than_conv([row("lenet_1c5f", 148.6), row("lenet_5c1f", 33.6)]).verdict \
        == "holds"
    v = rep.fc_cheaper_than_conv([row("lenet_1c5f", 10.0), row("lenet_5c1f", 33.6)])
    assert v.verdict == "does not hold here" and "0.30x" in v.detail


def test_speedup_and_table2_when_records_carry_them(records: Path) -> None:
    recs = read(records).records
    other = [json.loads(json.dumps(r)) for r in recs if r["kind"] == "bench"]
    for r in other:
        r["device"]["slug"] = "other-device"
        r["stats"]["tiles_per_ms"] *= 2
        r["time_to_accuracy"] = {"90": 1.0, "95": 2.0, "97": 3.0}
    rows = tidy([*recs, *other])
    ups = rep.speedups(rows)
    backends = {r["backend"]["label"] for r in other}  # onnxruntime and the torch baseline
    assert len(ups) == len(NETS) * len(BATCHES) * len(backends)
    assert all(u["speedup_b_over_a"] == pytest.approx(2.0) for u in ups)
    assert rep.speedup_tracks_spec(rows).detail.startswith("other-device")
    assert {t["net"] for t in rep.table2(rows)} == set(NETS)


def test_compare_ratios_and_flags(records: Path, tmp_path: Path) -> None:
    lines = records.read_text().splitlines()
    changed = []
    for line in lines:
        r = json.loads(line)
        if r["kind"] == "bench" and r["model"]["name"] == "lenet_1c1f" and r["batch"] == 16:
            r["precision"] = "fp16"
        changed.append(json.dumps(r))
    b = tmp_path / "b.jsonl"
    b.write_text("\n".join(changed) + "\n")
    result = runner.invoke(app, ["compare", str(records), str(b), "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    backends = {json.loads(line)["backend"]["label"] for line in lines if '"bench"' in line}
    assert len(rows) == len(NETS) * len(BATCHES) * len(backends)
    for r in rows:
        assert r["ratio_b_over_a"] == pytest.approx(1.0)
        flagged = r["net"] == "lenet_1c1f" and r["batch"] == 16
        assert r["comparable"] is not flagged
        assert ("precision differs" in r["why"]) is flagged
    table = runner.invoke(app, ["compare", str(records), str(b)])
    assert table.exit_code == 0 and "no: precision differs" in table.stdout


def test_missing_results_file_is_a_user_error(tmp_path: Path) -> None:
    result = runner.invoke(app, ["report", str(tmp_path / "none.jsonl"), "-o", str(tmp_path)])
    assert result.exit_code == 1 and "error:" in result.stderr and "Traceback" not in result.output


@pytest.mark.skipif(not Path(CHROMIUM).is_file(), reason=f"no Chromium at {CHROMIUM} "
                    "(apt-get install -y chromium) to open the report in a real browser")
def test_report_opens_offline_in_chromium(built: Path, tmp_path: Path) -> None:
    done = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--no-first-run", f"--user-data-dir={tmp_path}",
         "--enable-logging=stderr", "--v=0", "--dump-dom", (built / "index.html").as_uri()],
        capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    title = re.search(r"<title>(.*?)</title>", done.stdout)
    assert title is not None and title.group(1) == "images 3/3", done.stdout[:300]
    console = [line for line in done.stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]
    assert not console, console


def test_table1_lists_drift_across_thesis_loops() -> None:
    from cnn_deploy.study import report

    records = [{"schema": 1, "kind": "bench", "batch": 64, "precision": "fp32",
                "model": {"spec": {"name": "lenet_1c1f", "conv_layers": 1, "fc_layers": 1}},
                "backend": {"label": "onnxruntime extended 2t"}, "stats": {"tiles_per_ms": 40.0},
                "sweep": {"method": "thesis", "drift": -0.12}, "device": {"slug": "cpu-x"}},
               {"schema": 1, "kind": "bench", "batch": 64, "precision": "fp32",
                "model": {"spec": {"name": "lenet_2c1f", "conv_layers": 2, "fc_layers": 1}},
                "backend": {"label": "onnxruntime extended 2t"}, "stats": {"tiles_per_ms": 9.0},
                "sweep": {"method": "default"}, "device": {"slug": "cpu-x"}}]
    rows = report.table1(tidy(records))
    assert rows == [{"net": "lenet_1c1f", "backend": "onnxruntime extended 2t", "batch": 64,
                     "tiles_per_ms": 40.0, "drift_first_to_last_loop": -0.12}]


def _gpu_bench(slug: str, gpu: str, tiles_per_ms: float, batch: int) -> dict[str, Any]:
    return {"schema": 1, "kind": "bench", "batch": batch, "requested_batch": batch,
            "precision": "fp32", "scenario": "offline",
            "device": {"kind": "cuda", "slug": slug, "gpu": {"name": gpu}},
            "model": {"name": "lenet_3c1f", "spec": {"name": "lenet_3c1f", "conv_layers": 3,
                                                     "fc_layers": 1, "depth": 20, "neurons": 512}},
            "backend": {"name": "tensorrt", "label": "tensorrt lenet_3c1f_fp32", "baseline": False},
            "stats": {"tiles_per_ms": tiles_per_ms}}


@pytest.mark.parametrize(("h200", "verdict"), [(27.0 * 40, "holds"), (3.0 * 40, "does not hold here")])
def test_speedups_are_compared_with_the_devices_published_peaks(h200: float, verdict: str) -> None:
    records = [_gpu_bench("nvidia-geforce-gtx-960-sm52", "NVIDIA GeForce GTX 960", 40.0, b)
               for b in (256, 1024)]
    records += [_gpu_bench("nvidia-h200-sm90", "NVIDIA H200", h200, b) for b in (256, 1024)]
    v = rep.speedup_tracks_spec(tidy(records))
    assert v.verdict == verdict
    assert "spec ratios FP32 peak 27.76x, memory bandwidth 42.86x" in v.detail


def test_a_gpu_without_published_peaks_is_no_data() -> None:
    records = [_gpu_bench("a", "NVIDIA Mystery 9000", 10.0, 256),
               _gpu_bench("b", "NVIDIA H200", 20.0, 256)]
    v = rep.speedup_tracks_spec(tidy(records))
    assert v.verdict == "no data" and "no published peaks for a" in v.detail


def test_published_peaks_by_gpu_and_board() -> None:
    from cnn_deploy.peaks import gpu_peak

    h200 = gpu_peak("NVIDIA H200")
    assert h200 is not None and (h200["fp32_tflops"], h200["bandwidth_gbs"]) == (66.9, 4800.0)
    assert gpu_peak("NVIDIA H100 PCIe")["bandwidth_gbs"] == 2000.0  # type: ignore[index]
    assert gpu_peak("Orin (nvgpu)") is None  # every Orin module's GPU: the board decides
    orin_nano = gpu_peak("Orin (nvgpu)", "NVIDIA Jetson Orin Nano Developer Kit")
    assert orin_nano is not None and orin_nano["fp32_tflops"] == 1.28
    assert gpu_peak("NVIDIA Tegra X1")["fp16_tflops"] == 1.024  # type: ignore[index]
    assert gpu_peak("NVIDIA GeForce GTX 960")["fp16_tflops"] is None  # type: ignore[index]


def test_every_figure_says_what_it_was_measured_on_and_with(built: Path) -> None:
    """The device record and the options each backend ran with (tuned ones included) beside
    the figures: a caption under each figure and one settings table."""
    index = (built / "index.html").read_text()
    captions = re.findall(r"<p class='setting'><small>measured on: (.*?)</small>", index)
    assert captions and all("onnxruntime" in c and " on cpu-" in c for c in captions)
    table = index[index.index("Devices and settings"):]
    import onnxruntime

    assert f"onnxruntime {onnxruntime.__version__} (" in table and "threads=" in table


def test_a_coverage_net_stays_out_of_the_thesis_figures() -> None:
    """`sweep --group coverage` writes lenet_1c1f_k3 and lenet_2c1f_p2 beside the thesis
    groups: same layer counts, another net. Fig. 10/11 keep to the 5x5 valid family, and a
    record from before kernel and padding were recorded counts as that family."""
    from cnn_deploy.arch import NetSpec

    def rec(spec: NetSpec, tiles: float, full: bool = True) -> dict[str, Any]:
        fields = spec.to_dict() if full else {k: v for k, v in spec.to_dict().items()
                                               if k not in ("kernel", "padding", "pool")}
        return {"schema": 1, "kind": "bench", "device": {"slug": "cpu-x"}, "batch": 16,
                "model": {"name": spec.name, "spec": fields},
                "backend": {"name": "onnxruntime", "label": "ort"}, "stats": {"tiles_per_ms": tiles}}

    rows = tidy([rec(NetSpec(1, 1), 10.0), rec(NetSpec(1, 1, kernel=3), 99.0),
                 rec(NetSpec(2, 1, padding=2), 99.0), rec(NetSpec(1, 2), 8.0, full=False)])
    fig10, fig11 = rep.figures(rows)[:2]
    assert sorted(r["tiles_per_ms"] for r in fig10.rows) == [8.0, 10.0]
    assert [r["tiles_per_ms"] for r in fig11.rows] == [10.0]
