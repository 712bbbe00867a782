"""The stream pipeline on real encoded videos of real MNIST test digits: tiling, sources, the
capture thread, accuracy through decode -> tile -> infer, and the record.

The videos are made once per module from the shared trained model's test digits: a lossless
FFV1 video (OpenCV), an H.264 one (the ffmpeg program; skipped without it), a folder of PNGs,
and one with the digits off the 28-pixel grid for the sliding window.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest

from cnn_deploy.errors import StreamError

if TYPE_CHECKING:
    from conftest import Trained

cv2 = pytest.importorskip("cv2", reason="`cnndeploy stream` needs OpenCV (the [stream] extra)")

from cnn_deploy.stream import synth  # noqa: E402
from cnn_deploy.stream.classifier import FrameResult, TileClassifier  # noqa: E402
from cnn_deploy.stream.pipeline import StreamConfig, run_stream  # noqa: E402
from cnn_deploy.stream.sinks import Sink  # noqa: E402
from cnn_deploy.stream.sources import Capture, Source, SourceInfo, classify_text, open_source  # noqa: E402
from cnn_deploy.stream.tiling import Roi, Tiler, TilingConfig, parse_pair  # noqa: E402

FRAMES = 8  # 8 x 374 = 2,992 digits per video
needs_ffmpeg = pytest.mark.skipif(shutil.which("ffmpeg") is None,
                                  reason="needs the ffmpeg program (apt install ffmpeg)")


class Keep(Sink):
    """A sink that keeps every result."""

    def __init__(self) -> None:
        self.results: list[FrameResult] = []

    def write(self, image: np.ndarray, result: FrameResult) -> None:
        self.results.append(result)

    def close(self) -> None:
        return None


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory, trained: Trained) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("videos")
    data = trained.data
    grid = synth.digit_frames(data.test_images, data.test_labels, FRAMES)
    made = {"ffv1": folder / "digits.mkv", "png": folder / "frames"}
    synth.write_video(grid, made["ffv1"], "ffv1")
    synth.write_video(grid, made["png"], "png")
    if shutil.which("ffmpeg"):
        made["h264"] = folder / "digits.mp4"
        synth.write_video(grid, made["h264"], "h264")
    off = synth.digit_frames(data.test_images, data.test_labels, 2, pitch=56, offset=(14, 14),
                             first=5000)
    made["offgrid"] = folder / "offgrid.mkv"
    synth.write_video(off, made["offgrid"], "ffv1")
    return made


def truth_of(video: Path) -> dict[str, Any]:
    import json

    path = video / "truth.json" if video.is_dir() else video.with_name(video.name + ".truth.json")
    return dict(json.loads(path.read_text()))


def stream_accuracy(model: Path, video: Path, backend: str = "onnxruntime",
                    tiling: TilingConfig | None = None) -> tuple[float, int, Any]:
    keep = Keep()
    with TileClassifier.from_path(model, backend=backend, tiling=tiling) as clf:
        run = run_stream(open_source(str(video)), clf, StreamConfig(bare=False), [keep])
    truth = truth_of(video)
    correct = compared = 0
    for r in keep.results:
        c, n = synth.accuracy(r.labels, r.origins, truth, r.index)
        correct, compared = correct + c, compared + n
    return (correct / compared if compared else float("nan")), compared, run


def direct_accuracy(trained: Trained, video: Path) -> float:
    """The model itself on the very digits the video holds (no video, no tiling)."""
    from cnn_deploy.backends import registry
    from cnn_deploy.backends.base import Target

    truth = truth_of(video)
    labels = np.asarray(truth["labels"]).reshape(-1)
    count = labels.size
    images = trained.data.test_images[:count].astype(np.float32)[:, None]
    with registry.runner("onnxruntime", Target("m", trained.onnx)) as runner:
        predicted = runner.infer(images).argmax(axis=1)
    return float((predicted == labels).mean())


# -- tiling ----------------------------------------------------------------------------
def loop_tiles(pixels: np.ndarray, tile: tuple[int, int], stride: tuple[int, int]) -> np.ndarray:
    th, tw = tile
    out = [pixels[y:y + th, x:x + tw] for y in range(0, pixels.shape[0] - th + 1, stride[0])
           for x in range(0, pixels.shape[1] - tw + 1, stride[1])]
    return np.stack(out).astype(np.float32)


@pytest.mark.parametrize("stride", [(28, 28), (14, 14), (7, 21)])
def test_tiles_are_the_frame_cut_as_a_loop_would(stride: tuple[int, int]) -> None:
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (100, 130), dtype=np.uint8)
    tiler = Tiler(TilingConfig(stride=stride), 1, (28, 28), (100, 130))
    tiles = tiler.cut(frame)
    expected = loop_tiles(frame, (28, 28), stride)
    assert tiles.shape == (len(expected), 1, 28, 28) and tiles.dtype == np.float32
    np.testing.assert_array_equal(tiles[:, 0], expected)
    assert tiles.flags.c_contiguous
    # origins: the top-left corner of each tile, row-major
    for k in (0, len(expected) - 1):
        x, y = tiler.origins()[k]
        np.testing.assert_array_equal(frame[y:y + 28, x:x + 28], tiles[k, 0])


def test_roi_pixel_scale_and_colour() -> None:
    rng = np.random.default_rng(1)
    bgr = rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)
    roi = Roi.parse("10,5,56,50")
    gray = Tiler(TilingConfig(roi=roi, pixel_scale=0.5), 1, (28, 28), (60, 80))
    want = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)[5:55, 10:66]
    np.testing.assert_allclose(gray.cut(bgr)[:, 0], loop_tiles(want, (28, 28), (28, 28)) * 0.5)
    assert gray.origins().tolist() == [[10, 5], [38, 5]]
    rgb = Tiler(TilingConfig(roi=roi), 3, (28, 28), (60, 80)).cut(bgr)
    # a 3-channel model gets RGB planes: channel 0 is OpenCV's last (red)
    np.testing.assert_array_equal(rgb[0, 0], bgr[5:33, 10:38, 2])
    np.testing.assert_array_equal(rgb[0, 2], bgr[5:33, 10:38, 0])


def test_scale_resizes_before_tiling_and_maps_origins_back() -> None:
    frame = np.zeros((112, 112), dtype=np.uint8)
    tiler = Tiler(TilingConfig(scale=0.5), 1, (28, 28), (112, 112))
    assert (tiler.rows, tiler.cols) == (2, 2)
    assert tiler.origins().tolist() == [[0, 0], [56, 0], [0, 56], [56, 56]]
    assert tiler.source_tile == (56, 56)
    assert tiler.cut(frame).shape == (4, 1, 28, 28)


@pytest.mark.parametrize(("config", "frame", "match"), [
    (TilingConfig(), (20, 100), "28x28 tile is larger than the frame"),
    (TilingConfig(roi=Roi(0, 0, 20, 20)), (100, 100), "larger than the ROI"),
    (TilingConfig(roi=Roi(90, 0, 20, 20)), (100, 100), "outside the 100x100 frame"),
    (TilingConfig(tile=(32, 32)), (100, 100), "differs from the model's input 28x28"),
    (TilingConfig(scale=0.0), (100, 100), "positive factor"),
])
def test_impossible_tilings_are_refused(config: TilingConfig, frame: tuple[int, int],
                                        match: str) -> None:
    with pytest.raises(StreamError, match=match):
        Tiler(config, 1, (28, 28), frame)


@pytest.mark.parametrize(("text", "match"), [("1,2,3", "X,Y,WIDTH,HEIGHT"), ("a,b,c,d", "X,Y"),
                                             ("-1,0,10,10", ">= 0"), ("0,0,0,10", ">= 1")])
def test_bad_roi(text: str, match: str) -> None:
    with pytest.raises(StreamError, match=match):
        Roi.parse(text)


def test_pairs() -> None:
    assert parse_pair("28", "--tile") == (28, 28)
    assert parse_pair("28x14", "--stride") == (28, 14)
    for bad in ("0", "x", "1x2x3", "-4"):
        with pytest.raises(StreamError):
            parse_pair(bad, "--stride")


# -- sources ----------------------------------------------------------------------------
@pytest.mark.parametrize(("text", "kind"), [
    ("rtsp://cam/stream", "network"), ("udp://127.0.0.1:5000", "network"),
    ("/dev/video0", "camera"), ("0", "camera"), ("video.mp4", "file"), ("frame.png", "image"),
    ("nvarguscamerasrc ! video/x-raw(memory:NVMM) ! nvvidconv ! appsink", "gstreamer")])
def test_source_kinds(text: str, kind: str) -> None:
    assert classify_text(text) == kind


@pytest.mark.parametrize(("text", "match"), [
    ("/nonexistent/video.mp4", "no such file, folder or camera"),
    ("/dev/video97", "no camera at /dev/video97"),
    ("gopher://x/y", "unknown stream scheme"),
])
def test_sources_that_cannot_open(text: str, match: str) -> None:
    with pytest.raises(StreamError, match=match):
        open_source(text)


def test_not_a_video_and_empty_folder(tmp_path: Path) -> None:
    junk = tmp_path / "notes.mp4"
    junk.write_text("this is not a video\n" * 50)
    with pytest.raises(StreamError, match="not a video this OpenCV can decode"):
        open_source(str(junk))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(StreamError, match="holds no images"):
        open_source(str(empty))


def test_refused_stream_is_a_clear_error_naming_the_url() -> None:
    with pytest.raises(StreamError, match=r"no stream at tcp://127\.0\.0\.1:9 within 2 s"):
        open_source("tcp://127.0.0.1:9", timeout_s=2)


def test_silent_stream_times_out_instead_of_hanging() -> None:
    """A server that accepts the connection and never sends a byte: the open gives up after
    the time-out (FFmpeg's interrupt callback), not never."""
    import socket
    import threading

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    held: list[socket.socket] = []
    threading.Thread(target=lambda: held.append(server.accept()[0]), daemon=True).start()
    start = time.monotonic()
    try:
        with pytest.raises(StreamError, match=rf"no stream at tcp://127\.0\.0\.1:{port} within 2 s"):
            open_source(f"tcp://127.0.0.1:{port}", timeout_s=2)
    finally:
        server.close()
        for conn in held:
            conn.close()
    assert 1.5 <= time.monotonic() - start < 12


def test_gstreamer_without_gstreamer_is_a_clear_error() -> None:
    from cnn_deploy.stream.sources import has_gstreamer

    if has_gstreamer(cv2):
        pytest.skip("this OpenCV has GStreamer")
    with pytest.raises(StreamError, match="without GStreamer"):
        open_source("videotestsrc ! videoconvert ! appsink")


class Ticker(Source):
    """A live source: frame i is filled with i, made every ``period`` seconds."""

    def __init__(self, frames: int, period: float) -> None:
        super().__init__(SourceInfo("ticker", "camera", True, 1 / period, None))
        self.frames, self.period, self.made = frames, period, 0

    def read(self) -> np.ndarray | None:
        if self.made >= self.frames:
            return None
        time.sleep(self.period)
        self.made += 1
        return np.full((28, 28), self.made - 1, dtype=np.uint8)


def test_live_source_keeps_the_newest_frame_and_counts_drops() -> None:
    got = []
    with Capture(Ticker(40, 0.002)) as capture:
        while (item := capture.get()) is not None:
            got.append(item.index)
            time.sleep(0.02)  # a consumer 10x slower than the camera
    assert capture.dropped > 20
    assert len(got) + capture.dropped == 40
    assert got == sorted(got) and got[-1] == 39  # in order, and the last frame is the newest


@pytest.mark.parametrize("threaded", [True, False])
def test_file_gives_every_frame_and_realtime_paces_it(videos: dict[str, Path],
                                                      threaded: bool) -> None:
    source = open_source(str(videos["ffv1"]))
    assert source.info.frames == FRAMES and source.info.fps == 30
    with Capture(source, depth=2, threaded=threaded) as capture:
        first = capture.prime()
        assert first is not None and first.index == 0
        indices = []
        while (item := capture.get()) is not None:
            indices.append(item.index)
            time.sleep(0.01)
    assert indices == list(range(FRAMES)) and capture.dropped == 0
    start = time.monotonic()
    with Capture(open_source(str(videos["ffv1"])), realtime=True, fps=50) as capture:
        while capture.get() is not None:
            pass
    assert time.monotonic() - start >= (FRAMES - 1) / 50 * 0.9


# -- accuracy through the whole path ------------------------------------------------------
def test_lossless_video_keeps_the_models_accuracy(trained: Trained, videos: dict[str, Path]) -> None:
    accuracy, compared, run = stream_accuracy(trained.onnx, videos["ffv1"])
    assert compared == FRAMES * 374 and run.frames == FRAMES and run.tiles == FRAMES * 374
    direct = direct_accuracy(trained, videos["ffv1"])
    assert abs(accuracy - direct) <= 0.01, (accuracy, direct)
    assert accuracy > 0.8


def test_png_folder_and_other_backends_agree(trained: Trained, videos: dict[str, Path]) -> None:
    ffv1, _, _ = stream_accuracy(trained.onnx, videos["ffv1"])
    png, compared, run = stream_accuracy(trained.onnx, videos["png"], backend="openvino")
    assert run.source.kind == "folder" and compared == FRAMES * 374
    assert abs(png - ffv1) <= 0.005
    torch_acc, _, _ = stream_accuracy(trained.checkpoint, videos["ffv1"], backend="torch")
    assert abs(torch_acc - ffv1) <= 0.005


@needs_ffmpeg
def test_h264_costs_little_accuracy(trained: Trained, videos: dict[str, Path]) -> None:
    lossless, _, _ = stream_accuracy(trained.onnx, videos["ffv1"])
    h264, compared, _ = stream_accuracy(trained.onnx, videos["h264"])
    assert compared == FRAMES * 374
    assert lossless - 0.03 <= h264 <= lossless + 0.01, (lossless, h264)


def test_sliding_window_finds_digits_off_the_grid(trained: Trained, videos: dict[str, Path]) -> None:
    _, compared28, _ = stream_accuracy(trained.onnx, videos["offgrid"])
    assert compared28 == 0  # digits at 14 + 56k: no 28-pixel tile is aligned with one
    found, compared14, run = stream_accuracy(trained.onnx, videos["offgrid"],
                                             tiling=TilingConfig(stride=(14, 14)))
    assert run.grid["rows"] == (480 - 28) // 14 + 1 and run.grid["cols"] == (640 - 28) // 14 + 1
    assert compared14 == 2 * synth.digit_frames(np.zeros((1, 28, 28), np.uint8), np.zeros(1),
                                                1, pitch=56, offset=(14, 14)).labels.size
    assert found > 0.8


# -- the run and its record ----------------------------------------------------------------
def test_run_summarises_every_stage_and_compares_with_bare(trained: Trained,
                                                           videos: dict[str, Path],
                                                           tmp_path: Path) -> None:
    from cnn_deploy.bench.timing import TimingConfig
    from cnn_deploy.results import store
    from cnn_deploy.results.records import Writer

    results = tmp_path / "r.jsonl"
    config = StreamConfig(bare_timing=TimingConfig.quick())
    with TileClassifier.from_path(trained.onnx) as clf:
        run = run_stream(open_source(str(videos["ffv1"])), clf, config, writer=Writer(results))
    assert run.frames == FRAMES and run.batch == 374 and run.dropped == 0
    assert run.bare is not None and run.ratio is not None and 0 < run.ratio < 5
    (record,) = store.read(results).records
    assert record["kind"] == "stream" and record["scenario"] == "frame"
    assert record["frames"] == FRAMES and record["tiles"] == FRAMES * 374
    for stage in ("capture", "tile", "wait", "stage", "infer", "d2h", "post", "sink"):
        assert len(record["stage_samples_ms"][stage]) == FRAMES
    assert len(record["latency_samples_ms"]) == FRAMES
    assert record["stages"]["infer"]["median_ms"] > 0
    assert record["tiles_per_ms"] == pytest.approx(run.tiles / run.wall_ms)
    assert record["device"] and record["versions"]


def test_a_profile_minimum_pads_the_last_batch() -> None:
    """An engine whose profile starts at 128: a frame's last 46 tiles run padded to 128 and
    only their 46 results are kept."""
    from fakes import FakeClockRunner

    seen: list[int] = []

    class Profiled(FakeClockRunner):
        def batch_limits(self) -> tuple[int, int] | None:
            return (128, 256)

        def run(self, staged: Any) -> Any:
            seen.append(len(staged))
            # logits: class = the tile's first pixel, so every result can be checked
            logits = np.zeros((len(staged), 10), dtype=np.float32)
            logits[np.arange(len(staged)), staged[:, 0, 0, 0].astype(int) % 10] = 5
            return logits

    frame = np.zeros((28, 28 * 302), dtype=np.uint8)
    frame[0, ::28] = np.arange(302) % 10
    with TileClassifier(Profiled([1.0]), name="fake.plan") as clf:
        result = clf.classify(frame)
    assert seen == [256, 128] and clf.batch_for(302) == 256
    np.testing.assert_array_equal(result.labels, np.arange(302) % 10)


def test_a_requested_batch_above_the_frame_is_the_frame(trained: Trained) -> None:
    with TileClassifier.from_path(trained.onnx, batch=5000) as clf:
        assert clf.batch_for(374) == 374 and clf.batch_for(10000) == 5000


def test_pixel_scale_comes_from_the_models_stated_range(trained: Trained, tmp_path: Path) -> None:
    import onnx

    with TileClassifier.from_path(trained.onnx) as clf:
        assert clf.tiling.pixel_scale == 1.0 and not any("input range" in n for n in clf.notes)
    foreign = onnx.load(str(trained.onnx))
    del foreign.metadata_props[:]
    path = tmp_path / "foreign.onnx"
    onnx.save(foreign, path)
    with TileClassifier.from_path(path) as clf:
        assert clf.tiling.pixel_scale == pytest.approx(1 / 255)
        assert any("states no input range" in n for n in clf.notes)
    with TileClassifier.from_path(path, tiling=TilingConfig(pixel_scale=1.0)) as clf:
        assert clf.tiling.pixel_scale == 1.0  # an explicit 1 is kept


def test_onnxruntime_starts_from_its_pipeline_options(trained: Trained) -> None:
    with TileClassifier.from_path(trained.onnx, backend="onnxruntime") as clf:
        assert clf.runner.options["spinning"] is False
        assert any("onnxruntime.spinning=false" in n for n in clf.notes)
    with TileClassifier.from_path(trained.onnx, options={"spinning": "true"}) as clf:
        assert clf.runner.options["spinning"] is True


def test_fixed_batch_pads_the_last_batch(trained: Trained, videos: dict[str, Path]) -> None:
    keep = Keep()
    with TileClassifier.from_path(trained.onnx, batch=100) as clf:
        run = run_stream(open_source(str(videos["ffv1"])), clf,
                         StreamConfig(bare=False, max_frames=2), [keep])
    assert run.frames == 2 and run.ended == "frame limit (2)"
    with TileClassifier.from_path(trained.onnx) as clf:
        whole = [clf.classify(f).labels for f in synth_frames(videos["ffv1"], 2)]
    for result, labels in zip(keep.results, whole, strict=True):
        np.testing.assert_array_equal(result.labels, labels)  # batches of 100 + 74 change nothing


def synth_frames(video: Path, count: int) -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(video))
    frames = [capture.read()[1] for _ in range(count)]
    capture.release()
    return frames


def test_ctrl_c_keeps_the_frames_done(trained: Trained, videos: dict[str, Path],
                                      tmp_path: Path) -> None:
    from cnn_deploy.results import store
    from cnn_deploy.results.records import Writer

    class InterruptAtThree(Keep):
        def write(self, image: np.ndarray, result: FrameResult) -> None:
            super().write(image, result)
            if len(self.results) == 3:
                raise KeyboardInterrupt

    results = tmp_path / "r.jsonl"
    with TileClassifier.from_path(trained.onnx) as clf:
        run = run_stream(open_source(str(videos["ffv1"])), clf, StreamConfig(),
                         [InterruptAtThree()], writer=Writer(results))
    assert run.interrupted and run.frames == 2 and run.bare is None  # the third never finished
    (record,) = store.read(results).records
    assert record["frames"] == 2 and record["ended"].startswith("interrupted")


def test_truncated_video_ends_cleanly_with_what_was_read(trained: Trained,
                                                         videos: dict[str, Path],
                                                         tmp_path: Path) -> None:
    cut = tmp_path / "cut.mkv"
    data = videos["ffv1"].read_bytes()
    cut.write_bytes(data[:len(data) // 2])
    with TileClassifier.from_path(trained.onnx) as clf:
        run = run_stream(open_source(str(cut)), clf, StreamConfig(bare=False))
    assert 0 < run.frames < FRAMES
    assert any("ended after" in n for n in run.notes), run.notes


def test_a_source_that_gives_no_frame_is_an_error(trained: Trained, tmp_path: Path) -> None:
    folder = tmp_path / "broken"
    folder.mkdir()
    for name in ("a.png", "b.jpg"):
        (folder / name).write_bytes(b"not an image")
    with TileClassifier.from_path(trained.onnx) as clf, \
            pytest.raises(StreamError, match="gave no frame: none of its images could be decoded"):
        run_stream(open_source(str(folder)), clf, StreamConfig(bare=False))


@pytest.mark.parametrize("threaded", [True, False])
def test_capture_thread_or_inline_classify_alike(trained: Trained, videos: dict[str, Path],
                                                 threaded: bool) -> None:
    keep = Keep()
    with TileClassifier.from_path(trained.onnx) as clf:
        run = run_stream(open_source(str(videos["ffv1"])), clf,
                         StreamConfig(bare=False, capture_thread=threaded), [keep])
    assert run.capture == ("thread" if threaded else "inline")
    assert [r.index for r in keep.results] == list(range(FRAMES))
    assert run.stages_ms["wait"][0] < 50  # the warm-up is not counted as waiting


def test_a_model_that_is_not_an_image_classifier_is_refused(tmp_path: Path) -> None:
    from cnn_deploy.errors import CnnDeployError

    from fakes import graph_model

    path = graph_model(tmp_path / "flat.onnx", "Relu", {"x": ["N", 10]}, {"y": ["N", 10]})

    with pytest.raises(CnnDeployError, match=r"\(N, C, H, W\)|NCHW"), TileClassifier.from_path(path):
        pass


def test_engine_batch_profile_smaller_than_batch_is_refused() -> None:
    from fakes import FakeClockRunner

    class Profiled(FakeClockRunner):
        def batch_limits(self) -> tuple[int, int] | None:
            return (1, 64)

    from cnn_deploy.errors import BenchError

    with pytest.raises(BenchError, match=r"batch 256 is outside .* batch profile 1\.\.64"), \
            TileClassifier(Profiled([1.0]), batch=256, name="lenet_1c1f_fp16.plan"):
        pass


def test_a_gpu_runner_copies_the_next_batch_in_while_one_computes() -> None:
    """slots() = 2: batch k + 1 is submitted before batch k is collected, and a slot is only
    reused after its batch was collected."""
    from fakes import FakeClockRunner

    log: list[str] = []

    class TwoSlots(FakeClockRunner):
        def slots(self) -> int:
            return 2

        def batch_limits(self) -> tuple[int, int] | None:
            return (1, 100)

        def submit(self, x: np.ndarray, slot: int) -> Any:
            log.append(f"submit {len(log)} slot {slot}")
            logits = np.zeros((len(x), 10), dtype=np.float32)
            logits[np.arange(len(x)), x[:, 0, 0, 0].astype(int) % 10] = 5
            return (slot, logits)

        def collect(self, handle: Any) -> np.ndarray:
            log.append(f"collect slot {handle[0]}")
            return np.asarray(handle[1])

    frame = np.zeros((28, 28 * 250), dtype=np.uint8)
    frame[0, ::28] = np.arange(250) % 10
    with TileClassifier(TwoSlots([1.0]), name="fake.plan") as clf:
        result = clf.classify(frame)
    np.testing.assert_array_equal(result.labels, np.arange(250) % 10)
    assert [line.split(" ", 1)[0] + " " + line.rsplit(" ", 1)[-1] for line in log] == [
        "submit 0", "submit 1", "collect 0", "submit 0", "collect 1", "collect 0"]
    assert set(result.stages_ms) == {"tile", "stage", "infer", "d2h", "post"}


class SlowTwoSlots:
    """A 2-slot 'GPU' runner: a batch's result is ready 20 ms after its submit (the first
    batch ever, a 300 ms warm-up). Logs submits and collects."""

    def __new__(cls, log: list[str]) -> Any:
        from fakes import FakeClockRunner

        class Runner(FakeClockRunner):
            device = "cuda"

            def slots(self) -> int:
                return 2

            def submit(self, x: np.ndarray, slot: int) -> Any:
                log.append(f"submit {int(x[0, 0, 0, 0])}")
                delay = 0.3 if not any(e.startswith("collect") for e in log) else 0.02
                logits = np.zeros((len(x), 10), dtype=np.float32)
                logits[:, int(x[0, 0, 0, 0]) % 10] = 5
                return (time.monotonic() + delay, logits, int(x[0, 0, 0, 0]))

            def collect(self, handle: Any) -> np.ndarray:
                time.sleep(max(0.0, handle[0] - time.monotonic()))
                log.append(f"collect {handle[2]}")
                return np.asarray(handle[1])

        return Runner([1.0])


class Frames(Source):
    """``count`` 28x28 frames, frame i filled with i (a file: every frame, no pacing)."""

    def __init__(self, count: int) -> None:
        super().__init__(SourceInfo("frames", "file", False, 30.0, count))
        self.count, self.made = count, 0

    def read(self) -> np.ndarray | None:
        if self.made >= self.count:
            return None
        self.made += 1
        return np.full((28, 28), self.made - 1, dtype=np.uint8)


def test_a_gpu_stream_queues_the_next_frame_before_collecting_the_last() -> None:
    log: list[str] = []
    with TileClassifier(SlowTwoSlots(log), name="fake.plan") as clf:
        run = run_stream(Frames(6), clf, StreamConfig(bare=False, capture_thread=True))
    assert run.frames == 6 and run.capture == "thread"
    timed = log[log.index("collect 0") + 1:]  # after the warm-up of frame 0
    # frame k + 1 is submitted before frame k is collected whenever it was already waiting
    # (on a loaded machine the capture thread may not always be ahead: some k suffices)
    assert any(timed.index(f"submit {k + 1}") < timed.index(f"collect {k}") for k in range(1, 5))
    assert [e for e in timed if e.startswith("collect")] == [f"collect {k}" for k in range(6)]
    # the 300 ms warm-up is neither frame 0's latency nor its wait
    assert run.latency_ms[0] < 200 and run.stages_ms["wait"][0] < 200


def test_the_record_survives_a_sink_that_fails_mid_run(trained: Trained, videos: dict[str, Path],
                                                       tmp_path: Path) -> None:
    import io

    from cnn_deploy.results import store
    from cnn_deploy.results.records import Writer
    from cnn_deploy.stream.sinks import JsonlSink

    class ClosedAfterTwo(io.StringIO):
        def write(self, text: str) -> int:
            if self.getvalue().count("\n") >= 2:
                raise BrokenPipeError(32, "Broken pipe")
            return super().write(text)

    results = tmp_path / "r.jsonl"
    with TileClassifier.from_path(trained.onnx) as clf, \
            pytest.raises(StreamError, match="reader went away"):
        run_stream(open_source(str(videos["ffv1"])), clf, StreamConfig(),
                   [JsonlSink(ClosedAfterTwo())], writer=Writer(results))
    (record,) = store.read(results).records
    assert record["frames"] == 2 and record["ended"].startswith("failed after 2 frames")
    assert record["bare"] is None


def test_realtime_deadline_follows_the_pace_not_the_file_rate(trained: Trained,
                                                             videos: dict[str, Path]) -> None:
    with TileClassifier.from_path(trained.onnx) as clf:
        run = run_stream(open_source(str(videos["ffv1"])), clf,
                         StreamConfig(bare=False, realtime=True, fps=50.0))
    assert run.deadline_ms == pytest.approx(20.0) and run.frames + run.dropped == FRAMES
