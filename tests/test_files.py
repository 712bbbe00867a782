"""One sha256 and one atomic write for every file the package writes."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from cnn_deploy.errors import CnnDeployError, ModelError
from cnn_deploy.files import file_sha256, write_atomic


def test_sha256_matches_hashlib_across_block_boundaries(tmp_path: Path) -> None:
    data = bytes(range(256)) * 9000  # > 2 MiB: several 1 MiB blocks
    path = tmp_path / "blob"
    path.write_bytes(data)
    assert file_sha256(path) == hashlib.sha256(data).hexdigest()


def test_write_atomic_replaces_whole_files_and_leaves_no_part(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "out.json"
    write_atomic(path, "first")
    write_atomic(path, b"second")
    assert path.read_text() == "second"
    assert sorted(p.name for p in path.parent.iterdir()) == ["out.json"]


def test_write_atomic_to_a_directory_is_a_user_error_naming_the_place(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=rf"cannot write the ONNX file to {tmp_path}.*choose another"):
        write_atomic(tmp_path, "x", "the ONNX file", ModelError)
    assert not list(tmp_path.iterdir())  # no .part left behind


def test_write_atomic_under_a_file_is_a_user_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(CnnDeployError, match="cannot write"):
        write_atomic(tmp_path / "file" / "out", "x")
