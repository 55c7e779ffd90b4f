"""One atomic write for every file the package writes: checkpoints, JSON, HTML, PNGs, exports, stores.

A writer gets a temporary path in the destination's folder (``.NAME.RANDOM.tmp``), writes it, and
on success the file is flushed to disk and renamed over the destination with ``os.replace``: a
reader sees the old file or the new one, never half of one, and a crash (or ``kill -9``) mid-write
leaves the destination as it was. On any failure the temporary file is removed. The new file gets
the mode an ordinary ``open`` would (0666 less the umask), not ``mkstemp``'s 0600.

``overwrite=False`` refuses an existing destination: the rule behind every ``--force`` flag. A full
disk is :class:`DiskFull`, one line naming the file; the temporary file is removed.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alexnet.errors import AlexNetError, file_above


def _umask_mode() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def refuse_existing(path: str | os.PathLike, force: bool, choose: str | None = "path") -> None:
    """The rule behind every ``--force``: an existing ``path`` is an error unless ``force``. ``choose``
    names what the user can change instead (``--out``), None where the path follows from another (a run's
    report.html)."""
    if not force and Path(path).exists():
        remedy = f"choose another {choose} or pass --force" if choose else "pass --force to overwrite it"
        raise AlexNetError(f"{path} already exists; {remedy}")


@contextmanager
def atomic_path(path: str | os.PathLike, *, overwrite: bool = True, durable: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; when the block ends without an exception it becomes ``path``.
    ``durable=False`` skips the fsync: a reader still sees a whole file, but a crash may keep the previous
    one (for a status file rewritten every few seconds, where the fsync would be most of the cost)."""
    path = Path(path)
    refuse_existing(path, overwrite)
    make_folder(path.parent, naming=path)
    try:
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise _naming(e, path) from None
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, _umask_mode())
        if durable:
            with open(tmp, "rb+") as f:  # what the writer wrote reaches the disk before the rename
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        if e.filename is not None and str(e.filename) not in (str(tmp), str(path)):
            raise  # about another file the writer read
        raise _naming(e, path) from None
    finally:
        tmp.unlink(missing_ok=True)


def make_folder(path: str | os.PathLike, naming: str | os.PathLike | None = None) -> Path:
    """``mkdir -p path``. A file where a folder must go is one line that names it, as the output it was
    for (``naming``) sees it: mkdir's own ``File exists`` or ``Not a directory`` says neither which file
    nor why."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        blocker = path if path.exists() and not path.is_dir() else file_above(path)
        if blocker is None:
            raise
        where = f"{naming or path}: {blocker}" if blocker != Path(naming or path) else str(blocker)
        raise AlexNetError(f"{where} is a file, not a folder") from None
    return path


def _naming(e: OSError, path: Path) -> OSError:
    """The error of a write to ``path`` as the user sees it: naming ``path``, never the hidden temporary
    file (``/sys/.model.pt.9171me__.tmp: Permission denied``); a full disk is :class:`DiskFull`. The same
    OSError subclass (PermissionError, …), so callers that catch one still do."""
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return DiskFull(path)
    return OSError(e.errno, e.strerror, str(path)) if e.errno else OSError(f"{path}: {e}")


class DiskFull(AlexNetError):
    """A write failed for want of space; the file it would have replaced is as it was."""

    def __init__(self, path: Path, kept: str = "") -> None:
        super().__init__(f"cannot write {path}: no space left on the device" + (f"; {kept}" if kept else ""))
        self.path = path


def disk_full(path: str | os.PathLike, need: int = 1 << 20) -> bool:
    """Whether the filesystem of ``path`` has less than ``need`` bytes free (to name a failed write's cause)."""
    try:
        return shutil.disk_usage(Path(path).parent).free < need
    except OSError:
        return False


def atomic_write(path: str | os.PathLike, data: bytes | str, *, overwrite: bool = True, durable: bool = True) -> None:
    """Write ``data`` (text is UTF-8) to ``path`` atomically."""
    with atomic_path(path, overwrite=overwrite, durable=durable) as tmp:
        tmp.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)


def atomic_link(source: str | os.PathLike, path: str | os.PathLike) -> None:
    """Make ``path`` a second name of ``source``'s present file, atomically: a hard link renamed into
    place, so a checkpoint kept as best costs no second write of its hundreds of megabytes; a copy
    where the filesystem has no hard links. Safe because every writer here replaces a file by
    renaming a new one over it and never writes into it: the next ``last.pt`` is a new file and the
    linked one stays as it was."""
    with atomic_path(path) as tmp:
        tmp.unlink()
        try:
            os.link(source, tmp)
        except OSError as e:
            if e.errno in (errno.ENOSPC, errno.EDQUOT):
                raise
            shutil.copyfile(source, tmp)


def write_json(path: str | os.PathLike, data: Any, *, overwrite: bool = True, durable: bool = True) -> None:
    """``data`` as indented JSON (non-ASCII kept as is, e.g. "×"), atomically; non-JSON values as ``str``."""
    atomic_write(path, json.dumps(data, indent=2, default=str, ensure_ascii=False) + "\n", overwrite=overwrite, durable=durable)


def check_output_file(path: Path, force: bool, suffix: str, flag: str) -> Path:
    """:func:`check_output_path` for a file of ``suffix``'s kind in a folder that exists already."""
    if not path.is_dir():
        if path.suffix.lower() != suffix:
            raise AlexNetError(f"{flag} {path}: give a {suffix} file name")
        if not path.parent.is_dir() and not file_above(path):
            raise AlexNetError(f"{flag} {path}: no folder {path.parent}")
    return check_output_path(path, force, flag, kind=f"{suffix} file name")


def check_output_path(path: str | os.PathLike, force: bool, flag: str, kind: str = "file name") -> Path:
    """A file a command is about to write (its missing folders are made), checked before any work: not a
    folder, not under a file, not an existing file unless ``force``. ``flag`` names the option."""
    path = Path(path)
    if path.is_dir():
        raise AlexNetError(f"{flag} {path} is a folder; give a {kind}")
    if above := file_above(path):
        raise AlexNetError(f"{flag} {path}: {above} is a file, not a folder")
    refuse_existing(path, force, flag)
    return path
