"""The ``cil`` command: the parser, ``main`` and its error handling.

One module per command group adds its subcommands and does the work when they run:
``run`` (run, list), ``data``, ``report`` (plot, report, summarize), ``varc`` and ``explain``;
``messages`` holds what they share: warnings printed as one line each.
Each parses arguments, calls the library and prints; library modules are imported inside the
command functions, so ``cil --help`` stays instant. Bad input (``UserError``) is printed as one
``error:`` line with exit status 2, never a traceback; Ctrl-C exits with status 130, and a
closed output pipe (``| head``) with 141, quietly.
"""

from __future__ import annotations

import argparse
import sys

from cil import __version__
from cil.cli import data, explain, report, run, varc
from cil.errors import UserError

# In the order the subcommands are listed by ``cil --help``.
_COMMAND_MODULES = (run, data, report, varc, explain)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cil", description="Class-incremental learning benchmarks: "
                                     "baselines and the VAR generative classifier.")
    parser.add_argument("--version", action="version", version=f"varc-cil {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in _COMMAND_MODULES:
        module.add_subcommands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; finished cells and checkpoints are kept, rerun the same command to resume",
              file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (``cil summarize ... | head``): stop quietly
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 141  # 128 + SIGPIPE, as the shell reports a process killed by it
