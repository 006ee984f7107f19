"""ADVANCE (Hu et al. 2020, Zenodo record 3828124): download with an md5 check, safe extraction.

The two archives go to ``cfg.downloads_dir`` (the shared downloader: resumable, md5 check) and unpack into
``cfg.datasets_dir / "advance"`` as ``vision/<class>/*.jpg`` and ``sound/<class>/*.wav``.

Policy, so that an interrupted or hostile download never leaves a wrong result:

- a download goes to ``<name>.part`` (resumed with an HTTP Range request after an interruption) and is renamed
  to its final name only once complete and of the right md5; a wrong file is deleted;
- an archive already in ``downloads_dir`` is used only if its md5 matches, else it is deleted and downloaded again;
- extraction refuses the whole archive, before writing anything, when any member is absolute, climbs out with
  ``..``, or is anything but a regular file or a folder (symbolic or hard link, device, FIFO);
- an archive is unpacked into a temporary folder and moved into place; the ``.extracted-<md5>`` marker is written
  last, so a run killed while extracting extracts again;
- each archive is fetched and extracted under a file lock: two processes never download or unpack it at once.
"""

from __future__ import annotations

import hashlib
import shutil
import stat
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from a2i_utils.downloads import HashMismatchError, download_file
from a2i_utils.io import CheckpointError, atomic_write_text, file_lock

ZENODO = "https://zenodo.org/records/3828124/files"


@dataclass(frozen=True)
class Archive:
    """One archive to download: file name, address and md5."""

    name: str
    url: str
    md5: str


ARCHIVES: tuple[Archive, ...] = (
    Archive("ADVANCE_vision.zip", f"{ZENODO}/ADVANCE_vision.zip?download=1", "a9e8748219ef5864d3b5a8979a67b471"),
    Archive("ADVANCE_sound.zip", f"{ZENODO}/ADVANCE_sound.zip?download=1", "a2d12f2d2a64f5c3d3a9d8c09aaf1c31"),
)


class UnsafeArchiveError(ValueError):
    """An archive with a member that would be written outside the target folder."""


class DownloadError(RuntimeError):
    """A download that failed or did not match its md5."""


def md5_file(path: Path, chunk: int = 1 << 22) -> str:
    """Hex md5 of a file's bytes, read in chunks."""
    h = hashlib.md5()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def download(archive: Archive, downloads_dir: Path, progress: bool = True) -> Path:
    """Download ``archive`` into ``downloads_dir`` unless a file with the right md5 is there; return its path.

    A file there with another md5 is deleted and downloaded again. The download goes through the shared downloader
    (:func:`a2i_utils.downloads.download_file`): ``<name>.part``, resumed after an interruption, renamed to its final
    name only once complete and of the right md5 (a wrong one is deleted).
    """
    downloads_dir = Path(downloads_dir)
    final = downloads_dir / archive.name
    with file_lock(final):
        if final.is_file():
            if md5_file(final) == archive.md5:
                return final
            print(f"{final}: md5 does not match the expected {archive.md5}: deleted, downloading it again")
            final.unlink()
        shutil.rmtree(downloads_dir / f".partial-{archive.name}", ignore_errors=True)  # an older a2i's staging folder
        try:
            download_file(archive.url, final, progress=progress, md5=archive.md5)
        except HashMismatchError as err:
            raise DownloadError(f"{archive.name} from {archive.url}: md5 check failed, file refused ({err})") from err
        except CheckpointError as err:  # no network, HTTP error, dropped connection (the part is kept)
            raise DownloadError(
                f"{archive.name}: download from {archive.url} failed ({err}). Run again to resume; without network, "
                f"copy the file (md5 {archive.md5}) to {final} and run again."
            ) from err
    return final


def _member_problem(name: str, kind: str) -> str | None:
    """Why an archive member is unsafe to extract, or None; ``kind`` is "file", "dir" or what else it is."""
    p = PurePosixPath(name.replace("\\", "/"))
    if kind not in ("file", "dir"):
        return f"is a {kind}"
    if p.is_absolute() or (p.parts and p.parts[0].endswith(":")):
        return "has an absolute path"
    if ".." in p.parts:
        return "escapes the target folder with '..'"
    return None


def _zip_kind(info: zipfile.ZipInfo) -> str:
    """What a zip member is, from its Unix mode when it has one (zip stores links and devices there)."""
    mode = info.external_attr >> 16
    if stat.S_IFMT(mode) == 0:  # no Unix file type recorded (e.g. made on Windows): a file or a folder
        return "dir" if info.is_dir() else "file"
    kinds = {stat.S_IFREG: "file", stat.S_IFDIR: "dir", stat.S_IFLNK: "symbolic link", stat.S_IFCHR: "device file",
             stat.S_IFBLK: "device file", stat.S_IFIFO: "FIFO", stat.S_IFSOCK: "socket"}
    return kinds.get(stat.S_IFMT(mode), "special file")


def _tar_kind(m: tarfile.TarInfo) -> str:
    """What a tar member is."""
    if m.isfile() or m.isdir():
        return "file" if m.isfile() else "dir"
    if m.issym() or m.islnk():
        return "symbolic link" if m.issym() else "hard link"
    return "device file" if m.isdev() and not m.isfifo() else "FIFO" if m.isfifo() else "special file"


def check_archive(path: Path) -> list[str]:
    """Member names of a zip or tar archive, after refusing any unsafe member (:func:`_member_problem`)."""
    path = Path(path)
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            members = [(i.filename, _zip_kind(i)) for i in zf.infolist()]
    elif tarfile.is_tarfile(path):
        with tarfile.open(path) as tf:
            members = [(m.name, _tar_kind(m)) for m in tf.getmembers()]
    else:
        raise UnsafeArchiveError(f"{path}: not a zip or tar archive")
    for name, kind in members:
        problem = _member_problem(name, kind)
        if problem:
            raise UnsafeArchiveError(f"{path}: refusing to extract, member {name!r} {problem}")
    return [name for name, _ in members]


def safe_extract(path: Path, target: Path) -> Path:
    """Extract a zip/tar into ``target`` after checking every member; atomic per top-level folder."""
    path, target = Path(path), Path(target)
    check_archive(path)
    target.mkdir(parents=True, exist_ok=True)
    tmp = target / f".extract-{path.name}.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            zf.extractall(tmp)
    else:
        with tarfile.open(path) as tf:
            tf.extractall(tmp, filter="data")  # the "data" filter refuses the same things again
    resolved = tmp.resolve()
    for p in tmp.rglob("*"):  # belt and braces: nothing may resolve outside tmp
        if p.is_symlink() or resolved not in p.resolve().parents:
            raise UnsafeArchiveError(f"{path}: extracted member {p} lands outside {target}")
    for child in sorted(tmp.iterdir()):
        dest = target / child.name
        if dest.exists():
            shutil.rmtree(dest) if dest.is_dir() else dest.unlink()
        child.replace(dest)
    tmp.rmdir()
    return target


def ensure_advance(cfg, progress: bool = True, archives: tuple[Archive, ...] | None = None) -> Path:
    """``cfg.datasets_dir / "advance"``, downloading and extracting the archives (default: ARCHIVES) not there yet.

    An archive counts as extracted only when its ``.extracted-<md5>`` marker is there, written after the last
    file was moved into place; each archive is handled under a lock (another process waits, then finds it done).
    """
    root = Path(cfg.datasets_dir) / "advance"
    for archive in ARCHIVES if archives is None else archives:
        marker = root / f".extracted-{archive.md5}"
        with file_lock(Path(cfg.downloads_dir) / f"{archive.name}.extract"):
            if marker.is_file():
                continue
            zip_path = download(archive, cfg.downloads_dir, progress=progress)
            safe_extract(zip_path, root)
            atomic_write_text(marker, archive.name + "\n")
    return root
