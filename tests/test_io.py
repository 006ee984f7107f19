"""Atomic writes leave either the old file or the new one, never a partial one; file locks exclude other
processes, and a killed holder's lock is free again."""

from __future__ import annotations

import hashlib
import os
import re
import select
import signal
import subprocess
import sys
import threading
import time

import pytest

from a2i_utils.io import atomic_write, atomic_write_bytes, atomic_write_text, file_lock, sha256_file, waiting_lock


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


# ----------------------------------------------------------------------------------------------------------
# file_lock, held by other processes
# ----------------------------------------------------------------------------------------------------------
HOLDER = """
import sys
import threading
from a2i_utils.io import file_lock
print("WAITING", flush=True)
with file_lock(sys.argv[1]):
    print("HELD", flush=True)
    sys.stdin.readline()  # until the test says so
"""


def _locker(path) -> subprocess.Popen:
    """A child process that takes ``file_lock(path)``, says so, and holds it until a line arrives on its stdin."""
    return subprocess.Popen([sys.executable, "-c", HOLDER, str(path)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _said(proc: subprocess.Popen, word: str, timeout: float) -> bool:
    """Whether the child prints the line ``word`` within ``timeout`` seconds (its output is read meanwhile)."""
    out, deadline = getattr(proc, "said", b""), time.monotonic() + timeout
    while f"\n{word}\n".encode() not in b"\n" + out:
        ready, _, _ = select.select([proc.stdout], [], [], max(0.0, deadline - time.monotonic()))
        chunk = os.read(proc.stdout.fileno(), 4096) if ready else b""
        if not chunk:
            proc.said = out
            return False
        out += chunk
    proc.said = out
    return True


def _stop(*procs: subprocess.Popen) -> None:
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait()
        p.stdin.close()
        p.stdout.close()


def test_second_process_waits_for_the_lock_and_timeout_names_the_file(tmp_path):
    target = tmp_path / "tree"
    holder = _locker(target)
    waiter = None
    try:
        assert _said(holder, "HELD", 60)
        with pytest.raises(TimeoutError, match=f"^{re.escape(str(target))}: another a2i process holds its lock"):
            with file_lock(target, timeout=0.2):
                pass
        waiter = _locker(target)
        assert _said(waiter, "WAITING", 60)
        assert not _said(waiter, "HELD", 1.0)  # blocked while the first one holds the lock
        holder.stdin.write(b"\n")
        holder.stdin.flush()  # the first one lets go ...
        assert _said(waiter, "HELD", 60)  # ... and the second one gets it
    finally:
        _stop(holder, *([waiter] if waiter else []))


def test_a_killed_holder_releases_the_lock(tmp_path):
    target = tmp_path / "cache-entry"
    holder = _locker(target)
    waiter = None
    try:
        assert _said(holder, "HELD", 60)
        waiter = _locker(target)
        assert _said(waiter, "WAITING", 60) and not _said(waiter, "HELD", 0.5)
        os.kill(holder.pid, signal.SIGKILL)
        assert _said(waiter, "HELD", 60)  # the OS dropped the dead holder's lock
        assert holder.wait() == -signal.SIGKILL
        assert (tmp_path / "cache-entry.lock").exists()  # the lock file stays; it is not what locks
    finally:
        _stop(holder, *([waiter] if waiter else []))


def test_lock_is_reentrant_within_a_process(tmp_path):
    with file_lock(tmp_path / "x"), file_lock(tmp_path / "x"):
        pass
    with file_lock(tmp_path / "x", timeout=0):
        pass  # released by both exits


def test_file_lock_nested_with_different_timeouts(tmp_path):
    """A lock taken with one timeout can be taken again inside with another (filelock's singleton refused it)."""
    target = tmp_path / "entry.bin"
    with file_lock(target, timeout=0), file_lock(target), file_lock(target, timeout=5):
        assert (tmp_path / "entry.bin.lock").exists()


def test_waiting_lock_says_why_it_waits_only_when_another_process_holds_it(tmp_path, capsys):
    target = tmp_path / "run"
    with waiting_lock(target, "run is busy: waiting"):  # free: taken at once, nothing said
        pass
    assert capsys.readouterr().out == ""
    holder = _locker(target)
    try:
        assert _said(holder, "HELD", 60)
        threading.Timer(1.0, lambda: (holder.stdin.write(b"\n"), holder.stdin.flush())).start()  # lets go in 1 s
        with waiting_lock(target, "run is busy: waiting"):
            assert holder.wait(timeout=60) == 0  # we hold it only once the holder has finished
        assert capsys.readouterr().out == "run is busy: waiting\n"
    finally:
        _stop(holder)
