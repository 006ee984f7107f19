"""The one home of a2i's file downloads: ranged resume, a lock, a hash check, an atomic rename.

Used by ImageBind-huge (``imagebind/huge.py``), the FID Inception weights (``evaluation/inception.py``) and the
SD 2.1 UnCLIP files (``soundiff/weights.py``, which fetches them from a hub's ``resolve`` addresses). A shared
module: it imports nothing of the parts.

Policy of :func:`download_file`: the bytes go to ``<dest>.part``; an existing part is resumed with an HTTP Range
request; a server that ignores the range, answers another start, or refuses it (416: the part is already as long
as the file, or longer) makes it start over. The part becomes ``dest`` (a rename) only when it has the size the
server announced and, when a hash is given, that hash: a part of the wrong hash is deleted, so a wrong file never
lands at ``dest``. A dropped connection keeps the part for the next run to resume. The whole download holds a
lock on ``dest``: a second process waits, then finds ``dest`` there and returns it (so a caller that wants a file
replaced deletes it first).
"""

from __future__ import annotations

import hashlib
import http.client
import urllib.error
import urllib.request
from pathlib import Path

from tqdm.auto import tqdm

from a2i_utils.io import CheckpointError, file_lock, sha256_file

CHUNK_BYTES = 1 << 20


class DownloadError(CheckpointError):
    """A download that failed or was refused; ``status`` is the HTTP status when the server answered one."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class HashMismatchError(DownloadError):
    """A complete download whose hash is not the expected one (it was deleted)."""


class _RangeRefused(Exception):
    """The server refused a resume (416) or answered another range: start the download over."""


def download_file(url: str, dest: str | Path, progress: bool = True, sha256: str | None = None,
                  headers: dict[str, str] | None = None, private_headers: dict[str, str] | None = None,
                  md5: str | None = None) -> Path:
    """Download ``url`` to ``dest`` through ``dest.part`` (resumed when present); ``dest`` only once complete.

    ``sha256`` (or ``md5``, for archives that publish only that) is checked before the rename: a wrong part is
    deleted (HashMismatchError). ``headers`` go with every request, redirects included; ``private_headers`` (a
    token) only to ``url`` itself, never to the host a redirect leads to.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    with file_lock(dest):
        if dest.is_file():  # another process finished it while this one waited
            return dest
        try:
            total = _fetch_into(url, part, dest, progress, headers, private_headers)
        except _RangeRefused:
            part.unlink(missing_ok=True)
            total = _fetch_into(url, part, dest, progress, headers, private_headers)
        got = part.stat().st_size
        if total is not None and got != total:
            raise DownloadError(f"{part}: download incomplete ({got} of {total} bytes); run again to resume")
        for name, want in (("SHA-256", sha256), ("md5", md5)):
            if want is not None and (digest := _digest(part, name)) != want:
                part.unlink()
                raise HashMismatchError(f"{dest}: downloaded from {url} but its {name} is {digest}, expected {want}; "
                                        "the download was deleted")
        part.replace(dest)
    return dest


def _digest(path: Path, name: str) -> str:
    """Hex SHA-256 or md5 of a file."""
    if name == "SHA-256":
        return sha256_file(path)
    h = hashlib.md5()
    with open(path, "rb") as f:
        while block := f.read(1 << 22):
            h.update(block)
    return h.hexdigest()


def _open(url: str, done: int, dest: Path, headers: dict | None, private_headers: dict | None):
    """The response for the bytes of ``url`` from ``done`` on; DownloadError (with the HTTP status) if refused."""
    request = urllib.request.Request(url, headers={**(headers or {}), **({"Range": f"bytes={done}-"} if done else {})})
    for key, value in (private_headers or {}).items():
        request.add_unredirected_header(key, value)  # urllib drops these on a redirect to another address
    try:
        return urllib.request.urlopen(request, timeout=60)
    except urllib.error.HTTPError as err:
        if err.code == 416 and done:
            raise _RangeRefused from err
        raise DownloadError(f"could not download {url} to {dest}: {err}", status=err.code) from err
    except (urllib.error.URLError, OSError) as err:
        raise DownloadError(f"could not download {url} to {dest}: {err}") from err


def _fetch_into(url: str, part: Path, dest: Path, progress: bool, headers=None, private_headers=None) -> int | None:
    """Append the rest of ``url`` to ``part`` (all of it when the server does not resume); the announced total."""
    done = part.stat().st_size if part.exists() else 0
    resp = _open(url, done, dest, headers, private_headers)
    with resp:
        content_range = resp.headers.get("Content-Range")
        if done and getattr(resp, "status", None) != 206:
            done = 0  # the server ignored the range and sends the whole file: start over
        elif done and content_range is not None and not content_range.startswith(f"bytes {done}-"):
            raise _RangeRefused  # another range than asked for: start over
        length = resp.headers.get("Content-Length")
        total = done + int(length) if length is not None else None
        try:
            with open(part, "ab" if done else "wb") as f, tqdm(
                total=total, initial=done, unit="B", unit_scale=True, desc=f"download {dest.name}",
                disable=not progress,
            ) as bar:
                read = getattr(resp, "read1", resp.read)  # what has arrived, up to 1 MiB: the part grows steadily
                while chunk := read(CHUNK_BYTES):
                    f.write(chunk)
                    bar.update(len(chunk))
        except (OSError, http.client.HTTPException) as err:  # a dropped connection: IncompleteRead, reset...
            raise DownloadError(f"{part}: download from {url} interrupted ({type(err).__name__}); "
                                "run again to resume") from err
    return total


def fetch_verified(url: str, dest: str | Path, sha256: str, progress: bool = True, **download_kwargs) -> Path:
    """``dest`` if its SHA-256 is ``sha256``; else download ``url`` there and check it; DownloadError if wrong.

    A file already there with the wrong hash is downloaded again (once); a download with the wrong hash never
    lands at ``dest``: it is checked before the rename, removed and reported with both hashes.
    """
    dest = Path(dest)
    if dest.is_file() and sha256_file(dest) == sha256:
        return dest
    if dest.is_file():
        print(f"{dest}: SHA-256 does not match the expected {sha256[:12]}...: downloading it again")
        dest.unlink()
    return download_file(url, dest, progress=progress, sha256=sha256, **download_kwargs)
