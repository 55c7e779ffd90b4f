"""The ``alexnet`` command: parse, call, print. Each subcommand lives in a module of this package
with an ``add_parser(subparsers)`` that sets ``func``; the work itself is done by the library.

Errors: :class:`alexnet.errors.AlexNetError` (and ValueError / OSError from the library, which name
the value or file) print one line ``alexnet: error: …`` and exit 2; anything else is a bug and
prints one line with a hint to rerun with ``--debug``, which shows the traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from alexnet import __version__
from alexnet.cli import (
    ablate,
    bench,
    demo,
    evaluate,
    explore,
    features,
    info,
    interop,
    models,
    predict,
    prepare,
    probe,
    search,
    serve,
    train,
    visualize,
)
from alexnet.cli.help import Parser, parse, subcommands
from alexnet.errors import AlexNetError, one_line

COMMANDS = [models, prepare, train, info, evaluate, predict, features, probe, search, interop, visualize, explore, serve, ablate, bench,
            demo]  # = --help order

log = logging.getLogger("alexnet")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="alexnet",
        description="AlexNet (Krizhevsky, Sutskever & Hinton, 2012): models, training, evaluation, import and figures.",
    )
    parser.add_argument("--version", action="version", version=f"alexnet {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logging")
    parser.add_argument("-v", "--verbose", action="store_true", help="log diagnostics (INFO level)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in COMMANDS:
        module.add_parser(sub)
    _global_flags_after(parser)
    return parser


def _global_flags_after(parser: argparse.ArgumentParser) -> None:
    """``--debug`` and ``-v`` also after the subcommand (``alexnet train … -v``, as the hints say them), in
    every subcommand's parser; SUPPRESS keeps the value given before the subcommand when none is given after."""
    for action in subcommands(parser):
        for child in dict.fromkeys(action.choices.values()):
            child.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="as alexnet --debug")
            child.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="as alexnet -v")
            _global_flags_after(child)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    if not (sys.argv[1:] if argv is None else argv):  # `alexnet` alone: the commands, not "COMMAND is required"
        parser.print_help(sys.stderr)
        return 2
    args = parse(parser, argv)
    level = logging.DEBUG if args.debug else logging.INFO if args.verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    try:
        code = int(args.func(args) or 0)
        sys.stdout.flush()  # here, so that a reader that has gone (`| head`) is met inside this try
        return code
    except KeyboardInterrupt as e:  # the training loop's says what was kept and how to resume
        print(f"alexnet: {one_line(e) if str(e) else 'interrupted'}", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `alexnet ... | head`: the reader has gone; say nothing more
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except (AlexNetError, ValueError, OSError) as e:
        if args.debug:
            raise
        print(f"alexnet: error: {one_line(e)}", file=sys.stderr)
        return 2
    except Exception as e:  # a bug: say so in one line, keep the traceback for --debug
        if args.debug:
            raise
        print(f"alexnet: internal error: {type(e).__name__}: {one_line(e)} (rerun with --debug for the traceback)", file=sys.stderr)
        return 1
