"""`cnndeploy stream` end to end: a real encoded video, a real loopback network stream pushed by
the ffmpeg program, the outputs (JSONL, annotated video and folder, the record), and every bad
input a user can give: one `error:` line naming the fix, exit 1, no traceback, results intact."""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
from typer.testing import CliRunner, Result

from cnn_deploy.cli import app

if TYPE_CHECKING:
    from conftest import Trained

cv2 = pytest.importorskip("cv2", reason="`cnndeploy stream` needs OpenCV (the [stream] extra)")

from cnn_deploy.stream import synth  # noqa: E402

runner = CliRunner()
needs_ffmpeg = pytest.mark.skipif(shutil.which("ffmpeg") is None,
                                  reason="needs the ffmpeg program (apt install ffmpeg)")


def cli(*args: Any, code: int = 0) -> Result:
    result = runner.invoke(app, ["stream", *(str(a) for a in args)])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"stream {args} raised {result.exception!r}\n{result.output}") \
            from result.exception
    assert "Traceback" not in result.output
    assert result.exit_code == code, f"exit {result.exit_code}, wanted {code}:\n{result.output}"
    return result


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory, trained: Trained) -> Path:
    folder = tmp_path_factory.mktemp("video")
    grid = synth.digit_frames(trained.data.test_images, trained.data.test_labels, 4)
    path = folder / "digits.mkv"
    synth.write_video(grid, path, "ffv1")
    return path


@pytest.fixture(scope="module")
def still(tmp_path_factory: pytest.TempPathFactory, trained: Trained) -> Path:
    """90 identical frames (3 s at 30 fps): a live receiver's every frame has the same truth."""
    folder = tmp_path_factory.mktemp("still")
    one = synth.digit_frames(trained.data.test_images, trained.data.test_labels, 1)
    frames = synth.DigitVideo(np.repeat(one.frames, 90, axis=0), np.repeat(one.labels, 90, axis=0),
                              one.origins)
    path = folder / "still.mkv"
    synth.write_video(frames, path, "ffv1")
    return path


@pytest.fixture
def results(tmp_path: Path) -> Path:
    path = tmp_path / "results.jsonl"
    path.write_text('{"schema": 1, "kind": "bench", "earlier": true}\n')
    return path


def test_video_to_jsonl_table_and_record(trained: Trained, video: Path, results: Path) -> None:
    before = results.read_text()
    result = cli(video, "--model", trained.onnx, "--json", "--results", results, "--no-bare")
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["frame"] for line in lines] == [0, 1, 2, 3]
    truth = json.loads(video.with_name(video.name + ".truth.json").read_text())
    correct = compared = 0
    for line in lines:
        tiles = np.asarray(line["tiles"])
        assert tiles.shape == (374, 4) and (line["rows"], line["cols"]) == (17, 22)
        c, n = synth.accuracy(tiles[:, 2].astype(int), tiles[:, :2].astype(int), truth, line["frame"])
        correct, compared = correct + c, compared + n
    assert compared == 4 * 374 and correct / compared > 0.8
    # the table goes to stderr with --json, the record after the earlier line, untouched
    assert "tiles/ms in the pipeline" in result.stderr and "per frame (ms)" in result.stderr
    text = results.read_text()
    assert text.startswith(before)
    record = json.loads(text.splitlines()[-1])
    assert record["kind"] == "stream" and record["frames"] == 4 and record["bare"] is None


def test_table_and_bare_ratio(trained: Trained, video: Path, tmp_path: Path) -> None:
    result = cli(video, "--model", trained.onnx, "--results", tmp_path / "r.jsonl")
    out = result.stdout
    for row in ("frames", "fps sustained", "tiles/ms in the pipeline", "tiles/ms bare (bench, batch 374)",
                "pipeline / bare", "dropped frames", "deadline misses (no deadline)"):
        assert row in out, out
    for stage in ("capture", "tile", "wait", "infer", "post", "sink", "latency"):
        assert re.search(rf"│ {stage} +│ +\d+\.\d{{3}} │", out), stage
    assert "stream record appended" in result.stderr


def test_annotated_video_and_folder(trained: Trained, video: Path, tmp_path: Path) -> None:
    out = tmp_path / "annotated.avi"
    cli(video, "--model", trained.onnx, "--out", out, "--no-save", "--no-bare", "--frames", 3)
    capture = cv2.VideoCapture(str(out))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    assert len(frames) == 3 and frames[0].shape == (480, 640, 3)
    assert not list(tmp_path.glob(".*part*"))  # written under a temporary name, then renamed
    folder = tmp_path / "frames"
    for threshold, where in (("0", folder), ("1", tmp_path / "greyed")):
        cli(video, "--model", trained.onnx, "--out", where, "--no-save", "--no-bare", "--frames", 2,
            "--min-confidence", threshold)
    pngs = sorted(folder.glob("frame_*.png"))
    assert [p.name for p in pngs] == ["frame_000000.png", "frame_000001.png"]
    plain = cv2.imread(str(pngs[0]))
    greyed = cv2.imread(str(tmp_path / "greyed" / pngs[0].name))
    assert plain.shape == greyed.shape == (480, 640, 3)
    # MNIST's black background turns grey where tiles are below the threshold
    assert (plain == 0).mean() > 0.5 and greyed.mean() > plain.mean() + 20


def test_sliding_window_and_roi(trained: Trained, video: Path) -> None:
    result = cli(video, "--model", trained.onnx, "--stride", 14, "--roi", "0,0,320,240",
                 "--frames", 1, "--json", "--no-save", "--no-bare")
    line = json.loads(result.stdout.splitlines()[0])
    assert (line["rows"], line["cols"]) == ((240 - 28) // 14 + 1, (320 - 28) // 14 + 1)


# -- a real network stream on loopback ------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def push(still: Path) -> Iterator[Any]:
    """push(url, delay): ffmpeg sends the still video as MPEG-TS to ``url`` after ``delay`` s."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(url: str, delay: float) -> None:
        def go() -> None:
            time.sleep(delay)
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:  # a TCP sender retries until stream listens
                proc = subprocess.Popen(
                    ["ffmpeg", "-hide_banner", "-loglevel", "error", "-re", "-stream_loop", "2",
                     "-i", str(still), "-c:v", "mpeg2video", "-q:v", "2", "-f", "mpegts", url],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                procs.append(proc)
                try:
                    if proc.wait(timeout=1.0) != 0:
                        time.sleep(0.3)
                        continue
                except subprocess.TimeoutExpired:
                    pass  # connected and sending
                return

        threading.Thread(target=go, daemon=True).start()

    yield start
    for p in procs:
        p.kill()
        p.wait(timeout=10)


def check_live(result: Result, still: Path) -> None:
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(lines) >= 10, result.stderr
    truth = json.loads(still.with_name(still.name + ".truth.json").read_text())
    tiles = np.asarray(lines[len(lines) // 2]["tiles"])
    correct, compared = synth.accuracy(tiles[:, 2].astype(int), tiles[:, :2].astype(int), truth, 0)
    assert compared == 374 and correct / compared > 0.8


@needs_ffmpeg
def test_tcp_stream_on_loopback(trained: Trained, still: Path, push: Any) -> None:
    port = free_port()
    push(f"tcp://127.0.0.1:{port}", 1.0)  # the sender connects once stream listens
    result = cli(f"tcp://127.0.0.1:{port}?listen=1", "--model", trained.onnx, "--json",
                 "--no-save", "--no-bare", "--timeout", 10, "--frames", 40)
    check_live(result, still)
    assert "deadline misses (> 33.3 ms)" in result.stderr  # live: one frame period at 30 fps


@needs_ffmpeg
def test_udp_stream_on_loopback(trained: Trained, still: Path, push: Any) -> None:
    port = free_port()
    push(f"udp://127.0.0.1:{port}?pkt_size=1316", 1.0)
    result = cli(f"udp://127.0.0.1:{port}?fifo_size=100000&overrun_nonfatal=1", "--model",
                 trained.onnx, "--json", "--no-save", "--no-bare", "--timeout", 10,
                 "--frames", 40)
    check_live(result, still)


# -- bad input ------------------------------------------------------------------------
def assert_fails(*args: Any, match: str, results: Path | None = None) -> str:
    before = results.read_bytes() if results is not None else None
    extra = ("--results", results) if results is not None else ("--no-save",)
    result = cli(*args, *extra, code=1)
    err = result.stderr
    assert err.count("error:") == 1, err
    message = err[err.index("error:"):].strip()
    assert re.search(match, message, re.DOTALL), message
    if results is not None:
        assert results.read_bytes() == before  # earlier results intact
    return message


def flat_model(folder: Path) -> Path:
    from fakes import graph_model

    return Path(graph_model(folder / "flat.onnx", "Relu", {"x": ["N", 10]}, {"y": ["N", 10]}))


def test_bad_input(trained: Trained, video: Path, tmp_path: Path, results: Path) -> None:
    model = ("--model", trained.onnx)
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00garbage" * 1000)
    empty = tmp_path / "empty"
    empty.mkdir()
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    plain = tmp_path / "plain"
    plain.write_text("x")
    existing = tmp_path / "existing.mp4"
    existing.write_text("keep me")
    full = tmp_path / "full"
    full.mkdir()
    (full / "notes.txt").write_text("keep me")
    pngs = tmp_path / "pngs"
    synth.write_video(synth.digit_frames(trained.data.test_images, trained.data.test_labels, 1),
                      pngs, "png")
    junk_pt = tmp_path / "junk.pt"
    junk_pt.write_text("junk\n")
    plan = tmp_path / "lenet_1c1f_fp16.plan"
    plan.write_bytes(b"not an engine")
    cases: list[tuple[tuple[Any, ...], str]] = [
        ((tmp_path / "missing.mp4", *model), "no such file, folder or camera"),
        ((junk, *model), "not a video this OpenCV can decode"),
        ((empty, *model), "holds no images"),
        (("/dev/video63", *model), "no camera at /dev/video63"),
        (("tcp://127.0.0.1:9", *model, "--timeout", 1), r"no stream at tcp://127\.0\.0\.1:9 within 1 s"),
        ((video, *model, "--roi", "0,0,20,20"), "tile is larger than the ROI"),
        ((video, *model, "--roi", "600,0,100,100"), "outside the 640x480 frame"),
        ((video, *model, "--roi", "nonsense"), "X,Y,WIDTH,HEIGHT"),
        ((video, *model, "--stride", "0"), "at least 1"),
        ((video, *model, "--tile", "32"), "differs from the model's input 28x28"),
        ((video, "--model", flat_model(tmp_path)), r"\(N, C, H, W\)"),
        ((video, "--model", tmp_path / "none.onnx"), "no model at"),
        ((video, "--model", a_file), "expected an .onnx file"),
        ((video,), "give the model"),
        ((video, *model, "--engine", "x.plan"), "not both"),
        ((video, "--engine", tmp_path / "x.plan"), "no engine at .*cnndeploy build"),
        ((video, "--engine", plan), "NVIDIA GPU|TensorRT|engine"),
        ((video, "--engine", trained.onnx), "expected a TensorRT plan"),
        ((video, "--model", plan), "pass it as --engine"),
        ((video, *model, "--out", a_file / "x.avi"), "does not exist|not writable"),
        ((video, *model, "--out", a_file), "expected a video"),
        ((video, *model, "--out", plain), "is a file, not a folder"),
        ((video, *model, "--out", tmp_path / "x.gif"), "expected a video"),
        ((video, *model, "--batch", 0), "at least 1"),
        ((video, *model, "--fps", -5), "positive number"),
        ((video, *model, "-b", "tensorflow"), "unknown backend"),
        ((video, *model, "-b", "onnxruntime", "-o", "openvino.hint=latency"), "one backend"),
        ((video, *model, "-o", "onnxruntime.threads=-3"), "at least 1"),
        ((video, *model, "--min-confidence", 2), "within 0..1"),
        ((video, *model, "--out", video), "would overwrite the source"),
        ((pngs, *model, "--out", pngs / "annotated"), "would overwrite the source"),
        ((video, *model, "--out", existing), "exists: choose another path or add --force"),
        ((video, *model, "--out", full), "holds files: choose a new folder or add --force"),
        ((video, *model, "--out", ""), "not the current folder"),
        ((video, *model, "--stride", 1), r"277,689 tiles .* raise --stride"),
        ((video, *model, "--scale", 50), r"megapixels\): lower --scale"),
        ((video, *model, "--timeout", 1e12), "at most 3600"),
        ((video, *model, "--pixel-scale", 1e308), "at most"),
        ((video, *model, "--realtime", "--fps", 0.001), "at least 0.1"),
        ((video, "--model", junk_pt), "not a readable cnn_deploy checkpoint"),
        ((video, "--model", seg_model(tmp_path)), r"output is \(.*\): stream needs class scores"),
    ]
    for args, match in cases:
        assert_fails(*args, match=match, results=results)
    assert existing.read_text() == "keep me" and (full / "notes.txt").read_text() == "keep me"
    before = trained.onnx.read_bytes()
    result = cli(video, *model, "--results", trained.onnx, code=1)  # appending would damage it
    assert "not a JSON-lines results file" in result.stderr and trained.onnx.read_bytes() == before
    assert video.stat().st_size > 1000


def seg_model(folder: Path) -> Path:
    """A model whose output is an image (N, 2, 28, 28), not class scores."""
    from fakes import graph_model

    return Path(graph_model(folder / "seg.onnx", "Concat", {"x": ["N", 1, 28, 28]},
                            {"y": ["N", 2, 28, 28]}, axis=1))


def test_force_lets_out_replace_a_video(trained: Trained, video: Path, tmp_path: Path) -> None:
    out = tmp_path / "annotated.avi"
    out.write_text("old")
    cli(video, "--model", trained.onnx, "--out", out, "--force", "--frames", 1, "--no-save",
        "--no-bare")
    assert out.stat().st_size > 1000


def test_data_video_bad_input(tmp_path: Path) -> None:
    made = tmp_path / "made.mkv"
    made.write_text("keep me")
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    (mixed / "a.png").write_text("mine")
    cases: list[tuple[tuple[Any, ...], str]] = [
        ((made,), "exists: choose another path or add --force"),
        ((mixed, "--force"), "other files in it"),
        (("", "--force"), "give a file name"),
        ((tmp_path / "x.gif",), "give a .mkv, .avi or .mp4 path"),
        ((tmp_path / "no" / "x.mkv",), "does not exist: create it first"),
        ((tmp_path / "x.mkv", "--size", "100000x100000"), "within 28..8192"),
        ((tmp_path / "x.mkv", "--size", "0x0"), "within 28..8192"),
        ((tmp_path / "x.mkv", "--size", "abc"), "WIDTHxHEIGHT"),
        ((tmp_path / "x.mp4", "--size", "641x481", "--codec", "h264"), "even width and height"),
        ((tmp_path / "x.mkv", "--fps", "0.0001"), "1..1000"),
        ((tmp_path / "x.mkv", "--frames", 0), "1..100000"),
        ((tmp_path / "x.mkv", "--offset", "a,b"), "X,Y"),
        ((tmp_path / "x.mkv", "--codec", "vp9"), "choose one of"),
        (("/dev/null", "--force"), "not a regular file or folder"),
    ]
    for args, match in cases:
        result = runner.invoke(app, ["data", "video", *(str(a) for a in args)])
        assert "Traceback" not in result.output, args
        assert result.exit_code == 1, (args, result.output)
        assert result.stderr.count("error:") == 1 and re.search(match, result.stderr), (args, result.stderr)
    assert made.read_text() == "keep me" and (mixed / "a.png").read_text() == "mine"
    assert not list(Path("/dev").glob(".null.part*"))


def test_unwritable_results_fail_before_any_frame(trained: Trained, video: Path,
                                                  tmp_path: Path) -> None:
    folder = tmp_path / "results_dir.jsonl"
    folder.mkdir()
    result = cli(video, "--model", trained.onnx, "--results", folder, code=1)
    assert "error:" in result.stderr and "stream" not in result.stdout


@pytest.mark.parametrize(("signame", "code"), [("SIGINT", 130), ("SIGTERM", 143)])
def test_ctrl_c_and_sigterm_end_with_the_table_and_the_record(trained: Trained, still: Path,
                                                               tmp_path: Path, signame: str,
                                                               code: int) -> None:
    import os
    import signal
    import sys

    results = tmp_path / "r.jsonl"
    results.write_text('{"schema": 1, "kind": "bench", "earlier": true}\n')
    proc = subprocess.Popen([sys.executable, "-m", "cnn_deploy", "stream", str(still), "--model",
                             str(trained.onnx), "--realtime", "--fps", "10", "--results", str(results)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "COLUMNS": "120"})
    time.sleep(6)  # loaded, and a few frames at 10 fps
    proc.send_signal(getattr(signal, signame))
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    assert "Traceback" not in out + err and "fps sustained" in out
    lines = results.read_text().splitlines()
    assert len(lines) == 2 and json.loads(lines[0])["earlier"]
    record = json.loads(lines[1])
    assert record["kind"] == "stream" and record["frames"] > 0 and record["ended"].startswith("interrupted")
