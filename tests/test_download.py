"""Interrupted downloads (issue 11): a local HTTP server on loopback, the downloading process SIGKILLed mid-way.

After a kill only a partial file exists, never the final one; a re-run finishes the job, the hash check passes,
and nothing half-downloaded is ever kept as final or extracted. A server that sends wrong bytes is refused.
"""

from __future__ import annotations

import hashlib
import http.server
import io
import os
import signal
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import pytest

from a2i_utils.config import get_config
from a2i_utils.data import advance
from a2i_utils.imagebind import huge
from a2i_utils.io import CheckpointError, sha256_file

REPO = Path(__file__).resolve().parents[1]
CHUNK = 16 * 1024


class Server:
    """A loopback HTTP server of ``files`` (name -> bytes) that honours Range; ``delay`` s between 16 KiB chunks.

    ``wrong`` serves other bytes of the same length; ``cut`` stops after that many bytes (the connection drops).
    ``starts`` records the first byte asked of each request.
    """

    def __init__(self, files: dict[str, bytes]):
        self.files, self.delay, self.wrong, self.cut, self.starts = files, 0.0, False, None, []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802  (http.server's name)
                body = server.files.get(self.path.lstrip("/"))
                if body is None:
                    self.send_error(404)
                    return
                if server.wrong:
                    body = bytes(255 - b for b in body)
                start = int(self.headers.get("Range", "bytes=0-")[6:].split("-")[0] or 0)
                server.starts.append(start)
                if start >= len(body) > 0:
                    self.send_error(416)
                    return
                self.send_response(206 if start else 200)
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                self.send_header("Content-Length", str(len(body) - start))
                self.end_headers()
                self._send(body[start:])

            def _send(self, data: bytes) -> None:
                limit = len(data) if server.cut is None else min(len(data), server.cut)
                try:
                    for i in range(0, limit, CHUNK):
                        self.wfile.write(data[i:min(i + CHUNK, limit)])
                        self.wfile.flush()
                        time.sleep(server.delay)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client was killed

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True).start()

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_port}/{name}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = Server({})
    yield s
    s.close()


def _archive(n_files: int = 40, size: int = 24 * 1024) -> bytes:
    """An ADVANCE-shaped zip of incompressible files (about ``n_files * size`` bytes)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for i in range(n_files):
            zf.writestr(f"vision/beach/{i:05d}.jpg", os.urandom(size))
    return buf.getvalue()


def _start(code: str) -> subprocess.Popen:
    """Run ``code`` in a fresh Python (one thread) that has a2i_utils importable."""
    prelude = "import torch; torch.set_num_threads(1)\n"
    return subprocess.Popen([sys.executable, "-c", prelude + code], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _kill_when(proc: subprocess.Popen, condition, timeout: float = 60.0) -> None:
    """SIGKILL ``proc`` as soon as ``condition()`` holds (it must, before the process ends)."""
    end = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, f"the process ended before the condition held: {proc.communicate()}"
        assert time.monotonic() < end, "timed out waiting for the download to start"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL


def _partial_bytes(folder: Path, pattern: str) -> int:
    """Bytes in the files under ``folder`` matching ``pattern`` (a download in progress)."""
    return sum(p.stat().st_size for p in folder.glob(pattern) if p.is_file()) if folder.is_dir() else 0


# ----------------------------------------------------------------------------------------------------------
# ADVANCE (the shared downloader, md5)
# ----------------------------------------------------------------------------------------------------------
def test_advance_download_killed_mid_way_then_rerun(tmp_path, server):
    data = _archive()
    md5 = hashlib.md5(data).hexdigest()
    server.files["v.zip"], server.delay = data, 0.02  # ~1 MB at 16 KiB / 20 ms: about 1.3 s
    downloads = tmp_path / "downloads"
    code = (f"from a2i_utils.data import advance\n"
            f"advance.download(advance.Archive('ADVANCE_vision.zip', {server.url('v.zip')!r}, {md5!r}), "
            f"{str(downloads)!r}, progress=False)\n")
    proc = _start(code)
    _kill_when(proc, lambda: _partial_bytes(downloads, "*.part") > 4 * CHUNK)
    final = downloads / "ADVANCE_vision.zip"
    kept = _partial_bytes(downloads, "*.part")
    assert 0 < kept < len(data) and not final.exists()

    server.delay = 0.0
    archive = advance.Archive("ADVANCE_vision.zip", server.url("v.zip"), md5)
    cfg = get_config("demo", {"cache_dir": tmp_path})
    root = advance.ensure_advance(cfg, progress=False, archives=(archive,))
    assert hashlib.md5(final.read_bytes()).hexdigest() == md5
    assert server.starts == [0, kept] and not list(downloads.glob("*.part"))  # resumed where the killed run stopped
    assert len(list((root / "vision" / "beach").iterdir())) == 40 and (root / f".extracted-{md5}").is_file()


def test_advance_server_sending_wrong_bytes_is_refused_and_nothing_kept(tmp_path, server):
    data = _archive(n_files=4)
    server.files["v.zip"], server.wrong = data, True
    cfg = get_config("demo", {"cache_dir": tmp_path})
    archive = advance.Archive("ADVANCE_vision.zip", server.url("v.zip"), hashlib.md5(data).hexdigest())
    with pytest.raises(advance.DownloadError, match=r"ADVANCE_vision\.zip from http://127\.0\.0\.1.*md5 check failed"):
        advance.ensure_advance(cfg, progress=False, archives=(archive,))
    assert sorted(p.name for p in cfg.downloads_dir.iterdir() if not p.name.endswith(".lock")) == []
    assert not (cfg.datasets_dir / "advance" / "vision").exists()


def test_advance_dropped_connection_is_a_clear_error_and_rerun_completes(tmp_path, server):
    data = _archive(n_files=8)
    server.files["v.zip"], server.cut = data, len(data) // 2
    cfg = get_config("demo", {"cache_dir": tmp_path})
    archive = advance.Archive("ADVANCE_vision.zip", server.url("v.zip"), hashlib.md5(data).hexdigest())
    with pytest.raises(advance.DownloadError, match=r"ADVANCE_vision\.zip: download from .* failed"):
        advance.ensure_advance(cfg, progress=False, archives=(archive,))
    assert not (cfg.downloads_dir / "ADVANCE_vision.zip").exists()
    server.cut = None
    advance.ensure_advance(cfg, progress=False, archives=(archive,))
    assert (cfg.downloads_dir / "ADVANCE_vision.zip").read_bytes() == data
    assert server.starts == [0, len(data) // 2]  # the part was kept and resumed


@pytest.mark.parametrize("kill_at", ["mid-extraction", "before-marker"])
def test_extraction_killed_then_rerun_completes(tmp_path, kill_at):
    """Killed while unpacking (in the third member), or with everything in place but before the marker."""
    data = _archive(n_files=6, size=1024)
    mirror = tmp_path / "v.zip"
    mirror.write_bytes(data)
    md5 = hashlib.md5(data).hexdigest()
    cache = tmp_path / "cache"
    # the kill is injected at the exact point: a self-SIGKILL from inside the extraction code
    inject = {
        "mid-extraction": "import shutil; real = shutil.copyfileobj\n"
                          "calls = []\n"
                          "def dying(*a, **k):\n"
                          "    calls.append(1)\n"
                          "    if len(calls) == 3: os.kill(os.getpid(), signal.SIGKILL)\n"
                          "    return real(*a, **k)\n"
                          "shutil.copyfileobj = dying\n",
        "before-marker": "advance.atomic_write_text = lambda *a: os.kill(os.getpid(), signal.SIGKILL)\n",
    }[kill_at]
    code = ("import os, signal\nfrom a2i_utils.config import get_config\nfrom a2i_utils.data import advance\n"
            + inject
            + f"cfg = get_config('demo', {{'cache_dir': {str(cache)!r}}})\n"
            f"advance.ensure_advance(cfg, progress=False, "
            f"archives=(advance.Archive('ADVANCE_vision.zip', {mirror.as_uri()!r}, {md5!r}),))\n")
    proc = _start(code)
    proc.wait(timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.communicate()
    cfg = get_config("demo", {"cache_dir": cache})
    root = cfg.datasets_dir / "advance"
    assert not (root / f".extracted-{md5}").exists()  # not marked done
    if kill_at == "mid-extraction":  # the half-made extraction is in its temporary folder, nothing in place
        assert list(root.glob(".extract-*.partial")) and not (root / "vision").exists()
    else:  # everything in place, only the marker missing: the re-run extracts again
        assert len(list((root / "vision" / "beach").glob("*.jpg"))) == 6
    advance.ensure_advance(cfg, progress=False,
                           archives=(advance.Archive("ADVANCE_vision.zip", mirror.as_uri(), md5),))
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        for name in zf.namelist():
            assert (root / name).read_bytes() == zf.read(name)
    assert (root / f".extracted-{md5}").is_file() and not list(root.glob(".extract-*"))


# ----------------------------------------------------------------------------------------------------------
# ImageBind-huge's downloader (Range resume)
# ----------------------------------------------------------------------------------------------------------
def test_huge_download_killed_mid_way_resumes_with_range(tmp_path, server):
    data = os.urandom(192 * CHUNK)  # 3 MiB (the downloader writes 1 MiB at a time)
    server.files["imagebind_huge.pth"], server.delay = data, 0.02  # about 4 s in all
    dest = tmp_path / "downloads" / "imagebind_huge.pth"
    part = dest.with_name(dest.name + ".part")
    code = (f"from a2i_utils.imagebind.huge import download_file\n"
            f"download_file({server.url('imagebind_huge.pth')!r}, {str(dest)!r}, progress=False)\n")
    proc = _start(code)
    _kill_when(proc, lambda: part.is_file() and part.stat().st_size > 4 * CHUNK)
    kept = part.stat().st_size
    assert 0 < kept < len(data) and not dest.exists()

    server.delay = 0.0
    huge.download_file(server.url("imagebind_huge.pth"), dest, progress=False,
                       sha256=hashlib.sha256(data).hexdigest())
    assert server.starts == [0, kept]  # the second request resumed where the killed one stopped
    assert dest.read_bytes() == data and not part.exists()


def test_huge_download_dropped_connection_keeps_the_part_and_resumes(tmp_path, server):
    data = os.urandom(20 * CHUNK)
    server.files["f.bin"], server.cut = data, 5 * CHUNK
    dest = tmp_path / "f.bin"
    with pytest.raises(CheckpointError, match=r"f\.bin\.part: download .*(interrupted|incomplete).*run again"):
        huge.download_file(server.url("f.bin"), dest, progress=False)
    assert not dest.exists() and dest.with_name("f.bin.part").stat().st_size == 5 * CHUNK
    server.cut = None
    huge.download_file(server.url("f.bin"), dest, progress=False)
    assert server.starts == [0, 5 * CHUNK] and dest.read_bytes() == data


def test_huge_download_of_a_part_longer_than_the_file_starts_over(tmp_path, server):
    """The server refuses the range (416): the part is dropped and the file downloaded from the start."""
    data = os.urandom(3 * CHUNK)
    server.files["f.bin"] = data
    dest = tmp_path / "f.bin"
    dest.with_name("f.bin.part").write_bytes(os.urandom(4 * CHUNK))  # from another file, or corrupt
    huge.download_file(server.url("f.bin"), dest, progress=False)
    assert server.starts == [4 * CHUNK, 0] and dest.read_bytes() == data


def test_huge_server_sending_wrong_bytes_is_refused_and_not_kept(tmp_path, server):
    data = os.urandom(3 * CHUNK)
    server.files["f.bin"], server.wrong = data, True
    dest = tmp_path / "dl" / "f.bin"
    with pytest.raises(CheckpointError, match=rf"^{dest}: downloaded from http.* SHA-256 is .*deleted"):
        huge.download_file(server.url("f.bin"), dest, progress=False, sha256=hashlib.sha256(data).hexdigest())
    assert [p.name for p in dest.parent.iterdir()] == ["f.bin.lock"]  # neither the file nor its .part
    server.wrong = False
    huge.download_file(server.url("f.bin"), dest, progress=False, sha256=hashlib.sha256(data).hexdigest())
    assert sha256_file(dest) == hashlib.sha256(data).hexdigest()


def twice_at_once(fetch) -> tuple[list, list[Exception]]:
    """Run ``fetch`` in two threads at once (two notebooks asking for the same file); (results, errors)."""
    results, errors = [], []

    def one():
        try:
            results.append(fetch())
        except Exception as err:  # noqa: BLE001  (the caller asserts there is none)
            errors.append(err)

    threads = [threading.Thread(target=one) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    return results, errors


def test_two_fetches_at_once_download_and_extract_once(tmp_path, server):
    """Two callers at once (two notebooks): the second waits on the archive's lock, then finds it done."""
    data = _archive(n_files=20)
    md5 = hashlib.md5(data).hexdigest()
    server.files["v.zip"], server.delay = data, 0.01  # ~0.3 s: the two calls overlap
    cfg = get_config("demo", {"cache_dir": tmp_path})
    archive = advance.Archive("ADVANCE_vision.zip", server.url("v.zip"), md5)
    results, errors = twice_at_once(lambda: advance.ensure_advance(cfg, progress=False, archives=(archive,)))
    assert errors == [] and len(results) == 2
    assert server.starts == [0]  # one download
    assert len(list((results[0] / "vision" / "beach").iterdir())) == 20


def test_two_huge_downloads_at_once_download_once(tmp_path, server):
    """Two notebooks loading ImageBind-huge for the first time: one downloads, the other waits and reuses it."""
    data = os.urandom(40 * CHUNK)
    server.files["imagebind_huge.pth"], server.delay = data, 0.005
    dest = tmp_path / "imagebind_huge.pth"
    _, errors = twice_at_once(lambda: huge.download_file(server.url("imagebind_huge.pth"), dest, progress=False))
    assert errors == [] and server.starts == [0] and dest.read_bytes() == data
