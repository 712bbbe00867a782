"""MNIST on disk: find it, read its IDX files, check them, split, scale, download.

Only numpy and the standard library; every error a user can cause is a
:class:`~cnn_deploy.errors.DataError` whose message says how to fix it.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import os
import urllib.error
import urllib.request
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cnn_deploy.errors import DataError
from cnn_deploy.files import file_sha256

MNIST_MEAN = 0.1307
MNIST_STD = 0.3081
PIXEL_MAX = 255.0
TILE = 28
ENV_VAR = "CNNDEPLOY_DATA"

MNIST_FILES: dict[str, str] = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}

# sha256 of the four ORIGINAL published MNIST .gz files (LeCun et al.), as listed by
# e.g. github.com/ankane/torchvision-ruby lib/torchvision/datasets/mnist.rb and
# github.com/guildai/packages gpkg/mnist/guild.yml (both agree with many others).
PUBLISHED_SHA256: dict[str, str] = {
    "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
    "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
    "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
    "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
}

# The mirror torchvision uses (yann.lecun.com itself no longer serves the files reliably).
DEFAULT_MIRROR = "https://ossci-datasets.s3.amazonaws.com/mnist/"

_FIX = (
    f"point --data or ${ENV_VAR} at a folder holding "
    + ", ".join(f"{stem}[.gz]" for stem in MNIST_FILES.values())
    + ", or run `cnndeploy data download`"
)
_REDOWNLOAD = "re-download with `cnndeploy data download`"

# IDX type codes -> big-endian numpy dtypes.
_IDX_DTYPES: dict[int, np.dtype[np.generic]] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"
_CHUNK = 1 << 16


def search_paths(explicit: str | os.PathLike[str] | None = None) -> list[Path]:
    """Folders to look in, in order: --data, $CNNDEPLOY_DATA, ./data/mnist, ../shared/data/mnist."""
    paths: list[Path] = []
    if explicit is not None:
        paths.append(Path(explicit))
    env = os.environ.get(ENV_VAR)
    if env:
        paths.append(Path(env))
    cwd = Path.cwd()
    paths.append(cwd / "data" / "mnist")
    paths.append(cwd.parent / "shared" / "data" / "mnist")
    return paths


def _locate(folder: Path, stem: str) -> Path | None:
    """The file for `stem` in `folder`, preferring `<stem>.gz` over plain `<stem>`."""
    for candidate in (folder / f"{stem}.gz", folder / stem):
        if candidate.is_file():
            return candidate
    return None


def _missing(folder: Path) -> list[str]:
    return [stem for stem in MNIST_FILES.values() if _locate(folder, stem) is None]


def _asked_for(folder: Path, named: str, or_else: str) -> Path:
    """A folder the user named (flag or variable): it must hold the four files."""
    if not folder.is_dir():
        raise DataError(f"{named} is not a folder; {_FIX}{or_else}")
    missing = _missing(folder)
    if missing:
        raise DataError(f"{named} lacks {', '.join(missing)}; {_FIX}")
    return folder


def find_mnist(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The first folder from :func:`search_paths` holding all four MNIST files."""
    if explicit is not None:
        return _asked_for(Path(explicit), f"--data {Path(explicit)}", "")
    env = os.environ.get(ENV_VAR)
    if env:  # set on purpose: a wrong value is an error, not a silent fall-back elsewhere
        return _asked_for(Path(env), f"${ENV_VAR}={env}", f" (or unset ${ENV_VAR})")
    looked: list[str] = []
    for folder in search_paths():
        if folder.is_dir() and not _missing(folder):
            return folder
        looked.append(str(folder))
    raise DataError(f"MNIST not found; looked in: {', '.join(looked)}; {_FIX}")


def check_source(explicit: str | os.PathLike[str] | None = None) -> None:
    """Before any work: a dataset asked for (``--data`` or ``$CNNDEPLOY_DATA``) must be there;
    with neither, a run may go on without digits (its inputs are noise, and it says so)."""
    if explicit is not None or os.environ.get(ENV_VAR):
        find_mnist(explicit)


def _read_bytes(path: Path) -> bytes:
    if not path.is_file():
        raise DataError(f"{path}: no such file; {_FIX}")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(
            f"{path}: cannot read ({exc.strerror or exc}); check its permissions"
        ) from exc
    if raw[:2] != _GZIP_MAGIC:
        return raw
    try:
        return gzip.decompress(raw)
    except (EOFError, OSError, zlib.error) as exc:
        raise DataError(f"{path}: corrupt or truncated gzip stream ({exc}); {_REDOWNLOAD}") from exc


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file, plain or gzip-compressed (told by its magic bytes), into a native array."""
    path = Path(path)
    data = _read_bytes(path)
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise DataError(
            f"{path}: not an IDX file (magic bytes {data[:4].hex(' ') or 'missing'}); "
            f"expected 00 00 <type> <ndim>; {_REDOWNLOAD}"
        )
    dtype = _IDX_DTYPES[data[2]]
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(
            f"{path}: truncated: expected a {header}-byte header, found {len(data)} bytes; {_REDOWNLOAD}"
        )
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    found = len(data) - header
    if found < expected:
        raise DataError(
            f"{path}: truncated: expected {expected} bytes, found {found}; {_REDOWNLOAD}"
        )
    if found > expected:
        raise DataError(
            f"{path}: corrupt: expected {expected} bytes after the header, found {found}; {_REDOWNLOAD}"
        )
    array = np.frombuffer(data, dtype=dtype, count=expected // dtype.itemsize, offset=header)
    return array.astype(dtype.newbyteorder("="), copy=True).reshape(dims)


@dataclass(frozen=True)
class Mnist:
    """The four MNIST arrays, where they came from, and a fingerprint of the files."""

    train_images: np.ndarray  # (N, 28, 28) uint8
    train_labels: np.ndarray  # (N,) int64
    test_images: np.ndarray  # (M, 28, 28) uint8
    test_labels: np.ndarray  # (M,) int64
    root: Path
    sha256: str


def _check_pair(images: np.ndarray, labels: np.ndarray, what: str, root: Path) -> None:
    where = f"MNIST {what} set in {root}"
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (TILE, TILE):
        raise DataError(
            f"{where}: images are {images.dtype} {images.shape}, expected uint8 (N, {TILE}, {TILE}); "
            f"{_REDOWNLOAD}"
        )
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(
            f"{where}: labels are {labels.dtype} {labels.shape}, expected (N,) integers; {_REDOWNLOAD}"
        )
    if len(images) != len(labels):
        raise DataError(f"{where}: {len(images)} images but {len(labels)} labels; {_REDOWNLOAD}")
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise DataError(
            f"{where}: labels range {labels.min()}..{labels.max()}, expected 0..9; {_REDOWNLOAD}"
        )


def load_mnist(explicit: str | os.PathLike[str] | None = None) -> Mnist:
    """Find MNIST (see :func:`find_mnist`), read and check all four files."""
    root = find_mnist(explicit)
    arrays: dict[str, np.ndarray] = {}
    for key, stem in MNIST_FILES.items():
        found = _locate(root, stem)
        if found is None:  # vanished since find_mnist
            raise DataError(f"{root}: {stem}[.gz]: no such file; {_FIX}")
        arrays[key] = read_idx(found)
    _check_pair(arrays["train_images"], arrays["train_labels"], "training", root)
    _check_pair(arrays["test_images"], arrays["test_labels"], "test", root)
    return Mnist(
        train_images=arrays["train_images"],
        train_labels=arrays["train_labels"].astype(np.int64),
        test_images=arrays["test_images"],
        test_labels=arrays["test_labels"].astype(np.int64),
        root=root,
        sha256=dataset_sha256(root),
    )


def load_test_images(explicit: str | os.PathLike[str] | None = None) -> np.ndarray:
    """Only the test images (N, 28, 28) uint8: what a benchmark feeds as real input."""
    root = find_mnist(explicit)
    path = _locate(root, MNIST_FILES["test_images"])
    if path is None:  # pragma: no cover - find_mnist checked it
        raise DataError(f"no test images in {root}")
    images = read_idx(path)
    if images.ndim != 3 or images.shape[1:] != (TILE, TILE):
        raise DataError(f"{path} holds {images.shape} images, not (N, {TILE}, {TILE})")
    return images


def dataset_sha256(root: Path) -> str:
    """sha256 over the lines `<file sha256>  <stem>\\n` for the four files, in MNIST_FILES order.

    Hashes the bytes as stored (a .gz hashes as compressed), so it names the exact files used.
    """
    outer = hashlib.sha256()
    for stem in MNIST_FILES.values():
        found = _locate(Path(root), stem)
        if found is None:
            raise DataError(f"{root}: {stem}[.gz]: no such file; {_FIX}")
        outer.update(f"{file_sha256(found)}  {stem}\n".encode())
    return outer.hexdigest()


def split_train_val(n: int, val_size: int = 5000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Disjoint sorted (train, val) index arrays covering range(n), from a seeded permutation."""
    if val_size < 0 or val_size >= n:
        raise DataError(
            f"cannot hold out {val_size} validation images from {n}; pass a --val-size from 0 to {n - 1}"
        )
    order = np.random.default_rng(seed).permutation(n)
    return np.sort(order[val_size:]), np.sort(order[:val_size])


def to_float(images: np.ndarray, normalise: bool) -> np.ndarray:
    """uint8 (N,28,28) or (N,1,28,28) -> float32 (N,1,28,28), raw 0..255 or (x/255 - mean)/std."""
    shape_ok = images.shape[-2:] == (TILE, TILE) and (
        images.ndim == 3 or (images.ndim == 4 and images.shape[1] == 1)
    )
    if images.dtype != np.uint8 or not shape_ok:
        raise DataError(
            f"expected uint8 images of shape (N, {TILE}, {TILE}) or (N, 1, {TILE}, {TILE}), "
            f"got {images.dtype} {images.shape}; pass MNIST pixels as loaded by load_mnist"
        )
    out = images.reshape(len(images), 1, TILE, TILE).astype(np.float32)
    if normalise:
        out /= np.float32(PIXEL_MAX)
        out -= np.float32(MNIST_MEAN)
        out /= np.float32(MNIST_STD)
    return out


def _fetch(
    url: str,
    part: Path,
    name: str,
    timeout: float,
    progress: Callable[[str, int, int | None], None] | None,
) -> str:
    """Stream `url` into `part`, returning the sha256 of what was written."""
    digest = hashlib.sha256()
    with urllib.request.urlopen(url, timeout=timeout) as response, part.open("wb") as out:
        length = response.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else None
        done = 0
        if progress is not None:
            progress(name, done, total)
        while chunk := response.read(_CHUNK):
            out.write(chunk)
            digest.update(chunk)
            done += len(chunk)
            if progress is not None:
                progress(name, done, total)
    return digest.hexdigest()


def download_mnist(
    dest: Path,
    base_url: str = DEFAULT_MIRROR,
    checksums: Mapping[str, str] | None = None,
    progress: Callable[[str, int, int | None], None] | None = None,
    timeout: float = 60.0,
) -> list[Path]:
    """Download the four MNIST .gz files into `dest`, verifying each sha256; skip good ones."""
    sums = PUBLISHED_SHA256 if checksums is None else checksums
    dest = Path(dest)
    by_hand = (
        f"pass --mirror URL for another mirror, or copy the four .gz files by hand into {dest}"
    )
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(
            f"cannot create {dest} ({exc.strerror or exc}); choose a writable --dest"
        ) from exc
    paths: list[Path] = []
    for stem in MNIST_FILES.values():
        name = f"{stem}.gz"
        expected = sums.get(name)
        if expected is None:
            raise DataError(f"no sha256 given for {name}; checksums must name all four .gz files")
        final = dest / name
        paths.append(final)
        if final.is_file() and file_sha256(final) == expected.lower():
            continue
        url = base_url.rstrip("/") + "/" + name
        part = dest / f"{name}.part"
        try:
            got = _fetch(url, part, name, timeout, progress)
            if got != expected.lower():
                raise DataError(
                    f"{url}: sha256 mismatch: expected {expected}, got {got}; "
                    f"the mirror serves a different file; {by_hand}"
                )
            os.replace(part, final)
        except urllib.error.HTTPError as exc:
            raise DataError(
                f"could not download {url}: HTTP {exc.code} {exc.reason}; {by_hand}"
            ) from exc
        except urllib.error.URLError as exc:
            raise DataError(f"could not download {url}: {exc.reason}; {by_hand}") from exc
        except (OSError, http.client.HTTPException, ValueError) as exc:
            raise DataError(f"could not download {url}: {exc!r}; {by_hand}") from exc
        finally:
            part.unlink(missing_ok=True)
    return paths
