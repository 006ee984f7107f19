"""``a2i config``: show the configuration a preset resolves to, and where the cache is."""

from __future__ import annotations

import argparse

from a2i_utils.config import get_config


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``config`` verb."""
    p = sub.add_parser("config", help="show the resolved configuration and cache folder")
    p.add_argument("--mode", default=None, help="preset name (default: $A2I_MODE or demo)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    cfg = get_config(args.mode)
    print(cfg.summary())
    print(f"cache_dir: {cfg.cache_dir}")
    print(f"device: {cfg.resolved_device()}")
    return 0
