"""The run folder: the one place that knows the layout of a training run.

::

    RUN/
      config.json        the configuration the run was started with; written once, never rewritten
      resume.jsonl       one line per resume that changed a safe setting (epochs, device, workers)
      init.json          --init: every tensor, loaded or re-initialised, frozen or not (alexnet.training.finetune)
      metrics.jsonl      one line per finished epoch
      tb/                TensorBoard events
      checkpoints/       last.pt (every epoch, every ``checkpoint_every`` steps) and best.pt
      report.json        the final numbers (written when the run ends)
      report.html        the page to look at; curves.png, filters.png, confusion.png, predictions.png
      .lock              held while a process trains the run (alexnet.jobs.RunLock): one writer at a time

What a resume reads and writes here (the configuration a run continues with, resume.jsonl's lines)
is :mod:`alexnet.training.resume`. Every file is written atomically; metrics.jsonl and resume.jsonl are
appended one whole line at a time, and a torn last line (a kill mid-write) is skipped on reading.
"""

from __future__ import annotations

import errno
import json
import logging
import os
from pathlib import Path
from typing import Any

from alexnet.atomic import DiskFull, atomic_write, make_folder, write_json
from alexnet.errors import AlexNetError

log = logging.getLogger(__name__)

CONFIG, RESUME_LOG, METRICS = "config.json", "resume.jsonl", "metrics.jsonl"
REPORT_JSON, REPORT_HTML = "report.json", "report.html"
LIVE = "live.json"  # where the run is now, rewritten every few seconds while it trains (alexnet explore --run follows it)
FIGURES = ("curves.png", "filters.png", "confusion.png", "predictions.png")  # what report.html shows, beside it
# every name a run writes in its folder: an --out without a run that holds one of them is refused even with --force
OWN_NAMES = (CONFIG, RESUME_LOG, "init.json", METRICS, LIVE, "tb", "checkpoints", REPORT_JSON, REPORT_HTML, *FIGURES)


class RunFolder:
    """Paths and reads/writes of one run folder; ``write=False`` (every rank but 0) makes writes no-ops."""

    def __init__(self, root: str | Path, write: bool = True) -> None:
        self.root, self.write = Path(root), write
        self.checkpoints = self.root / "checkpoints"
        self.last, self.best = self.checkpoints / "last.pt", self.checkpoints / "best.pt"
        self.config, self.resume_log, self.metrics = self.root / CONFIG, self.root / RESUME_LOG, self.root / METRICS
        self.report_json, self.report_html = self.root / REPORT_JSON, self.root / REPORT_HTML
        self.tb = self.root / "tb"
        self.init = self.root / "init.json"
        self.live = self.root / LIVE

    def __fspath__(self) -> str:  # os.PathLike: RunLock(folder) locks the run's root
        return str(self.root)

    def figure(self, name: str) -> Path:
        return self.root / name

    def clean_temporary(self) -> None:
        """Remove the temporary files a write killed mid-way left (``.last.pt.*.tmp``: see alexnet.atomic)."""
        if self.write:
            for folder in (self.root, self.checkpoints):
                for tmp in folder.glob(".*.tmp") if folder.is_dir() else ():
                    tmp.unlink(missing_ok=True)

    def holds_run(self) -> bool:
        return self.config.exists() or self.last.exists()

    def start(self) -> None:
        """Make a fresh run's folders and clear what an earlier run (``--force``) left."""
        if not self.write:
            return
        make_folder(self.checkpoints)
        self.clean_temporary()
        for stale in (self.metrics, self.resume_log, self.init, self.last, self.best, self.report_json):
            stale.unlink(missing_ok=True)

    # -- configuration ------------------------------------------------------------------------
    def write_config(self, config: dict[str, Any]) -> None:
        if self.write:
            write_json(self.config, config)

    def write_init(self, rows: list[dict[str, Any]]) -> None:
        if self.write:
            write_json(self.init, rows)

    def read_config(self) -> dict[str, Any]:
        return _read_json(self.config, f"{self.root}: not a run folder (no {CONFIG})")

    def read_resume_log(self) -> list[dict[str, Any]]:
        return _read_lines(self.resume_log)

    def append_resume_log(self, record: dict[str, Any]) -> None:
        """One line of resume.jsonl (alexnet.training.resume.log_changes writes it); config.json stays as written."""
        self._append(self.resume_log, record)

    # -- metrics ------------------------------------------------------------------------------
    def append_metrics(self, record: dict[str, Any]) -> None:
        self._append(self.metrics, record)

    def read_metrics(self) -> list[dict[str, Any]]:
        return _read_lines(self.metrics)

    def keep_metrics_of(self, completed: int) -> list[dict[str, Any]]:
        """On resume: keep the records of the ``completed`` epochs, drop those that will be trained again."""
        kept = [r for r in self.read_metrics() if r["epoch"] <= completed]
        if self.write:
            atomic_write(self.metrics, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in kept))
        return kept

    # -- where a running run is --------------------------------------------------------------
    def write_live(self, record: dict[str, Any]) -> None:
        if self.write:  # whole for every reader, not fsynced: the next write is seconds away
            write_json(self.live, record, durable=False)

    def read_live(self) -> dict[str, Any] | None:
        """live.json, or None when there is none (yet) or it cannot be read (a reader never fails a page)."""
        try:
            found = json.loads(self.live.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return found if isinstance(found, dict) else None

    # -- the final numbers --------------------------------------------------------------------
    def write_report_json(self, report: dict[str, Any]) -> None:
        if self.write:
            write_json(self.report_json, report)

    def read_report_json(self) -> dict[str, Any]:
        return _read_json(self.report_json, f"{self.root}: no {REPORT_JSON} (the run has not finished)")

    def _append(self, path: Path, record: dict[str, Any]) -> None:
        """One whole line per write (a single ``write`` of an O_APPEND file)."""
        if not self.write:
            return
        line = (json.dumps(record, ensure_ascii=False, default=str) + "\n").encode("utf-8")
        try:
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
            try:
                os.write(fd, line)
            finally:
                os.close(fd)
        except OSError as e:
            if e.errno in (errno.ENOSPC, errno.EDQUOT):
                raise DiskFull(path) from None
            raise


def _read_json(path: Path, missing: str) -> dict[str, Any]:
    if not path.is_file():
        raise AlexNetError(missing)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise AlexNetError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise AlexNetError(f"{path}: expected a JSON object")
    return data


def _read_lines(path: Path) -> list[dict[str, Any]]:
    """JSON lines; a torn last line (no newline: the writer was killed) is skipped, any other bad line is an error."""
    if not path.is_file():
        return []
    text = path.read_text(encoding="utf-8")
    lines = text.split("\n")
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as e:
            if number == len(lines):  # the last line, without its newline
                log.warning("%s: skipped a torn last line (the run was killed while writing it)", path)
                continue
            raise AlexNetError(f"{path}, line {number}: not JSON ({e})") from None
        if not isinstance(records[-1], dict):  # every reader takes a record by its keys
            raise AlexNetError(f"{path}, line {number}: not a JSON object")
    return records
