"""ADVANCE (Hu et al. 2020, Zenodo record 3828124): download with an md5 check, safe extraction.

The two archives go to ``cfg.downloads_dir`` (pooch: progress bar, hash check, a partial or wrong file is
never kept) and unpack into ``cfg.datasets_dir / "advance"`` as ``vision/<class>/*.jpg`` and
``sound/<class>/*.wav``. Extraction refuses any member that would land outside the target folder
(absolute paths, ``..``, symbolic or hard links), before writing anything.
"""

from __future__ import annotations

import shutil
import stat
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urlparse

import pooch

from a2i_utils.io import atomic_write_text

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


def local_file_downloader(url: str, output_file, pooch_obj=None, check_only: bool = False) -> bool | None:
    """A pooch downloader for ``file://`` addresses (local mirrors and tests): copies the file."""
    src = Path(unquote(urlparse(url).path))
    if check_only:
        return src.is_file()
    if not src.is_file():
        raise DownloadError(f"{url}: no such local file")
    if isinstance(output_file, (str, Path)):
        shutil.copyfile(src, output_file)
    else:
        with open(src, "rb") as f:
            shutil.copyfileobj(f, output_file)
    return None


def download(archive: Archive, downloads_dir: Path, progress: bool = True) -> Path:
    """Download ``archive`` into ``downloads_dir`` unless a file with the right md5 is there; return its path."""
    downloads_dir = Path(downloads_dir)
    downloads_dir.mkdir(parents=True, exist_ok=True)
    if urlparse(archive.url).scheme == "file":
        downloader = local_file_downloader
    else:
        downloader = pooch.HTTPDownloader(progressbar=progress)
    try:
        path = pooch.retrieve(
            archive.url, known_hash=f"md5:{archive.md5}", fname=archive.name, path=downloads_dir,
            downloader=downloader,
        )
    except ValueError as err:  # pooch: hash mismatch (the wrong file is deleted, never kept)
        raise DownloadError(f"{archive.name} from {archive.url}: md5 check failed, file refused ({err})") from err
    except (OSError, RuntimeError) as err:  # no network, HTTP error, missing mirror file
        raise DownloadError(
            f"{archive.name}: download from {archive.url} failed ({type(err).__name__}: {err}). Without network, "
            f"copy the file (md5 {archive.md5}) to {downloads_dir / archive.name} and run again."
        ) from err
    return Path(path)


def _member_problem(name: str, is_link: bool) -> str | None:
    """Why an archive member is unsafe to extract, or None."""
    p = PurePosixPath(name.replace("\\", "/"))
    if is_link:
        return "is a link"
    if p.is_absolute() or (p.parts and p.parts[0].endswith(":")):
        return "has an absolute path"
    if ".." in p.parts:
        return "escapes the target folder with '..'"
    return None


def check_archive(path: Path) -> list[str]:
    """Member names of a zip or tar archive, after refusing any unsafe member."""
    path = Path(path)
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            members = [(i.filename, stat.S_ISLNK(i.external_attr >> 16)) for i in zf.infolist()]
    elif tarfile.is_tarfile(path):
        with tarfile.open(path) as tf:
            members = [(m.name, m.issym() or m.islnk() or not (m.isfile() or m.isdir())) for m in tf.getmembers()]
    else:
        raise UnsafeArchiveError(f"{path}: not a zip or tar archive")
    for name, is_link in members:
        problem = _member_problem(name, is_link)
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
    """``cfg.datasets_dir / "advance"``, downloading and extracting the archives (default: ARCHIVES) not there yet."""
    root = Path(cfg.datasets_dir) / "advance"
    for archive in ARCHIVES if archives is None else archives:
        marker = root / f".extracted-{archive.md5}"
        if marker.is_file():
            continue
        zip_path = download(archive, cfg.downloads_dir, progress=progress)
        safe_extract(zip_path, root)
        atomic_write_text(marker, archive.name + "\n")
    return root
