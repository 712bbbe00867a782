"""The one record reader: every record, this version's and version 1's, becomes tidy rows."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cnn_deploy.results import store
from cnn_deploy.results.tidy import done_cells, load, tidy

V1_BENCH = {  # a version-1 record as cnn_deploy wrote it before the baseline field
    "schema": 1, "kind": "bench", "run_id": "r1", "device": {"slug": "cpu-x-2c", "cpu": "x"},
    "model": {"name": "lenet_1c1f", "spec": {"name": "lenet_1c1f", "conv_layers": 1,
                                             "fc_layers": 1, "depth": 20, "neurons": 512}},
    "backend": {"name": "torch", "label": "torch eager NCHW [baseline]", "device": "cpu",
                "options": {}},
    "batch": 16, "requested_batch": 16, "precision": "fp32", "scenario": "offline",
    "stats": {"tiles_per_ms": 12.5, "median_ms": 1.28, "p90_ms": 1.3},
}


def test_a_version_1_record_reads_with_its_baseline_from_the_label() -> None:
    (row,) = tidy([V1_BENCH])
    assert row["net"] == "lenet_1c1f" and row["conv_layers"] == 1 and row["batch"] == 16
    assert row["baseline"] is True and row["backend_name"] == "torch"
    assert row["tiles_per_ms"] == 12.5 and row["device"] == "cpu-x-2c" and row["has_device"]


def test_the_baseline_field_wins_over_the_label() -> None:
    record = {**V1_BENCH, "backend": {"name": "torch", "label": "torch eager NCHW",
                                      "baseline": True}}
    assert tidy([record])[0]["baseline"] is True
    plain = {**V1_BENCH, "backend": {"name": "onnxruntime", "label": "onnxruntime extended 2t"}}
    assert tidy([plain])[0]["baseline"] is False


def test_hand_edited_records_with_wrong_types_do_not_crash_the_reader() -> None:
    broken = {**V1_BENCH, "model": None, "device": "x", "backend": [], "stats": None,
              "sweep": 3, "time_to_accuracy": "fast"}
    (row,) = tidy([broken])
    assert row["net"] is None and row["tiles_per_ms"] is None and not row["has_device"]


def test_profile_records_become_one_row_per_category() -> None:
    record = {"schema": 1, "kind": "profile", "batch": 10, "model": {"name": "n"},
              "categories": [{"category": "conv", "time_ms": 1.0},
                             {"category": "gemm", "time_ms": 0.5}],
              "layers": [{"category": "conv", "arch_layers": "conv1", "time_ms": 1.0}]}
    rows = tidy([record])
    assert [(r["category"], r["us_per_tile"]) for r in rows] == [("conv", 100.0), ("gemm", 50.0)]
    assert rows[0]["conv_layer_times"] == [("conv1", 1.0)]


def test_load_and_done_cells_skip_damaged_lines(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    store.append(path, {**V1_BENCH, "cell": "lenet_1c1f|b16|torch|fp32"})
    with path.open("a") as fh:
        fh.write(json.dumps({"schema": "1", "kind": "bench"}) + "\n")  # not an integer schema
        fh.write('{"schema": 1, "kind": "be')  # cut by a crash
    records, skipped = load([path])
    assert len(records) == 1 and len(skipped) == 2
    assert done_cells(path) == {"lenet_1c1f|b16|torch|fp32"}
    assert done_cells(tmp_path / "missing.jsonl") == set()


def test_a_gpu_is_one_device_in_old_and_new_records() -> None:
    old = {**V1_BENCH, "device": {"kind": "cuda", "slug": "cuda-nvidia-h200-sm90"}}
    new = {**V1_BENCH, "device": {"kind": "cuda", "slug": "nvidia-h200-sm90"}}
    assert {r["device"] for r in tidy([old, new])} == {"nvidia-h200-sm90"}


def test_the_cache_a_backend_reads_through(tmp_path: Path) -> None:
    """The CPU's last level from sysfs (the highest level, whatever the index order), the
    GPU's L2 for a CUDA backend, None where a record does not say."""
    from cnn_deploy.device import cpu_llc_bytes

    for i, (level, size) in enumerate(((1, "32K"), (3, "32768K"), (2, "1024K"))):
        folder = tmp_path / f"index{i}"
        folder.mkdir()
        (folder / "level").write_text(f"{level}\n")
        (folder / "size").write_text(f"{size}\n")
    assert cpu_llc_bytes(tmp_path) == 32768 << 10
    assert cpu_llc_bytes(tmp_path / "none") is None
    (tmp_path / "index1" / "size").write_text("garbage")
    assert cpu_llc_bytes(tmp_path) is None
    device = {"kind": "cuda", "llc_bytes": 32 << 20, "gpu": {"l2_cache_bytes": 50 << 20}}
    base = {"kind": "bench", "device": device, "stats": {"tiles_per_ms": 1.0}}
    cpu, gpu, gpu1, old = tidy([{**base, "backend": {"device": "cpu"}},
                                {**base, "backend": {"device": "cuda"}},
                                {**base, "backend": {"device": "cuda:1"}},
                                {**base, "device": {"kind": "cpu"}, "backend": {"device": "cpu"}}])
    assert cpu["cache_mb"] == pytest.approx(33.554432) and gpu["cache_mb"] == pytest.approx(52.428800)
    assert gpu1["cache_mb"] == gpu["cache_mb"] and old["cache_mb"] is None


@pytest.mark.parametrize(("flags", "lanes"), [
    ("flags\t\t: fpu sse sse2 avx avx2 fma avx512f avx512bw\n", 16),
    ("flags\t\t: fpu sse sse2 avx avx2 fma\n", 8),
    ("flags\t\t: fpu sse sse2\n", 4),
    ("processor\t: 0\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics\n", 4),
    ("processor\t: 0\nmodel name\t: some CPU\n", None),
])
def test_the_vector_lanes_a_cpu_has(tmp_path: Path, flags: str, lanes: int | None) -> None:
    """fp32 lanes of the widest vector unit /proc/cpuinfo names (x86 flags, Arm Features);
    a CPU backend's rows carry them, a CUDA backend's do not."""
    from cnn_deploy.device import cpu_simd_lanes

    (tmp_path / "cpuinfo").write_text("processor\t: 0\n" + flags)
    assert cpu_simd_lanes(tmp_path / "cpuinfo") == lanes
    assert cpu_simd_lanes(tmp_path / "missing") is None
    base = {"kind": "bench", "device": {"kind": "cuda", "simd_lanes": lanes},
            "stats": {"tiles_per_ms": 1.0}}
    cpu, gpu = tidy([{**base, "backend": {"device": "cpu"}}, {**base, "backend": {"device": "cuda"}}])
    assert cpu["simd_lanes"] == lanes and gpu["simd_lanes"] is None
