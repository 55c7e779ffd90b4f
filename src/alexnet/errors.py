"""The one exception type the CLI shows as a one-line message (no traceback unless ``--debug``), and the one
wording of each common refusal: a name that is not one of the valid ones (``unknown``, with the nearest as
"did you mean"), a setting's value outside its choices (``not_one_of``, the same hint), a count out of range
(``at_least``), any exception as that one line (``one_line``); and the one reading of a whole number a
person or a client typed (``whole_number``)."""

from __future__ import annotations

import difflib
import errno
import os
from collections.abc import Iterable
from pathlib import Path


class AlexNetError(Exception):
    """Bad input from the user: a path, a value or a file that cannot be used, and why.

    The message names the file or value and what is wrong with it, in one line.
    """


def nearest(name: str, valid: Iterable[str]) -> str | None:
    """The valid name nearest ``name`` by difflib's ratio, at difflib's default cutoff (0.6, as Python
    3.14's argparse suggests a choice), else None."""
    near = difflib.get_close_matches(name.lower(), list(valid), n=1)
    return near[0] if near else None


def did_you_mean(name: str, valid: Iterable[str]) -> str:
    """``"did you mean 'x'? "`` for the nearest valid name, else ``""``."""
    near = nearest(name, valid)
    return f"did you mean {near!r}? " if near else ""


def unknown(what: str, name: str, valid: Iterable[str], more: str = "", prefix: str = "") -> str:
    """``unknown preset 'd2l_lenett' (did you mean 'd2l_lenet'?); valid: …``: the message for a name not in
    ``valid``, with the nearest one, then all of them (``more`` appended). ``prefix`` is a section
    (``optim.``) shown before the names and matched without them: ``unknown setting 'optim.lrr' (did you
    mean 'optim.lr'?); valid in optim: lr, …``."""
    valid = list(valid)
    near = nearest(name, valid)
    hint = f" (did you mean {prefix + near!r}?)" if near else ""
    where = f" in {prefix[:-1]}" if prefix else ""
    return f"unknown {what} {prefix + name!r}{hint}; valid{where}: {', '.join(valid)}{more}"


def not_one_of(subject: str, value: object, valid: Iterable[object], more: str = "") -> str:
    """``setting precision='bf61' is not one of fp32, bf16, fp16 (did you mean 'bf16'?)``: the message for a
    value outside its choices. ``subject`` is what comes before the value as the user wrote it (``"--metric "``,
    ``"init="``, ``"setting precision="``); ``more`` follows the choices."""
    valid = [str(v) for v in valid]
    near = nearest(value, valid) if isinstance(value, str) else None
    hint = f" (did you mean {near!r}?)" if near else ""
    return f"{subject}{value!r} is not one of {', '.join(valid)}{more}{hint}"


def counted(n: int, noun: str) -> str:
    """``1 epoch``, ``10 epochs``: a count and its noun, as every message and line writes one (a plural in -s)."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def whole_number(text: str | None) -> int | None:
    """``text`` as a whole number where it reads as one: ASCII digits only, at most 18 of them; else None,
    for the caller's refusal. (``str.isdigit`` takes '²', which ``int`` then refuses; ``int`` takes '٣',
    '1_0', ' 3' and 5,000-digit numbers.)"""
    if text is None or not 0 < len(text) <= 18 or not text.isascii() or not text.isdigit():
        return None
    return int(text)


def shown(text: str, limit: int = 40) -> str:
    """``text`` as a message quotes a value it refuses: its repr, cut to ``limit`` characters (a client's
    5,000-digit number or a long header is not echoed whole)."""
    return repr(text) if len(text) <= limit else repr(text[:limit]) + "…"


def at_least(flag: str, value: int, minimum: int = 1) -> int:
    """``value`` if it is ``minimum`` or more, else the one wording of a count flag out of range:
    ``--images 0: must be at least 1``, ``--workers -1: must be 0 or more``."""
    if value < minimum:
        raise AlexNetError(f"{flag} {value}: must be {'0 or more' if minimum == 0 else f'at least {minimum}'}")
    return value


def most_workers() -> int:
    """The most worker processes a ``--workers`` may start: 8 per CPU, at least 64 (decoding waits on the
    disk too); beyond it a typo (``--workers 1000000000``) would fork until the machine stops."""
    return max(64, 8 * (os.cpu_count() or 1))


def worker_count(flag: str, value: int) -> int:
    """A ``--workers`` value: 0 (in the process) up to :func:`most_workers`."""
    at_least(flag, value, 0)
    if value > most_workers():
        raise AlexNetError(f"{flag} {value}: at most {most_workers()} worker processes here ({os.cpu_count()} CPUs)")
    return value


def one_line(e: BaseException, limit: int | None = None, *, first_line: bool = False) -> str:
    """An exception as one line: its message with the whitespace folded (an ``OSError`` as ``FILE: strerror``;
    an empty one as its type's name), cut to ``limit`` characters where a longer message would bury the line;
    ``first_line``: only its first line (a library's message whose first line says what went wrong: torch's
    shape errors, inductor's build failures, nvJPEG's)."""
    text = str(e).strip() or type(e).__name__
    if first_line:
        text = text.splitlines()[0]
    if isinstance(e, OSError) and e.filename and e.strerror:
        text = f"{e.filename}: {e.strerror}"
        if e.errno == errno.ENOTDIR and (above := file_above(e.filename)):  # a path that runs through a file
            text = f"{e.filename}: {above} is a file, not a folder"
    return " ".join(text.split())[:limit]


def file_above(path: str | os.PathLike) -> Path | None:
    """The nearest existing folder-to-be above ``path`` that is a file instead (``notes.txt`` of
    ``notes.txt/run/x.pt``), else None: what "Not a directory" means when writing under it."""
    for parent in Path(path).parents:
        if parent.exists():
            return parent if not parent.is_dir() else None
    return None
