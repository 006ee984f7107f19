"""Small file helpers shared by every part: atomic writes, content hashes, cache keys, checkpoint errors.

Everything a2i writes to the cache goes through :func:`atomic_write`: the data go to a temporary file in
the same folder, which is renamed onto the target only when complete, so an interrupted run never leaves
a half-written file behind. Where two processes can meet on the same output (two notebooks open at once,
``make demo`` while a notebook runs), the writer holds :func:`file_lock` on it: the second one waits, then
finds the finished result and loads it instead of computing it again.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sys
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

IMAGE_EXTS = (".jpg", ".jpeg", ".png")
AUDIO_EXTS = (".wav", ".flac", ".ogg")


class CheckpointError(RuntimeError):
    """A checkpoint or weights file that cannot be used; the message names the file and the problem."""


def atomic_write(path: str | Path, write: Callable[[Path], object]) -> Path:
    """Call ``write(tmp)`` to fill a temporary file, then rename it onto ``path``; return ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically."""
    return atomic_write(path, lambda tmp: tmp.write_text(text))


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))


def atomic_dir(path: str | Path, write: Callable[[Path], object]) -> Path:
    """Fill a temporary folder with ``write(tmp)``, then rename it onto ``path`` (replacing an old one)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        write(tmp)
        if path.exists():
            shutil.rmtree(path)
        tmp.rename(path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path


@contextmanager
def file_lock(path: str | Path, timeout: float = -1) -> Iterator[Path]:
    """Hold an inter-process lock on ``path`` (the file ``<path>.lock`` beside it) for the ``with`` block.

    Re-entrant within a process; ``timeout`` in seconds (-1 waits for ever) ends in a :class:`TimeoutError`
    naming the file. The lock is released when the holder exits, even killed: it is an OS lock (``flock``),
    not the existence of the lock file, so a crashed run never leaves a stale lock behind.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(path.with_name(path.name + ".lock")), is_singleton=True)  # one instance per file: re-entrant
    try:
        lock.acquire(timeout=timeout)  # per call: nested uses may wait differently
    except Timeout as err:
        raise TimeoutError(f"{path}: another a2i process holds its lock ({lock.lock_file}); "
                           f"wait for it to finish, or stop it") from err
    try:
        yield path
    finally:
        lock.release()



@contextmanager
def waiting_lock(path: str | Path, message: str, stream=None) -> Iterator[Path]:
    """:func:`file_lock` on ``path``; when another process holds it, print ``message`` first, then wait for it.

    The pattern of every "compute once, then reuse" step (a run, a miniature, the synthetic tree): the second
    process says why it stands still, waits, and then finds the first one's result. ``stream`` defaults to stdout.
    """
    with ExitStack() as held:
        try:
            held.enter_context(file_lock(path, timeout=0))
        except TimeoutError:
            print(message, file=stream or sys.stdout, flush=True)
            held.enter_context(file_lock(path))
        yield Path(path)

_TEMP_NAME = re.compile(r"^\..+\.(\d+)\.tmp$")  # io.atomic_write's temporary files: .<name>.<pid>.tmp


def _pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` runs on this machine (one we may not signal counts as running)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temps(folder: Path) -> int:
    """Delete the temporary files that killed writers left in ``folder``; return how many.

    :func:`a2i_utils.io.atomic_write` fills ``.<name>.<pid>.tmp`` and renames it onto ``<name>``; a writer killed
    in between leaves the temporary file. Such a file is never read as an entry (entries are looked up by their
    own name); it is deleted here once its writer ``pid`` no longer runs on this machine (a live writer's file
    is kept). Meant for caches on a local disk: a writer on another machine sharing the folder is not seen.
    """
    try:
        names = [e.name for e in os.scandir(folder)]
    except FileNotFoundError:
        return 0
    stale = [n for n in names if (m := _TEMP_NAME.match(n)) and not _pid_alive(int(m.group(1)))]
    for name in stale:
        (Path(folder) / name).unlink(missing_ok=True)
    return len(stale)


def sha256_file(path: str | Path, chunk: int = 1 << 22) -> str:
    """Hex SHA-256 of a file's bytes, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def cache_key(name: str, version: int, payload: Any) -> str:
    """``<name>-v<version>-<12 hex digits>``: the one naming convention of everything cached or trained.

    ``version`` is the code version of what is cached (bump it when the code computes something else from
    the same inputs); ``payload`` is everything else it depends on (config sections, seed, data fingerprints),
    hashed as sorted JSON. So a cache folder names what made it, and a change of either gives a new key.
    """
    blob = json.dumps({"version": version, "payload": payload}, sort_keys=True, default=str)
    return f"{name}-v{version}-{hashlib.sha1(blob.encode()).hexdigest()[:12]}"
