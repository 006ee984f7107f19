"""The ``a2i`` command line. Each part of the course adds its verbs with a ``register(subparsers)`` function."""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from a2i_utils import __version__

DEBUG_ENV = "A2I_DEBUG"  # set to 1 to see the full traceback of a user error too
# Modules that add verbs: each has ``register(subparsers)`` adding a parser whose ``func(args)`` runs it.
COMMAND_MODULES: tuple[str, ...] = (
    "a2i_utils.cli", "a2i_utils.data.cli", "a2i_utils.imagebind.cli", "a2i_utils.soundiff.cli",
    "a2i_utils.evaluation.cli", "a2i_utils.preflight", "a2i_utils.doctor",
)


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


def is_user_error(err: BaseException) -> bool:
    """Bad input a user can fix (a file, a value, a missing download), as opposed to a bug in a2i.

    Our own error classes (``AudioError``, ``ImageError``, ``DatasetError``, ``CheckpointError``, ...) all say which
    file and what is wrong; so do the ``ValueError``/``KeyError`` of the config and the ``OSError`` of a missing file.
    """
    ours = type(err).__module__.startswith("a2i_utils")
    return isinstance(err, (ValueError, KeyError, OSError)) or (ours and isinstance(err, RuntimeError))


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``a2i`` console script: bad input ends in one ``a2i: error: ...`` line, exit status 2."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        status = int(args.func(args) or 0)
        sys.stdout.flush()  # a reader gone meanwhile shows here, inside the handler below
        return status
    except BrokenPipeError:  # the reader stopped early (`a2i doctor --json | head`): not an error of the input
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second complaint when Python exits
        return 1
    except Exception as err:  # noqa: BLE001  (sorted below: a user's mistake gets one line, a bug its traceback)
        if not is_user_error(err) or os.environ.get(DEBUG_ENV):
            raise
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"a2i: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
