"""The ``a2i`` command line. Each part of the course adds its verbs with a ``register(subparsers)`` function."""

from __future__ import annotations

import argparse
import importlib
import sys

from a2i_utils import __version__

# Modules that add verbs: each has ``register(subparsers)`` adding a parser whose ``func(args)`` runs it.
COMMAND_MODULES: tuple[str, ...] = ("a2i_utils.cli", "a2i_utils.data.cli", "a2i_utils.imagebind.cli")


def register(sub: argparse._SubParsersAction) -> None:
    """Add the shared ``config`` verb."""
    p = sub.add_parser("config", help="show the resolved configuration and cache folder")
    p.add_argument("--mode", default=None, help="preset name (default: $A2I_MODE or demo)")
    p.set_defaults(func=run_config)


def run_config(args: argparse.Namespace) -> int:
    """Print the resolved preset, the cache folder and the device."""
    from a2i_utils.config import get_config

    cfg = get_config(args.mode)
    print(cfg.summary())
    print(f"cache_dir: {cfg.cache_dir}")
    print(f"device: {cfg.resolved_device()}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every registered verb."""
    parser = argparse.ArgumentParser(
        prog="a2i",
        description="a2i: sound-to-image generation (Synthesizing Visuals from Sound), as a course.",
    )
    parser.add_argument("--version", action="version", version=f"a2i {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``a2i`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
