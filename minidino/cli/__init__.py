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
COMMANDS = ["selftest", "demo", "embed", "similar", "info", "pca", "attention", "convert", "export", "accuracy", "trace",
            "compare", "depth", "text"]


def _exit_statuses_epilog() -> str:
    from .errors import EXIT_STATUSES

    return "exit statuses (docs/cli-errors.md):\n" + "\n".join(f"  {k:3d}  {v}" for k, v in EXIT_STATUSES.items())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="minidino", description="A clean-room DINOv2 backbone: embeddings, "
                                     "feature pictures, weights and parity checks.", epilog=_exit_statuses_epilog(),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--debug", action="store_true", help="print the traceback of a failure (also MINIDINO_DEBUG=1)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"{__name__}.{name}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run a command; returns its status, or raises SystemExit (minidino.cli.errors.CliExit) whose
    `code` is the exit status after printing one line on stderr."""
    from .errors import debug_enabled, run_guarded

    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or debug_enabled()
    argv = [a for a in argv if a != "--debug"]  # accepted before or after the command name
    args = build_parser().parse_args(argv)
    return run_guarded(lambda: args.func(args), debug=debug)


if __name__ == "__main__":
    sys.exit(main())
