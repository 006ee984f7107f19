"""SD 2.1 UnCLIP's files for full mode: from a hub mirror or a folder, only what SounDiff loads, pinned by content.

Stability AI withdrew its SD 2.x repositories from the hub in November 2025 (FACTS §8), so the default source is the
community mirror ``sd2-community/stable-diffusion-2-1-unclip``; ``soundiff.pretrained_id`` may name any hub id or a
local folder in the diffusers layout, ``soundiff.revision`` a branch, tag or commit, ``soundiff.variant`` None (fp32)
or ``"fp16"``.

What is fetched (:func:`select_files`): ``model_index.json``; the ``.json``/``.txt`` files of ``tokenizer/``,
``scheduler/``, ``image_noising_scheduler/`` and ``feature_extractor/``; ``config.json`` and ONE safetensors file of
each of ``unet``, ``vae``, ``text_encoder`` and ``image_normalizer`` (the chosen variant, else the fp32 file). Never
the 2.5 GB image encoder (SounDiff passes embeddings; the pipeline gets a stand-in), never a ``.bin`` pickle. The
files come from the hub's ``resolve`` addresses through :func:`a2i_utils.downloads.download_file` (``.part`` files
resumed after an interruption, a lock, an atomic rename), all from ONE commit: the revision is resolved once
(``/api/models/<id>/revision/<rev>``), remembered in ``refs/``, and the files are kept under
``cache_dir/weights/<org>--<name>/snapshots/<commit>/``. Once complete, loading needs no network.

Content pinning (policy):

- The U-Net is pinned by the SHA-256 of Stability's original files (:data:`PINNED_SHA256`, FACTS §8), whatever
  serves it: a download of another hash is deleted before it lands; a local folder's file of another hash is
  refused by name (and kept: it is not ours to delete). Nothing refused is ever loaded.
- No hash is published for the other files. Each one's SHA-256 is recorded the first time it is verified (trust on
  first use) in ``verified.json`` beside the snapshot (for a local folder: ``cache_dir/weights/local-<key>.json``),
  with its size and modification time. Every load compares size and modification time; a change makes the file be
  hashed again, and another hash than the recorded one is refused (a downloaded file is deleted). So a file that
  changes after its first use is never loaded silently; ``a2i doctor --verify`` re-hashes everything.
"""

from __future__ import annotations

import json
import os
import re
import urllib.error
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from a2i_utils.config import Config
from a2i_utils.downloads import DownloadError, HashMismatchError, download_file
from a2i_utils.io import CheckpointError, atomic_write_text, file_lock, sha256_file

DEFAULT_SOURCE = "sd2-community/stable-diffusion-2-1-unclip"
WITHDRAWN = "stabilityai/stable-diffusion-2-1-unclip"
KNOWN_MIRRORS = (DEFAULT_SOURCE, "radames/stable-diffusion-2-1-unclip-img2img")
# SHA-256 of Stability's original U-Net files ("h" variant), as the hub lists their LFS objects (FACTS §8).
PINNED_SHA256 = {
    "unet/diffusion_pytorch_model.safetensors": "902a190c84ff59777cb0ecb7cd0eb86be822e6e2687376aa744ffb2d398b0b86",
    "unet/diffusion_pytorch_model.fp16.safetensors":
        "a11c42f0619d06677f792a29b36277bf78bcefb7c010583c631da62e40630ff5",
}
# The components whose weights SounDiff loads, and the stem of their weight file.
WEIGHT_COMPONENTS = {"unet": "diffusion_pytorch_model", "vae": "diffusion_pytorch_model", "text_encoder": "model",
                     "image_normalizer": "diffusion_pytorch_model"}
CONFIG_FOLDERS = ("tokenizer", "scheduler", "image_noising_scheduler", "feature_extractor")
VARIANTS = (None, "fp16")
COMMIT = re.compile(r"^[0-9a-f]{40}$")


class WeightsError(CheckpointError):
    """The UnCLIP weights cannot be had or were refused; the message says what failed and what to do."""


@dataclass(frozen=True)
class Source:
    """Where the files come from: a hub ``repo`` (at ``revision``) or a ``local`` folder."""

    repo: str
    revision: str
    variant: str | None
    local: Path | None

    def describe(self) -> str:
        """One line for reports."""
        what = f"local folder {self.local}" if self.local else f"hub {self.repo} (revision {self.revision}) at " \
                                                             f"{endpoint()}"
        return f"{what}, variant {self.variant or 'fp32 (None)'}"


def source_of(cfg: Config) -> Source:
    """The configured source; ValueError for an unknown variant, WeightsError for a folder that is not there."""
    sc = cfg.soundiff
    if sc.variant not in VARIANTS:
        raise ValueError(f"soundiff.variant is {sc.variant!r}: use None (fp32 weights) or 'fp16'")
    pid = str(sc.pretrained_id)
    path = Path(pid).expanduser()
    if path.is_dir():
        return Source(pid, sc.revision, sc.variant, path.resolve())
    if pid.startswith(("/", ".", "~")) or pid.count("/") != 1:
        raise WeightsError(f"{pid}: soundiff.pretrained_id is neither a folder here nor a hub id (<org>/<name>)")
    return Source(pid, sc.revision, sc.variant, None)


def endpoint() -> str:
    """The hub's address (``HF_ENDPOINT``, as the hub client reads it)."""
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")


def offline() -> bool:
    """Whether ``HF_HUB_OFFLINE`` forbids the network."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def unavailable(src: Source, why: str) -> WeightsError:
    """The one message for a source that cannot be had: what failed, the known mirrors, how to use a folder."""
    mirrors = ", ".join(m for m in KNOWN_MIRRORS if m != src.repo)
    withdrawn = (f" (Stability AI withdrew {WITHDRAWN} from the hub in November 2025)" if src.repo == WITHDRAWN
                 else "")
    return WeightsError(
        f"SD 2.1 UnCLIP weights: {why}{withdrawn}. Known mirrors of the same files: {mirrors}; use one with "
        f"A2I_OVERRIDES='{{\"soundiff.pretrained_id\": \"{KNOWN_MIRRORS[0]}\"}}'. For a copy on disk (diffusers "
        "layout: model_index.json, unet/, vae/, text_encoder/, tokenizer/, image_normalizer/, scheduler/, "
        "image_noising_scheduler/), set soundiff.pretrained_id to its folder. Whatever the source, the U-Net must "
        "have the SHA-256 of Stability's original file (a2i_utils/soundiff/weights.py)."
    )


# ----------------------------------------------------------------------------------------------------------
# Which files
# ----------------------------------------------------------------------------------------------------------
def select_files(names: Iterable[str], variant: str | None, where: str) -> list[str]:
    """The files SounDiff loads out of a repository's ``names``; WeightsError naming what is missing."""
    names = set(names)
    chosen = ["model_index.json"]
    for folder in CONFIG_FOLDERS:
        chosen += sorted(n for n in names if n.startswith(folder + "/") and n.count("/") == 1
                         and n.endswith((".json", ".txt")))
    for comp, stem in WEIGHT_COMPONENTS.items():
        options = ([f"{comp}/{stem}.{variant}.safetensors"] if variant else []) + [f"{comp}/{stem}.safetensors"]
        weights = next((o for o in options if o in names), None)
        if weights is None:
            raise WeightsError(f"{where}: no safetensors weights for {comp} (looked for {', '.join(options)}); "
                               "a2i never loads pickled .bin files")
        chosen += [f"{comp}/config.json", weights]
    missing = [n for n in chosen if n not in names]
    if missing or not any(n.startswith("tokenizer/") for n in chosen):
        raise WeightsError(f"{where}: not an SD 2.1 UnCLIP folder in the diffusers layout: missing "
                           f"{', '.join(missing) or 'tokenizer/'}")
    return chosen


def component_variants(files: Iterable[str]) -> dict[str, str | None]:
    """The variant of each component's chosen weight file (``unet/x.fp16.safetensors`` -> ``"fp16"``)."""
    out = {}
    for name in files:
        comp, _, base = name.partition("/")
        if comp in WEIGHT_COMPONENTS and base.endswith(".safetensors"):
            parts = base.split(".")
            out[comp] = parts[1] if len(parts) == 3 else None
    return out


# ----------------------------------------------------------------------------------------------------------
# Where they are kept
# ----------------------------------------------------------------------------------------------------------
def repo_dir(cfg: Config, src: Source) -> Path:
    """The cache folder of a hub source: ``refs/``, ``snapshots/<commit>/``, ``verified-<commit>.json``."""
    return Path(cfg.cache_dir) / "weights" / src.repo.replace("/", "--")


def _ref_file(cfg: Config, src: Source) -> Path:
    return repo_dir(cfg, src) / "refs" / src.revision.replace("/", "--")


def cached_commit(cfg: Config, src: Source) -> str | None:
    """The commit the revision was resolved to (a commit is itself), or None before the first download."""
    if COMMIT.match(src.revision):
        return src.revision
    ref = _ref_file(cfg, src)
    text = ref.read_text().strip() if ref.is_file() else ""
    return text if COMMIT.match(text) else None


def stamp_path(cfg: Config, src: Source, commit: str | None = None) -> Path:
    """The ``verified.json`` of a snapshot (hub) or of a local folder (in the cache, named by its path)."""
    if src.local is not None:
        import hashlib

        key = hashlib.sha1(str(src.local).encode()).hexdigest()[:12]
        return Path(cfg.cache_dir) / "weights" / f"local-{src.local.name}-{key}.json"
    return repo_dir(cfg, src) / f"verified-{commit}.json"


def read_stamp(path: Path) -> dict:
    """``{"selected": {variant: [files]}, "files": {name: {size, mtime_ns, sha256}}}`` ({} when absent or bad)."""
    try:
        stamp = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {"selected": {}, "files": {}}
    ok = isinstance(stamp, dict) and isinstance(stamp.get("selected"), dict) and isinstance(stamp.get("files"), dict)
    return stamp if ok else {"selected": {}, "files": {}}


def _variant_key(variant: str | None) -> str:
    return variant or "fp32"


# ----------------------------------------------------------------------------------------------------------
# Fetching and verifying
# ----------------------------------------------------------------------------------------------------------
def _auth() -> dict[str, str]:
    """The hub token as a header (for gated or private repositories), sent to the hub only, never to a CDN."""
    try:
        from huggingface_hub import get_token

        token = get_token()
    except Exception:  # noqa: BLE001  (no hub client, or an unreadable token file: go without)
        token = None
    return {"Authorization": f"Bearer {token}"} if token else {}


def _http_why(src: Source, status: int | None, what: str, reason: str) -> str:
    """Why a request failed, in words."""
    if status == 404:
        return f"{what}: {src.repo} (revision {src.revision}) answered 404 at {endpoint()}: not found"
    if status in (401, 403):
        return (f"{what}: {src.repo} (revision {src.revision}) answered {status} at {endpoint()}: not found, private "
                "or gated (accept its terms on the hub, then log in with `hf auth login` or set HF_TOKEN)")
    return f"{what}: could not reach {endpoint()} for {src.repo} ({reason}); offline?"


def list_repo(src: Source) -> tuple[str, list[str]]:
    """The commit ``src.revision`` points to and the repository's file names (the hub's model API)."""
    url = f"{endpoint()}/api/models/{src.repo}/revision/{quote(src.revision, safe='')}"
    request = urllib.request.Request(url)
    for k, v in _auth().items():
        request.add_unredirected_header(k, v)
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            info = json.loads(resp.read())
    except urllib.error.HTTPError as err:
        raise unavailable(src, _http_why(src, err.code, "listing the files", str(err))) from None
    except (urllib.error.URLError, OSError, ValueError) as err:
        raise unavailable(src, _http_why(src, None, "listing the files", str(err))) from None
    try:
        return info["sha"], [s["rfilename"] for s in info["siblings"]]
    except (KeyError, TypeError):
        raise unavailable(src, f"{url} did not answer as a hub does (no sha/siblings)") from None


def fetch(cfg: Config, src: Source, progress: bool = True) -> tuple[Path, list[str], str]:
    """The snapshot folder of ``src`` with the selected files (downloaded if missing), the files, the commit."""
    commit = cached_commit(cfg, src)
    if commit is not None:  # downloaded before: no network when complete
        folder = repo_dir(cfg, src) / "snapshots" / commit
        files = read_stamp(stamp_path(cfg, src, commit))["selected"].get(_variant_key(src.variant))
        if files and all((folder / f).is_file() for f in files):
            return folder, files, commit
    if offline():
        raise unavailable(src, f"HF_HUB_OFFLINE is set and {src.repo} (revision {src.revision}, variant "
                               f"{src.variant}) is not complete in {repo_dir(cfg, src)}")
    commit, names = list_repo(src)
    files = select_files(names, src.variant, f"{src.repo} (revision {src.revision})")
    folder = repo_dir(cfg, src) / "snapshots" / commit
    for name in files:
        url = f"{endpoint()}/{src.repo}/resolve/{commit}/{quote(name)}"
        try:
            download_file(url, folder / name, progress=progress, sha256=PINNED_SHA256.get(name),
                          private_headers=_auth())
        except DownloadError as err:
            if isinstance(err, HashMismatchError):
                raise WeightsError(f"{err} (refused: not Stability's original {name}; {src.repo} is not a faithful "
                                   "mirror, try another)") from None
            if err.status is not None:
                raise unavailable(src, _http_why(src, err.status, f"downloading {name}", str(err))) from None
            raise
    if not COMMIT.match(src.revision):
        atomic_write_text(_ref_file(cfg, src), commit + "\n")
    return folder, files, commit


def verify(folder: Path, files: list[str], stamp_file: Path, variant: str | None, ours: bool,
           rehash: bool = False) -> dict:
    """Check every file against its pin or recorded hash (see the module docstring); return the stamp.

    ``ours``: the files were downloaded by a2i (a refused one is deleted); else a user's folder (kept).
    ``rehash``: hash every file even when size and modification time are unchanged.
    """
    with file_lock(stamp_file):
        stamp = read_stamp(stamp_file)
        for name in files:
            path = folder / name
            if not path.is_file():
                raise WeightsError(f"{path}: missing")
            st, rec = path.stat(), stamp["files"].get(name)
            unchanged = rec is not None and rec.get("size") == st.st_size and rec.get("mtime_ns") == st.st_mtime_ns
            expected = PINNED_SHA256.get(name) or (rec or {}).get("sha256")
            if unchanged and not rehash and rec.get("sha256") == expected:
                continue
            digest = sha256_file(path)
            if expected is not None and digest != expected:
                _refuse(path, name, digest, expected, pinned=name in PINNED_SHA256, ours=ours, stamp_file=stamp_file)
            stamp["files"][name] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": digest}
        stamp["selected"][_variant_key(variant)] = list(files)
        atomic_write_text(stamp_file, json.dumps(stamp, indent=1, sort_keys=True))
    return stamp


def _refuse(path: Path, name: str, digest: str, expected: str, pinned: bool, ours: bool, stamp_file: Path) -> None:
    """Raise WeightsError naming the file (deleted first when a2i downloaded it)."""
    why = ("Stability's original file (pinned)" if pinned
           else f"the hash recorded at its first verified use ({stamp_file})")
    action = ("deleted it: run again to download it again" if ours else
              "not loaded; replace it with the original file" +
              ("" if pinned else f", or delete {stamp_file} if you changed it on purpose"))
    if ours:
        path.unlink(missing_ok=True)
    raise WeightsError(f"{path}: SHA-256 {digest} differs from {expected}, {why}: refused, {action}")


def ensure_weights(cfg: Config, progress: bool = True) -> tuple[Path, list[str], dict]:
    """The verified folder of the configured source, the files to load, and the stamp (their hashes)."""
    src = source_of(cfg)
    if src.local is not None:
        names = [p.relative_to(src.local).as_posix() for p in src.local.rglob("*") if p.is_file()]
        files = select_files(names, src.variant, str(src.local))
        stamp = verify(src.local, files, stamp_path(cfg, src), src.variant, ours=False)
        return src.local, files, stamp
    folder, files, commit = fetch(cfg, src, progress)
    stamp = verify(folder, files, stamp_path(cfg, src, commit), src.variant, ours=True)
    return folder, files, stamp


def weights_key(files: list[str], stamp: dict) -> str:
    """The loaded model's identity for cache keys: the U-Net's content hash (the same from any mirror)."""
    unet = next(f for f in files if f.startswith("unet/") and f.endswith(".safetensors"))
    return f"sd21-unclip-{stamp['files'][unet]['sha256'][:16]}"


# ----------------------------------------------------------------------------------------------------------
# For `a2i doctor` and `a2i preflight`: nothing downloaded, no network
# ----------------------------------------------------------------------------------------------------------
def cache_report(cfg: Config, rehash: bool = False) -> tuple[str, list[tuple[str, str]]]:
    """``(source line, [(status, text), ...])``: what is cached and whether its hashes match.

    status: "ok" (present, verified), "info" (present, verified on first load), "missing", "bad" (hash differs).
    ``rehash`` hashes every file (slow: GBs).
    """
    src = source_of(cfg)
    if src.local is not None:
        names = [p.relative_to(src.local).as_posix() for p in src.local.rglob("*") if p.is_file()]
        try:
            files = select_files(names, src.variant, str(src.local))
        except WeightsError as err:
            return src.describe(), [("bad", str(err))]
        folder, stamp_file = src.local, stamp_path(cfg, src)
    else:
        commit = cached_commit(cfg, src)
        stamp_file = stamp_path(cfg, src, commit) if commit else None
        files = read_stamp(stamp_file)["selected"].get(_variant_key(src.variant)) if stamp_file else None
        if not files:
            where = repo_dir(cfg, src)
            return src.describe(), [("missing", f"not downloaded yet into {where} (only configs, tokenizer and the "
                                                f"safetensors of unet, vae, text_encoder, image_normalizer)")]
        folder = repo_dir(cfg, src) / "snapshots" / commit
    return src.describe(), [_file_state(folder / f, f, read_stamp(stamp_file)["files"].get(f), rehash)
                            for f in files if f.endswith(".safetensors")]


def _file_state(path: Path, name: str, rec: dict | None, rehash: bool) -> tuple[str, str]:
    """The state of one weight file against its pin and its recorded hash."""
    if not path.is_file():
        return "missing", f"{name}: missing ({path})"
    st = path.stat()
    size = f"{st.st_size / 1e9:.2f} GB" if st.st_size >= 1e8 else f"{st.st_size / 1e6:.1f} MB"
    expected = PINNED_SHA256.get(name) or (rec or {}).get("sha256")
    pin = " (pinned: Stability's original)" if name in PINNED_SHA256 else ""
    if rehash:
        digest = sha256_file(path)
        if expected is not None and digest != expected:
            return "bad", f"{name}: {size}, SHA-256 {digest[:12]}... differs from {expected[:12]}...{pin}: refused"
        return "ok", f"{name}: {size}, SHA-256 {digest[:12]}... checked now{pin}"
    if rec is None:
        return "info", f"{name}: {size}, not verified yet (hashed on first load){pin}"
    if rec.get("size") != st.st_size or rec.get("mtime_ns") != st.st_mtime_ns:
        return "info", f"{name}: {size}, changed since verified: hashed again on the next load{pin}"
    if expected is not None and rec.get("sha256") != expected:
        return "bad", f"{name}: recorded SHA-256 differs from the pin{pin}"
    return "ok", f"{name}: {size}, SHA-256 {rec['sha256'][:12]}... verified{pin}"
