"""The help text layout of the commands that show their defaults."""

from __future__ import annotations

import argparse


class ShowDefaults(argparse.ArgumentDefaultsHelpFormatter):
    """argparse's "(default: X)" after each option's help, except where there is no default to show
    (None: the option's help says what stands in for it, e.g. "the preset's")."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        return action.help if action.default is None else super()._get_help_string(action)
