"""The `minidino` command: one module per subcommand, each with `register(subparsers)`.

A subcommand module adds its parser and sets `func` (taking the parsed args, returning the
exit status). Heavy imports happen inside the command functions, so `minidino --help`
stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# Subcommand modules, in the order `minidino --help` lists them.
COMMANDS = ["selftest", "demo", "embed", "similar", "info", "pca", "attention", "convert", "export", "depth", "text"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="minidino", description="A clean-room DINOv2 backbone: embeddings, "
                                     "feature pictures, weights and parity checks.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"{__name__}.{name}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
