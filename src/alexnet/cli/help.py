"""How the commands talk about themselves: the parser every command uses (usage mistakes as one line)
and the help layout of those that show their defaults."""

from __future__ import annotations

import argparse
from typing import Any, NoReturn

from alexnet.errors import nearest, not_one_of, shown, whole_number


class Parser(argparse.ArgumentParser):
    """``alexnet``'s parser and, through ``add_subparsers``, every subcommand's. A usage mistake is one
    line, as every other error is (docs/ERRORS.md): argparse prints its usage block above it, which
    buries the line on a narrow terminal, so the line points to ``--help`` instead. A value outside a
    flag's choices, or a mistyped command, gets the nearest choice (:func:`alexnet.errors.not_one_of`)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())} (see {self.prog} --help)\n")

    def _check_value(self, action: argparse.Action, value: Any) -> None:
        if action.choices is not None and value not in action.choices:
            raise argparse.ArgumentError(action, not_one_of("", value, list(action.choices)))


def parse(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """``parser.parse_args(argv)``, where an argument no command knows is reported by the (sub)command it
    was given to, with its nearest option: ``alexnet train --lr-kernel eager`` is refused by ``alexnet
    train``, as ``unrecognized arguments: --lr-kernel eager (did you mean '--lrn-kernel'?)``."""
    args, extra = parser.parse_known_args(argv)
    if extra:
        owner = _chosen(parser, args)
        options = [o[2:] for a in owner._actions for o in a.option_strings if o.startswith("--")]
        flag = next((e.split("=")[0][2:] for e in extra if e.startswith("--")), None)  # compared without the "--" all share
        near = nearest(flag, options) if flag else None
        owner.error(f"unrecognized arguments: {' '.join(extra)}" + (f" (did you mean '--{near}'?)" if near else ""))
    return args


def _chosen(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.ArgumentParser:
    """The innermost subcommand's parser that ``args`` went through (``alexnet visualize filters``'s)."""
    for action in subcommands(parser):
        if (name := getattr(args, action.dest, None)) in action.choices:
            return _chosen(action.choices[name], args)
    return parser


def subcommands(parser: argparse.ArgumentParser) -> tuple[argparse.Action, ...]:
    """``parser``'s ``add_subparsers`` actions (none for a leaf command); each ``choices`` maps a name to its parser."""
    return tuple(parser._subparsers._group_actions) if parser._subparsers else ()


def seed(text: str) -> int:
    """``--seed``'s type: a whole number, 0 up to 18 digits (what numpy's and torch's generators both take)."""
    value = whole_number(text)
    if value is None:
        raise argparse.ArgumentTypeError(f"{shown(text)} is not a seed: a whole number from 0 (up to 18 digits)")
    return value


class ShowDefaults(argparse.ArgumentDefaultsHelpFormatter):
    """argparse's "(default: X)" after each option's help, except where there is no default to show
    (None: the option's help says what stands in for it, e.g. "the preset's")."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        return action.help if action.default is None else super()._get_help_string(action)
