"""The ``a2i data`` verb: ``synth`` (write the synthetic tree), ``check`` (validate a tree), ``fetch`` (ADVANCE),
``prepare`` (validate and split the course's dataset, e.g. your own folder given with ``--root``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from a2i_utils.config import DataConfig, get_config


def register(subparsers) -> None:
    """Add ``data`` with its sub-verbs to the ``a2i`` parser."""
    data = subparsers.add_parser("data", help="make, check or download datasets")
    sub = data.add_subparsers(dest="data_command", metavar="SUBCOMMAND", required=True)

    p = sub.add_parser("synth", help="write the synthetic ADVANCE-shaped soundscape tree")
    p.add_argument("--out", type=Path, required=True,
                   help="folder to write (an existing one is replaced only if empty or an earlier synthetic tree)")
    demo = DataConfig()
    p.add_argument("--per-class", type=int, default=demo.per_class,
                   help=f"pairs per scene class (default {demo.per_class}, the demo preset's)")
    p.add_argument("--seed", type=int, default=42, help="random seed (default 42)")
    p.add_argument("--image-size", type=int, default=128, help="image side in pixels (default 128; ADVANCE: 512)")
    p.set_defaults(func=cmd_synth)

    p = sub.add_parser("check", help="validate an ADVANCE-shaped tree and print its summary")
    p.add_argument("root", type=Path, help="folder with vision/<class>/ and sound/<class>/")
    p.add_argument("--show", type=int, default=20, help="problems to list (default 20)")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("fetch", help="download and extract ADVANCE into the cache (md5-checked)")
    p.add_argument("--mode", default=None, help="preset whose cache to use (default: A2I_MODE or demo)")
    p.set_defaults(func=cmd_fetch)

    p = sub.add_parser(
        "prepare", help="validate and split the course's dataset (your own folder with --root) into the cache",
        description="Build the dataset the notebooks use, as prepare_dataset(cfg) does: with --root, an "
        "ADVANCE-shaped folder you already have, validated with the checks of `a2i data check` and used where it "
        "is (never copied or modified); its manifest and split go to the cache, keyed by the folder's fingerprint.",
    )
    p.add_argument("--root", type=Path, default=None,
                   help="an ADVANCE-shaped folder (vision/<class>/, sound/<class>/) used instead of the preset's data")
    p.add_argument("--mode", default=None, help="preset (default: A2I_MODE or demo)")
    p.add_argument("--cache", type=Path, default=None, help="cache root (default: A2I_CACHE or ~/.cache/a2i)")
    p.add_argument("--show", type=int, default=20, help="problems to list (default 20)")
    p.set_defaults(func=cmd_prepare)


def cmd_synth(args: argparse.Namespace) -> int:
    """Write the synthetic tree and print where."""
    from a2i_utils.data.synth import write_tree

    try:
        root = write_tree(args.out, per_class=args.per_class, seed=args.seed, image_size=args.image_size)
    except (FileExistsError, ValueError) as err:
        print(f"a2i data synth: {err}", file=sys.stderr)
        return 1
    print(f"wrote {args.per_class} pairs x 13 classes to {root}")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    """Validate a tree without writing into it; exit 1 only when no pair is usable."""
    from a2i_utils.data import CLASSES, scan_tree

    if not args.root.is_dir():
        print(f"{args.root}: no such folder", file=sys.stderr)
        return 1
    pairs, problems = scan_tree(args.root, validate=True)
    counts = {c: sum(p.label == c for p in pairs) for c in CLASSES}
    print(f"{args.root}: {len(pairs)} usable pairs, {len({p.base_id for p in pairs})} base ids, "
          f"{len(problems)} problem(s)")
    for c, n in counts.items():
        print(f"  {c:<18} {n:5d}")
    for line in problems[: args.show]:
        print(f"  problem: {line}")
    if len(problems) > args.show:
        print(f"  ... and {len(problems) - args.show} more (--show N)")
    return 0 if pairs else 1


def cmd_fetch(args: argparse.Namespace) -> int:
    """Download and extract both ADVANCE archives into the cache."""
    from a2i_utils.data.advance import DownloadError, UnsafeArchiveError, ensure_advance

    cfg = get_config(args.mode)
    try:
        root = ensure_advance(cfg)
    except (DownloadError, UnsafeArchiveError) as err:
        print(f"a2i data fetch: {err}", file=sys.stderr)
        return 1
    print(f"ADVANCE is in {root}")
    return 0


def cmd_prepare(args: argparse.Namespace) -> int:
    """Validate and split the configured dataset (``--root`` overrides ``data.root``); print where it is kept."""
    from a2i_utils.data.advance import DownloadError, UnsafeArchiveError
    from a2i_utils.data.dataset import DatasetError, prepare_dataset

    overrides = {}
    if args.root is not None:
        overrides["data.root"] = str(args.root.expanduser().resolve())
    if args.cache is not None:
        overrides["cache_dir"] = args.cache
    cfg = get_config(args.mode, overrides)
    try:
        ds = prepare_dataset(cfg)
    except (DatasetError, DownloadError, UnsafeArchiveError) as err:
        print(f"a2i data prepare: {err}", file=sys.stderr)
        return 1
    print(f"dataset: {ds.root} (read only)")
    print(ds.summary())
    for line in ds.problems[: args.show]:
        print(f"  problem: {line}")
    if len(ds.problems) > args.show:
        print(f"  ... and {len(ds.problems) - args.show} more (--show N)")
    print(f"manifest and split: {ds.index_dir}")
    if cfg.data.root:
        print(f'notebooks: get_config(MODE, {{"data.root": "{cfg.data.root}"}}) in the parameters cell')
    return 0
