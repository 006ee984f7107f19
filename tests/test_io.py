"""Atomic writes leave either the old file or the new one, never a partial one."""

from __future__ import annotations

import hashlib

import pytest

from a2i_utils.io import atomic_write, atomic_write_bytes, atomic_write_text, sha256_file


def test_atomic_write_replaces_and_cleans_up(tmp_path):
    target = tmp_path / "sub" / "a.txt"
    atomic_write_text(target, "one")
    atomic_write_text(target, "two")
    assert target.read_text() == "two"
    assert [p.name for p in target.parent.iterdir()] == ["a.txt"]


def test_interrupted_write_keeps_the_old_file(tmp_path):
    target = tmp_path / "a.bin"
    atomic_write_bytes(target, b"old")

    def crash(tmp):
        tmp.write_bytes(b"half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, crash)
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.bin"]


def test_sha256_file(tmp_path):
    p = tmp_path / "x"
    p.write_bytes(b"a2i" * 100_000)
    assert sha256_file(p, chunk=1000) == hashlib.sha256(b"a2i" * 100_000).hexdigest()
