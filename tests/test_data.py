"""Behaviour tests for cnn_deploy.data against the real MNIST files and a real local HTTP server."""

from __future__ import annotations

import gzip
import hashlib
import http.server
import os
import shutil
import socket
import threading
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from cnn_deploy import data
from cnn_deploy.errors import CnnDeployError, DataError

DATA = Path(
    os.environ.get(data.ENV_VAR)
    or Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "mnist"
)
# From the shared data folder's README.md (a 50,000-image training subset, not the originals).
README_SHA256 = {
    "train-images-idx3-ubyte.gz": "ccefcfbe358551938d81e44f59a9a04e7218ba3ea5d21fd13890f24f02345167",
    "train-labels-idx1-ubyte.gz": "26c1db21faac1120c6c8f13ed6905358bca7f8e842485c54ea4f3ed21ca8cc8e",
    "t10k-images-idx3-ubyte.gz": "cfeddb84311ecf044fc6a5b0f6ee8a24d265d4e83e388400186eb114082f4209",
    "t10k-labels-idx1-ubyte.gz": "e41c74e484045d39b462a7790a4af51301bd9b0b24f0154798d713ec68c45920",
}
GZ_NAMES = [f"{stem}.gz" for stem in data.MNIST_FILES.values()]

if not all((DATA / name).is_file() for name in GZ_NAMES):
    pytest.skip(f"real MNIST files not found in {DATA}", allow_module_level=True)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def idx_bytes(array: np.ndarray) -> bytes:
    """Encode an array as IDX (big-endian), the inverse of read_idx."""
    codes = {"u1": 0x08, "i1": 0x09, "i2": 0x0B, "i4": 0x0C, "f4": 0x0D, "f8": 0x0E}
    code = codes[array.dtype.str[1:]]
    header = bytes([0, 0, code, array.ndim]) + np.array(array.shape, dtype=">u4").tobytes()
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def link_dataset(folder: Path) -> Path:
    """A folder holding symlinks to the four real files."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in GZ_NAMES:
        (folder / name).symlink_to((DATA / name).resolve())
    return folder


@pytest.fixture(scope="module")
def real() -> dict[str, np.ndarray]:
    return {key: data.read_idx(DATA / f"{stem}.gz") for key, stem in data.MNIST_FILES.items()}


# --- read_idx ---------------------------------------------------------------------------


def test_shared_files_match_readme() -> None:
    for name in GZ_NAMES:
        assert sha256(DATA / name) == README_SHA256[name]
        assert sha256(DATA / name) != data.PUBLISHED_SHA256[name]  # a subset, not the originals


def test_read_idx_real_gz_shapes_and_labels(real: dict[str, np.ndarray]) -> None:
    assert real["train_images"].shape == (50000, 28, 28)
    assert real["test_images"].shape == (10000, 28, 28)
    assert real["train_labels"].shape == (50000,)
    assert real["test_labels"].shape == (10000,)
    assert real["train_images"].dtype == np.uint8
    for key in ("train_labels", "test_labels"):
        assert set(np.unique(real[key]).tolist()) == set(range(10))
    assert real["train_images"].max() == 255 and real["train_images"].min() == 0


@pytest.mark.parametrize("key", list(data.MNIST_FILES))
def test_read_idx_raw_equals_gz(tmp_path: Path, real: dict[str, np.ndarray], key: str) -> None:
    stem = data.MNIST_FILES[key]
    raw = tmp_path / stem
    raw.write_bytes(gzip.decompress((DATA / f"{stem}.gz").read_bytes()))
    np.testing.assert_array_equal(data.read_idx(raw), real[key])


def test_read_idx_detects_gzip_by_magic_not_suffix(tmp_path: Path) -> None:
    odd = tmp_path / "labels.bin"
    shutil.copy(DATA / "t10k-labels-idx1-ubyte.gz", odd)
    assert data.read_idx(odd).shape == (10000,)
    plain_named_gz = tmp_path / "plain.gz"
    plain_named_gz.write_bytes(idx_bytes(np.arange(5, dtype=np.uint8)))
    np.testing.assert_array_equal(data.read_idx(plain_named_gz), np.arange(5))


@pytest.mark.parametrize("dtype", ["u1", "i1", ">i2", ">i4", ">f4", ">f8"])
def test_read_idx_all_dtypes(tmp_path: Path, dtype: str) -> None:
    array = (np.arange(24).reshape(2, 3, 4) - 7).astype(dtype)
    path = tmp_path / "x.idx"
    path.write_bytes(idx_bytes(array))
    got = data.read_idx(path)
    np.testing.assert_array_equal(got, array)
    assert got.dtype.isnative and got.shape == (2, 3, 4)


def test_read_idx_truncated_raw(tmp_path: Path) -> None:
    raw = gzip.decompress((DATA / "t10k-labels-idx1-ubyte.gz").read_bytes())
    path = tmp_path / "t10k-labels-idx1-ubyte"
    path.write_bytes(raw[: 8 + 5000])
    with pytest.raises(
        DataError, match=r"truncated: expected 10000 bytes, found 5000; re-download"
    ):
        data.read_idx(path)
    path.write_bytes(raw[:6])
    with pytest.raises(DataError, match="truncated"):
        data.read_idx(path)


def test_read_idx_truncated_inside_valid_gzip(tmp_path: Path) -> None:
    raw = gzip.decompress((DATA / "t10k-images-idx3-ubyte.gz").read_bytes())
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(raw[:-784]))
    with pytest.raises(DataError, match=r"truncated: expected 7840000 bytes, found 7839216"):
        data.read_idx(path)


def test_read_idx_too_long(tmp_path: Path) -> None:
    path = tmp_path / "x"
    path.write_bytes(idx_bytes(np.zeros(4, dtype=np.uint8)) + b"\0")
    with pytest.raises(DataError, match="corrupt: expected 4 bytes"):
        data.read_idx(path)


def test_read_idx_truncated_gzip_stream(tmp_path: Path) -> None:
    blob = (DATA / "t10k-images-idx3-ubyte.gz").read_bytes()
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(DataError, match="corrupt or truncated gzip"):
        data.read_idx(path)


def test_read_idx_corrupt_gzip_stream(tmp_path: Path) -> None:
    blob = bytearray((DATA / "t10k-labels-idx1-ubyte.gz").read_bytes())
    for i in range(100, 140):
        blob[i] ^= 0xFF
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(bytes(blob))
    with pytest.raises(DataError, match="corrupt or truncated gzip"):
        data.read_idx(path)


def test_read_idx_wrong_magic(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("hello, this is not IDX")
    with pytest.raises(DataError, match="not an IDX file"):
        data.read_idx(path)
    path.write_bytes(b"\x00\x00\x07\x01" + bytes(8))  # unknown type code
    with pytest.raises(DataError, match="not an IDX file"):
        data.read_idx(path)
    path.write_bytes(b"")
    with pytest.raises(DataError, match="not an IDX file"):
        data.read_idx(path)


def test_read_idx_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"no such file.*cnndeploy data download"):
        data.read_idx(tmp_path / "nope.gz")
    assert issubclass(DataError, CnnDeployError)


# --- discovery -----------------------------------------------------------------------------


def test_discovery_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cwd = tmp_path / "proj"
    explicit = link_dataset(tmp_path / "explicit")
    env = link_dataset(tmp_path / "env")
    local = link_dataset(cwd / "data" / "mnist")
    shared = link_dataset(tmp_path / "shared" / "data" / "mnist")
    monkeypatch.chdir(cwd)
    monkeypatch.setenv(data.ENV_VAR, str(env))

    assert data.search_paths(explicit) == [explicit, env, local, shared]
    assert data.find_mnist(explicit) == explicit
    assert data.find_mnist(str(explicit)) == explicit
    assert data.find_mnist() == env
    monkeypatch.delenv(data.ENV_VAR)
    assert data.search_paths() == [local, shared]
    assert data.find_mnist() == local
    shutil.rmtree(cwd / "data")
    assert data.find_mnist() == shared
    # like --data, an env folder set on purpose but lacking the files is an error (issue 13:
    # skipping it silently fell back to other digits, or to noise inputs)
    monkeypatch.setenv(data.ENV_VAR, str(tmp_path / "empty"))
    with pytest.raises(DataError, match=r"\$CNNDEPLOY_DATA=.*empty is not a folder.*unset"):
        data.find_mnist()
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"\$CNNDEPLOY_DATA=.*empty lacks train-images"):
        data.find_mnist()


def test_discovery_accepts_plain_files(tmp_path: Path) -> None:
    folder = link_dataset(tmp_path / "mixed")
    (folder / "t10k-labels-idx1-ubyte.gz").unlink()
    (folder / "t10k-labels-idx1-ubyte").write_bytes(
        gzip.decompress((DATA / "t10k-labels-idx1-ubyte.gz").read_bytes())
    )
    assert data.find_mnist(folder) == folder


def test_explicit_invalid_folder_does_not_fall_through(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(data.ENV_VAR, str(link_dataset(tmp_path / "env")))
    bogus = tmp_path / "no-such-dir"
    with pytest.raises(DataError, match=f"--data {bogus} is not a folder.*cnndeploy data download"):
        data.find_mnist(bogus)
    partial_dir = tmp_path / "partial"
    partial_dir.mkdir()
    (partial_dir / "train-images-idx3-ubyte.gz").symlink_to(DATA / "train-images-idx3-ubyte.gz")
    with pytest.raises(DataError, match="lacks train-labels-idx1-ubyte, t10k-images-idx3-ubyte"):
        data.find_mnist(partial_dir)


def test_nothing_found_lists_every_place(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cwd = tmp_path / "proj"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.delenv(data.ENV_VAR, raising=False)
    with pytest.raises(DataError) as info:
        data.find_mnist()
    message = str(info.value)
    assert message.startswith("MNIST not found; looked in:")
    for place in (cwd / "data" / "mnist", tmp_path / "shared" / "data" / "mnist"):
        assert str(place) in message
    assert f"${data.ENV_VAR}" in message and "cnndeploy data download" in message


# --- load_mnist ------------------------------------------------------------------------


def test_load_mnist_real(real: dict[str, np.ndarray]) -> None:
    mnist = data.load_mnist(DATA)
    assert mnist.root == DATA
    assert mnist.train_images.shape == (50000, 28, 28) and mnist.train_images.dtype == np.uint8
    assert mnist.test_images.shape == (10000, 28, 28)
    assert mnist.train_labels.dtype == np.int64 and mnist.test_labels.dtype == np.int64
    np.testing.assert_array_equal(mnist.test_labels, real["test_labels"])
    assert mnist.sha256 == data.dataset_sha256(DATA)
    with pytest.raises(AttributeError):
        mnist.root = Path("/")  # type: ignore[misc]


def test_dataset_sha256_is_over_the_file_sha256s(tmp_path: Path) -> None:
    lines = "".join(
        f"{README_SHA256[f'{stem}.gz']}  {stem}\n" for stem in data.MNIST_FILES.values()
    )
    assert data.dataset_sha256(DATA) == hashlib.sha256(lines.encode()).hexdigest()
    copy = link_dataset(tmp_path / "copy")
    assert data.dataset_sha256(copy) == data.dataset_sha256(DATA)
    (copy / "t10k-labels-idx1-ubyte.gz").unlink()
    (copy / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(b"different"))
    assert data.dataset_sha256(copy) != data.dataset_sha256(DATA)


def _with_test_labels(folder: Path, labels: np.ndarray) -> Path:
    link_dataset(folder)
    (folder / "t10k-labels-idx1-ubyte.gz").unlink()
    (folder / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes(labels))
    return folder


def test_load_mnist_rejects_bad_labels(tmp_path: Path, real: dict[str, np.ndarray]) -> None:
    bad = real["test_labels"].copy()
    bad[3] = 10
    with pytest.raises(DataError, match=r"labels range 0\.\.10, expected 0\.\.9"):
        data.load_mnist(_with_test_labels(tmp_path / "range", bad))
    with pytest.raises(DataError, match="10000 images but 9999 labels"):
        data.load_mnist(_with_test_labels(tmp_path / "count", real["test_labels"][:-1]))


def test_load_mnist_rejects_wrong_tile(tmp_path: Path) -> None:
    folder = link_dataset(tmp_path / "tile")
    (folder / "t10k-images-idx3-ubyte.gz").unlink()
    (folder / "t10k-images-idx3-ubyte").write_bytes(idx_bytes(np.zeros((10000, 32, 32), np.uint8)))
    with pytest.raises(DataError, match=r"expected uint8 \(N, 28, 28\)"):
        data.load_mnist(folder)


# --- split and scaling ---------------------------------------------------------------------


def test_split_train_val() -> None:
    train, val = data.split_train_val(50000)
    assert len(train) == 45000 and len(val) == 5000
    assert np.intersect1d(train, val).size == 0
    np.testing.assert_array_equal(np.union1d(train, val), np.arange(50000))
    again = data.split_train_val(50000)
    np.testing.assert_array_equal(again[0], train)
    np.testing.assert_array_equal(again[1], val)
    other = data.split_train_val(50000, seed=1)
    assert not np.array_equal(other[1], val)
    assert not np.array_equal(val, np.arange(5000))  # shuffled, not the first 5000
    for n, size in ((100, 100), (100, 200), (100, -1)):
        with pytest.raises(DataError, match="validation"):
            data.split_train_val(n, size)


def test_to_float(real: dict[str, np.ndarray]) -> None:
    batch = real["train_images"][:2000]
    raw = data.to_float(batch, normalise=False)
    assert raw.dtype == np.float32 and raw.shape == (2000, 1, 28, 28)
    assert raw.max() == 255.0 and raw.min() == 0.0
    np.testing.assert_array_equal(raw[:, 0], batch)
    norm = data.to_float(batch[:, None], normalise=True)
    assert norm.dtype == np.float32 and norm.shape == (2000, 1, 28, 28)
    assert abs(float(norm.mean())) < 0.05 and abs(float(norm.std()) - 1.0) < 0.05
    assert norm.min() == pytest.approx(-data.MNIST_MEAN / data.MNIST_STD, rel=1e-6)
    with pytest.raises(DataError, match="expected uint8 images"):
        data.to_float(batch.astype(np.float32), normalise=True)
    with pytest.raises(DataError, match="expected uint8 images"):
        data.to_float(batch[:, None, :, :14], normalise=True)


# --- download against a real local HTTP server ----------------------------------------------


class Server:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.requests: list[str] = []
        requests = self.requests

        class Handler(http.server.SimpleHTTPRequestHandler):
            def do_GET(self) -> None:
                requests.append(self.path)
                super().do_GET()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(
            ("127.0.0.1", 0), partial(Handler, directory=str(root))
        )
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    root = tmp_path / "served"
    root.mkdir()
    srv = Server(root)
    yield srv
    srv.close()


def serve_real(srv: Server) -> None:
    for name in GZ_NAMES:
        shutil.copy(DATA / name, srv.root / name)


def test_download_success_then_skip(tmp_path: Path, server: Server) -> None:
    serve_real(server)
    dest = tmp_path / "new" / "mnist"
    calls: list[tuple[str, int, int | None]] = []
    paths = data.download_mnist(
        dest, server.url, checksums=README_SHA256, progress=lambda *a: calls.append(a), timeout=10
    )
    assert paths == [dest / name for name in GZ_NAMES]
    for name in GZ_NAMES:
        assert sha256(dest / name) == README_SHA256[name]
    assert sorted(p.name for p in dest.iterdir()) == sorted(GZ_NAMES)  # no .part left
    assert len(server.requests) == 4
    for name in GZ_NAMES:
        mine = [c for c in calls if c[0] == name]
        size = (DATA / name).stat().st_size
        assert mine[0] == (name, 0, size) and mine[-1] == (name, size, size)
        assert [c[1] for c in mine] == sorted(c[1] for c in mine)
    assert data.find_mnist(dest) == dest

    calls.clear()
    assert (
        data.download_mnist(
            dest, server.url, checksums=README_SHA256, progress=lambda *a: calls.append(a)
        )
        == paths
    )
    assert len(server.requests) == 4 and calls == []

    (dest / "t10k-labels-idx1-ubyte.gz").write_bytes(b"damaged")  # a bad local copy is replaced
    data.download_mnist(dest, server.url, checksums=README_SHA256)
    assert server.requests[4:] == ["/t10k-labels-idx1-ubyte.gz"]
    assert sha256(dest / "t10k-labels-idx1-ubyte.gz") == README_SHA256["t10k-labels-idx1-ubyte.gz"]


def test_download_checksum_mismatch(tmp_path: Path, server: Server) -> None:
    serve_real(server)
    blob = bytearray((server.root / "train-labels-idx1-ubyte.gz").read_bytes())
    blob[-20] ^= 0xFF
    (server.root / "train-labels-idx1-ubyte.gz").write_bytes(bytes(blob))
    dest = tmp_path / "dest"
    expected = README_SHA256["train-labels-idx1-ubyte.gz"]
    with pytest.raises(
        DataError,
        match=rf"train-labels-idx1-ubyte\.gz: sha256 mismatch: expected {expected}, "
        rf"got [0-9a-f]{{64}}.*--mirror",
    ):
        data.download_mnist(dest, server.url, checksums=README_SHA256)
    assert not (dest / "train-labels-idx1-ubyte.gz").exists()
    assert not list(dest.glob("*.part"))
    # the file before the bad one was fetched, verified and kept
    assert (dest / "train-images-idx3-ubyte.gz").is_file()


def test_download_default_checksums_reject_the_subset(tmp_path: Path, server: Server) -> None:
    shutil.copy(DATA / "train-images-idx3-ubyte.gz", server.root)
    with pytest.raises(
        DataError, match=f"expected {data.PUBLISHED_SHA256['train-images-idx3-ubyte.gz']}"
    ):
        data.download_mnist(tmp_path / "dest", server.url)
    assert list((tmp_path / "dest").iterdir()) == []


def test_download_404(tmp_path: Path, server: Server) -> None:
    with pytest.raises(
        DataError,
        match=r"could not download http://127\.0\.0\.1:\d+/train-images-idx3-ubyte\.gz: "
        r"HTTP 404.*by hand into",
    ):
        data.download_mnist(tmp_path / "dest", server.url, checksums=README_SHA256)
    assert list((tmp_path / "dest").iterdir()) == []


def test_download_connection_refused(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(
        DataError, match=rf"could not download http://127\.0\.0\.1:{port}/.*--mirror"
    ):
        data.download_mnist(tmp_path / "dest", f"http://127.0.0.1:{port}", timeout=5)


def test_download_dest_not_creatable(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(DataError, match="cannot create"):
        data.download_mnist(blocker / "mnist", "http://127.0.0.1:9/")
