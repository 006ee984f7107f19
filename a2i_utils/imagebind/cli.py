"""``a2i embed DIR_OR_FILES...``: fill the embedding cache with the ImageBind embeddings of audio and image files.

Every image is checked with a2i's reader first (:func:`a2i_utils.data.images.open_image`); a recording is checked by
the reader that decodes it for ImageBind, once, and not at all when its embedding is cached (same bytes, same model).
A file that cannot be used is reported on stderr as ``skipped <file>: <why>`` and the others are embedded. The exit
status is 1 when a file was skipped or a path was bad, 0 when everything given was embedded.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from a2i_utils.io import AUDIO_EXTS, IMAGE_EXTS


def register(subparsers) -> None:
    """Add the ``embed`` verb."""
    p = subparsers.add_parser(
        "embed",
        help="embed audio/image files with ImageBind into the cache",
        description=f"Embed every audio ({' '.join(AUDIO_EXTS)}) and image ({' '.join(IMAGE_EXTS)}) file given, "
        "or found under the folders given, with the ImageBind of the preset (demo: the miniature, trained first if "
        "needed; full: imagebind_huge). Files already in the cache (same bytes, same model) are not embedded again.",
    )
    p.add_argument("paths", nargs="+", type=Path, metavar="DIR_OR_FILE")
    p.add_argument("--mode", default=None, help="preset: demo or full (default: A2I_MODE or demo)")
    p.add_argument("--cache", type=Path, default=None, help="cache root (default: A2I_CACHE or ~/.cache/a2i)")
    p.set_defaults(func=run)


def collect(paths: list[Path]) -> tuple[list[Path], list[Path], list[str]]:
    """Audio files, image files and problems (missing paths, unsupported files) among ``paths``."""
    audio, images, problems = [], [], []
    for path in paths:
        if path.is_dir():
            files = sorted(f for f in path.rglob("*") if f.is_file() and not f.name.startswith("."))
        elif path.is_file():
            files = [path]
        else:
            problems.append(f"{path}: no such file or folder")
            continue
        for f in files:
            ext = f.suffix.lower()
            if ext in AUDIO_EXTS:
                audio.append(f)
            elif ext in IMAGE_EXTS:
                images.append(f)
            elif path.is_file():
                problems.append(f"{f}: not an audio ({' '.join(AUDIO_EXTS)}) or image ({' '.join(IMAGE_EXTS)}) file")
    return audio, images, problems


def usable(files: list[Path]) -> tuple[list[Path], list[str]]:
    """The image files a2i's reader accepts, and ``<file>: <why>`` for each of the others."""
    from a2i_utils.data.images import ImageError, open_image

    good, bad = [], []
    for f in files:
        try:
            open_image(f).close()
            good.append(f)
        except ImageError as err:
            bad.append(str(err))
    return good, bad


def run(args: argparse.Namespace) -> int:
    """Embed the usable files, print what was done; exit status 1 when a file was skipped or a path was bad."""
    from a2i_utils.config import get_config
    from a2i_utils.imagebind.cache import EmbeddingCache, EmbedStats, embed_files
    from a2i_utils.imagebind.embedder import load_imagebind

    cfg = get_config(args.mode, {"cache_dir": args.cache} if args.cache else None)
    audio, images, problems = collect(list(args.paths))
    for line in problems:
        print(f"warning: {line}")
    images, bad_images = usable(images)
    for why in bad_images:
        print(f"skipped {why}", file=sys.stderr)
    problems += bad_images
    if not audio and not images:
        print("nothing to embed: no audio or image files found")
        return 1
    t0 = time.time()
    embedder = load_imagebind(cfg)
    print(f"model {embedder.identity} ({cfg.imagebind.model}), loaded in {time.time() - t0:.1f} s")
    for modality, files in (("audio", audio), ("vision", images)):
        if files:
            stats, skipped = EmbedStats(), []
            embed_files(embedder, files, modality, cfg, stats=stats, skipped=skipped)  # decodes each file once
            for _, why in skipped:
                print(f"skipped {why}", file=sys.stderr)
            problems += [why for _, why in skipped]
            print(f"{modality}: {len(files) - len(skipped)} files -> {stats} in {stats.seconds:.1f} s")
    print(f"cache: {EmbeddingCache.of(embedder, cfg).root}")
    return 1 if problems else 0
