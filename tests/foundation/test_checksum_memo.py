"""Model checksums are computed once and remembered; a changed file is hashed again."""

from __future__ import annotations

import hashlib
import os
import shutil
import time

import pytest

from tests.conftest import shared_file
from thalamus_bidsapp.bidsio import checksums
from thalamus_bidsapp.bidsio.checksums import remembered_digest
from thalamus_bidsapp.errors import ThalamusError


@pytest.fixture
def counted(monkeypatch):
    """Count the files actually read and hashed."""
    calls = []
    real = checksums.file_digest

    def counting(path, algorithm="sha256"):
        calls.append(os.path.realpath(path))
        return real(path, algorithm)

    monkeypatch.setattr(checksums, "file_digest", counting)
    return calls


def _age(path, seconds=60):
    """Give a file an mtime in the past, as a model file copied a while ago has."""
    past = time.time() - seconds
    os.utime(path, (past, past))


def test_digest_remembered_until_the_file_changes(tmp_path, counted):
    model = tmp_path / "model.bin"
    model.write_bytes(b"A" * 4096)
    _age(model, 120)
    memo = tmp_path / "memo"

    first = remembered_digest(model, memo)
    assert first == hashlib.sha256(b"A" * 4096).hexdigest()
    assert len(counted) == 1 and len(list(memo.iterdir())) == 1
    # Nothing changed: not recomputed, however often it is asked.
    for _ in range(3):
        assert remembered_digest(model, memo) == first
    assert len(counted) == 1

    # Same size, different content, new mtime: recomputed.
    model.write_bytes(b"B" * 4096)
    _age(model, 60)
    second = remembered_digest(model, memo)
    assert second == hashlib.sha256(b"B" * 4096).hexdigest() != first
    assert len(counted) == 2
    assert remembered_digest(model, memo) == second
    assert len(counted) == 2


def test_unwritable_memo_still_gives_the_digest(tmp_path, counted):
    model = tmp_path / "model.bin"
    model.write_bytes(b"weights")
    _age(model)
    blocked = tmp_path / "a_file" / "memo"  # its parent is a file: cannot be created
    (tmp_path / "a_file").write_text("")
    assert remembered_digest(model, blocked) == hashlib.sha256(b"weights").hexdigest()
    assert remembered_digest(model, None) == hashlib.sha256(b"weights").hexdigest()


def test_meshnet_weights_verified_once_then_again_after_a_change(tmp_path, monkeypatch, counted):
    from thalamus_bidsapp.tools import meshnet

    source = shared_file("brainchop", "models", "model30chan18cls")
    model_dir = tmp_path / "model30chan18cls"
    shutil.copytree(source, model_dir)
    for name in meshnet.model_spec().sha256:
        _age(model_dir / name, 300)
    monkeypatch.setenv(checksums.MEMO_ENV, str(tmp_path / "memo"))

    meshnet.resolve_model_dir(model_dir)
    assert len(counted) == 2  # model.json and model.bin
    meshnet.resolve_model_dir(model_dir)
    meshnet.resolve_model_dir(model_dir)
    assert len(counted) == 2

    # Corrupt model.bin without changing its size: the new mtime forces a new check, which fails.
    weights = model_dir / "model.bin"
    data = bytearray(weights.read_bytes())
    data[100] ^= 0xFF
    weights.write_bytes(bytes(data))
    _age(weights, 100)
    with pytest.raises(ThalamusError, match="corrupted"):
        meshnet.resolve_model_dir(model_dir)
    assert counted[-1] == os.path.realpath(weights)
