"""A job's hold on its output and its state record: the one rule of every resumable command.

``alexnet train``, ``features``, ``prepare`` and ``ablate`` each write their output over minutes or
days, may be killed, and continue when the same command is given again. What they share:

* :class:`RunLock` (all four): one writer at a time. An exclusive ``flock`` on a lock file that holds
  the owner's pid and host; a second writer is refused at once, naming the owner. The kernel drops
  the lock when its process dies, so the lock file a killed process leaves never blocks a resume.
* :class:`JobRecord` (features, prepare, ablate; a training run's record is its config.json): which
  kind of job, the settings that must be the same for a run to continue it, the job's resume point
  (``progress``), the files it wrote, done or not. Written atomically (:func:`alexnet.atomic.write_json`).
* :func:`resume`, the one rule: no record, a fresh start; a record of this kind with the same
  settings, a resume; other settings or an unreadable record are refused naming the difference
  unless ``force``, and ``force`` removes only the files this job writes (:func:`discard`); a record
  of another kind of job is refused even with ``force``. :func:`claim` refuses, without ``force``, a
  folder of other files and no record, and even with ``force`` one holding a file of a name the job
  writes; :func:`foreign` names them. ``--force`` never deletes or replaces a file its job did not write.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alexnet.atomic import make_folder, write_json
from alexnet.errors import AlexNetError

log = logging.getLogger(__name__)

LOCK = ".lock"
STATE = "state.json"  # the record's name inside a job's own folder (OUT.partial of prepare, OUT of ablate)


class RunLock:
    """One writer per job: an exclusive ``flock`` on ``folder/name``, which holds the owner's pid and host.

    A second writer is refused at once, naming the owner. A lock whose process died is released by
    the kernel with it (``flock`` locks die with their process), so a stale lock file never blocks a
    resume. ``folder`` is any path (a :class:`~alexnet.training.run_folder.RunFolder` is one); ``output``,
    what the refusal names, is the folder unless the lock guards one output beside others (``f.npy``).
    """

    def __init__(self, folder: str | os.PathLike, name: str = LOCK, output: str | os.PathLike | None = None) -> None:
        self.path = Path(folder) / name
        self.output = Path(output) if output is not None else Path(folder)
        self.fd: int | None = None

    def acquire(self) -> RunLock:
        make_folder(self.path.parent, naming=self.output)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                owner = os.read(fd, 4096).decode("utf-8", "replace").strip() or "another process"
                os.close(fd)
                raise AlexNetError(f"{self.output} is being written by {owner}; wait for that run to end (or stop "
                                   f"it) before running it again here (lock: {self.path})") from None
            if _same_file(fd, self.path):
                break
            os.close(fd)  # the holder released (and unlinked) it between our open and flock: take the new file
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on host {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}".encode())
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is not None:
            self.path.unlink(missing_ok=True)
            os.close(self.fd)  # closing releases the flock
            self.fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.path.samestat(os.fstat(fd), os.stat(path))
    except FileNotFoundError:
        return False


@dataclass
class JobRecord:
    """What a job's output holds; saved as JSON at the path the job chooses."""

    kind: str  # the command: "features", "prepare", "ablate"
    settings: dict[str, Any]  # what must be the same for a run to continue this one
    progress: dict[str, Any] = field(default_factory=dict)  # the job's own resume point (rows done, batch size)
    files: list[str] = field(default_factory=list)  # what it wrote, relative to the record's folder
    done: bool = False

    def save(self, path: str | os.PathLike) -> None:
        write_json(path, {"job": self.kind, "settings": self.settings, "progress": self.progress,
                          "files": self.files, "done": self.done})


def read_record(path: str | os.PathLike) -> JobRecord:
    """The record at ``path``; an unreadable one (or another program's JSON) is one line naming the file."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise AlexNetError(f"{path}: not a readable job record ({e})") from None
    if not (isinstance(data, dict) and isinstance(data.get("job"), str) and isinstance(data.get("settings"), dict)):
        raise AlexNetError(f"{path}: not a job record (no \"job\" and \"settings\": written by another program or an "
                           "older alexnet)")
    return JobRecord(data["job"], data["settings"], dict(data.get("progress") or {}), [str(f) for f in data.get("files") or []],
                     bool(data.get("done", False)))


def differences(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    """``key old → new`` for every setting that differs (JSON-compared: a tuple equals its list); a table of
    settings (ablate's flags) by its own keys, ``flags.epochs 1 → 2``, not as two whole tables."""
    old, new = json.loads(json.dumps(old, default=str)), json.loads(json.dumps(new, default=str))
    found = []
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k), new.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            found += differences(a, b, f"{prefix}{k}.")
        elif a != b:
            found.append(f"{prefix}{k} {a!r} → {b!r}")
    return found


def resume(path: str | os.PathLike, kind: str, settings: dict[str, Any], *, force: bool,
           own: Iterable[str] = ()) -> JobRecord | None:
    """The record to continue from, or None for a fresh start (the one rule: see the module doc).

    Refused without ``force``: a record of other settings, or unreadable. With ``force`` the old run
    is discarded: the files its record lists, ``own`` (the names this job writes, relative to the
    record's folder) and the record; nothing else. A record of another kind of job is refused even
    with ``force``: its files are that job's, not this one's.
    """
    path = Path(path)
    if not path.exists():
        return None
    try:
        record: JobRecord | None = read_record(path)
    except AlexNetError as e:
        record, why, advice = None, str(e), ""
    else:
        changed = differences(record.settings, settings) if record.kind == kind else []
        if record.kind == kind and not changed:
            return record
        if record.kind == kind:
            state = "a finished" if record.done else "an unfinished"
            why, advice = f"{path}: {state} {kind} run with other settings ({'; '.join(changed)})", "rerun it as it was, or "
        else:
            raise AlexNetError(f"{path}: the record of an alexnet {record.kind} job, not {kind}; choose another output "
                               "(--force does not remove another job's files)")
    if not force:
        raise AlexNetError(f"{why}; {advice}pass --force to start over (only its own files are removed)")
    log.warning("%s; starting over (--force)", why)
    discard(path.parent, [*(record.files if record else []), *own, path.name])
    return None


def discard(folder: str | os.PathLike, names: Iterable[str]) -> None:
    """Remove the files ``names`` (relative to ``folder``) that exist; never anything else."""
    for name in dict.fromkeys(names):
        target = Path(folder) / name
        if target.is_file() or target.is_symlink():
            target.unlink()


def foreign(folder: str | os.PathLike, own: Iterable[str]) -> list[Path]:
    """The entries of ``folder`` that its job did not write (not in ``own``, not a lock or temporary), sorted."""
    folder, own = Path(folder), set(own)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir()
                  if p.name not in own and p.name != LOCK and not (p.name.startswith(".") and p.name.endswith(".tmp")))


def claim(folder: str | os.PathLike, kind: str, *, force: bool, own: Iterable[str] = (), record: str = STATE) -> list[Path]:
    """Refuse a folder that holds files but no ``record`` of a ``kind`` job: unless ``force``, any file; even with
    ``force``, a file of a name the job writes (``own``), which it would write over. Returns the other files,
    which the job then writes beside, never over (an empty folder of its own name is no file)."""
    folder, own = Path(folder), set(own)
    if folder.exists() and not folder.is_dir():
        raise AlexNetError(f"{folder} exists and is not a folder")
    if (folder / record).exists():
        return []  # a record: resume() (or the job's own rule) judges it
    entries = [p for p in foreign(folder, ()) if not (p.is_dir() and not p.is_symlink() and not any(p.iterdir()))]
    clash = next((p for p in entries if p.name in own), None)
    if clash is not None:
        raise AlexNetError(f"{clash}: not written by alexnet {kind} ({folder} has no {record}), and {kind} writes a file of "
                           f"that name; move it out or choose a new or empty folder (--force never replaces a file "
                           f"{kind} did not write)")
    others = [p for p in entries if p.name not in own]
    if others and not force:
        raise AlexNetError(f"{folder} holds other files ({others[0].name}{', …' if len(others) > 1 else ''}) and no "
                           f"alexnet {kind} job; choose a new or empty folder, or pass --force to write beside them "
                           "(none of them is removed)")
    return others
