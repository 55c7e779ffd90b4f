"""``report.html``: one self-contained page per training run, to look at rather than read.

Every run folder gets one (:class:`TrainingReport`, the callback ``alexnet train`` passes to the
training loop, writes it at the end; ``alexnet visualize report RUN_DIR`` rewrites it). Sections:
the final numbers (report.json), the training curves, conv1's kernels (Fig. 3), the confusion matrix
and sample top-5 predictions (Fig. 4, left) on the test split (val when there is none), and the
configuration (config.json).

Self-contained: the figures are embedded as base64 PNG ``data:`` URIs and the style is inline; no
script, font, stylesheet or image is fetched from anywhere, so the file opens from disk in any
browser, offline. The figures are also written beside it as PNG files (curves.png, filters.png,
confusion.png, predictions.png) for use elsewhere.

The confusion matrix is computed on the centre crop over at most ``max_images`` images of the split
(all of them for every data set we ship; ImageNet's 50,000 val images fit the default).
"""

from __future__ import annotations

import base64
import html
import json
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from alexnet.atomic import atomic_write
from alexnet.errors import AlexNetError, one_line
from alexnet.inference.evaluate import shown_split
from alexnet.inference.samples import Loaded, load_checkpoint, open_splits, pick_split, sample_predictions, split_probabilities
from alexnet.reporting import figures as visualize
from alexnet.training.loop import Callback, Run, TrainResult
from alexnet.training.resume import saved_config
from alexnet.training.run_folder import RunFolder

log = logging.getLogger(__name__)

MAX_IMAGES = 50_000  # confusion matrix: at most this many images of the split
SAMPLES = 8  # sample predictions shown


@dataclass
class Evidence:
    """The trained model and the images the report shows it on (beyond the run folder's files)."""

    loaded: Loaded
    images: Any | None  # the ImageSet of the confusion matrix and sample predictions
    split: str | None  # its name ("test" or "val")
    probabilities: torch.Tensor | None = None  # its centre-crop softmax, row by row, when already computed


def evidence_from_run(run_dir: Path, device: str = "cpu") -> Evidence:
    """The run's final weights (checkpoints/last.pt) and its test (else val) split."""
    last = RunFolder(run_dir, write=False).last
    loaded = load_checkpoint(last, device)
    try:
        split, images = pick_split(open_splits(loaded, None, str(last)), None, str(run_dir))
    except AlexNetError as e:  # data moved or absent: the report still shows what the folder holds
        log.warning("report without predictions or confusion matrix: %s", e)
        split, images = None, None
    return Evidence(loaded, images, split)


def evidence_from_training(model: torch.nn.Module, preprocess, classes: list[str], test, val,
                           device: torch.device, probabilities: dict[str, torch.Tensor] | None = None) -> Evidence:
    """What the training loop has in memory at its end: the model, the splits and the one-view
    probabilities of its final evaluation (by split name), so the confusion matrix is the one those
    figures came from and costs no second pass over the split."""
    loaded = Loaded(model, preprocess, list(classes), None, torch.device(device))
    name = shown_split(test, val)
    if name is None:
        return Evidence(loaded, None, None)
    return Evidence(loaded, test if name == "test" else val, name, (probabilities or {}).get(name))


def read_history(run_dir: Path) -> list[dict[str, Any]]:
    """The metrics.jsonl records of a run folder (what the curves show)."""
    folder = RunFolder(run_dir, write=False)
    if not folder.metrics.is_file():
        raise AlexNetError(f"{run_dir}: no metrics.jsonl (not a training run folder, or no epoch finished yet)")
    return folder.read_metrics()


class TrainingReport(Callback):
    """curves.png and report.html at the end of a finished training run, from what it has in memory
    (the model, and the one-view probabilities of the final evaluation for the confusion matrix).
    A figure must never cost the run its report, nor the report the run: failures are logged."""

    def on_end(self, run: Run, result: TrainResult) -> None:
        if result.stopped:
            return
        folder = run.folder
        try:
            visualize.plot_curves(result.history, folder.figure("curves.png"))
        except Exception as e:
            log.warning("could not draw curves.png: %s", e)
        data = run.data
        try:
            write_report_html(folder.root, evidence_from_training(run.model, data.preprocess, data.classes, data.test, data.val,
                                                                  run.device, result.probabilities))
        except Exception as e:
            log.warning("could not write report.html: %s", e)


# ---------------------------------------------------------------------------------------------


def write_report_html(run_dir: Path, evidence: Evidence | None = None, *, device: str = "cpu",
                      max_images: int = MAX_IMAGES, samples: int = SAMPLES, seed: int = 0) -> Path:
    """Write ``run_dir/report.html`` (atomically) and the figures it embeds; returns its path.

    Each figure is drawn on its own: one that fails is replaced by a line saying why, so the page
    is always written.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise AlexNetError(f"{run_dir}: {'a file, not a run folder' if run_dir.exists() else 'no such run folder'}")
    folder = RunFolder(run_dir, write=False)
    if not folder.holds_run():  # the page and its figures go only into a folder of their own kind
        raise AlexNetError(f"{run_dir}: not a training run folder (no config.json or checkpoints/last.pt); report.html "
                           "and its figures are written into the folder alexnet train wrote")
    report = _read_leniently(folder.report_json, folder.read_report_json)
    config = _read_leniently(folder.config, lambda: saved_config(folder))  # with what each resume changed
    if evidence is None and folder.last.is_file():
        evidence = evidence_from_run(run_dir, device)
    figures: dict[str, bytes | str] = {}

    def figure(name: str, draw) -> None:
        try:
            figures[name] = draw()
        except Exception as e:  # a figure must never cost the page
            log.warning("report.html: could not draw %s: %s", name, e)
            figures[name] = f"not drawn: {type(e).__name__}: {one_line(e)}"

    def curves() -> bytes:
        path = folder.figure("curves.png")
        if not path.is_file():
            visualize.plot_curves(read_history(run_dir), path)
        return path.read_bytes()

    figure("curves", curves)
    if evidence is not None:
        loaded = evidence.loaded
        figure("filters", lambda: _drawn(visualize.filters_figure(loaded.model), folder.figure("filters.png")))
        if evidence.images is not None:
            figure("confusion", lambda: _confusion(evidence, folder.figure("confusion.png"), max_images))
            figure("predictions", lambda: _drawn(_predictions(evidence, samples, seed), folder.figure("predictions.png")))
    page = render(report, config, figures, evidence.split if evidence else None, run_dir.name)
    atomic_write(folder.report_html, page)
    return folder.report_html


def _confusion(evidence: Evidence, path: Path, max_images: int) -> bytes:
    """The confusion matrix of the evidence's probabilities when it has them, else of a pass over the split."""
    probs, labels = evidence.probabilities, evidence.images.labels[:max_images]
    if probs is None or len(probs) != len(evidence.images):
        probs, labels = split_probabilities(evidence.loaded, evidence.images, limit=max_images)
    visualize.plot_confusion(probs[:max_images], labels, evidence.loaded.classes, path)
    return path.read_bytes()


def _predictions(evidence: Evidence, count: int, seed: int):
    """Fig. 4 left for ``count`` images of the evidence's split drawn with ``seed``."""
    sample = sample_predictions(evidence.loaded, evidence.images, count=count, seed=seed)
    return visualize.predictions_figure(sample.images, sample.probabilities, sample.labels, evidence.loaded.classes)


def _drawn(fig, path: Path) -> bytes:
    return _written(visualize.figure_png(fig), path)


def _written(png: bytes, path: Path) -> bytes:
    atomic_write(path, png)
    return png


def _read_leniently(path: Path, read: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """What ``read`` (the run folder's own reader) gives, or nothing, with a warning, when the file is not
    there or not what the run writes: the page shows what it can."""
    if not path.is_file():
        return {}
    try:
        return read()
    except AlexNetError as e:
        log.warning("%s; left out of the report", e)
        return {}


# ---------------------------------------------------------------------------------------------
# The page

STYLE = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif;
       color: #222; max-width: 1100px; margin: 2em auto; padding: 0 1em; }
h1 { font-size: 1.6em; margin-bottom: 0.1em; } h2 { font-size: 1.2em; margin-top: 2em; border-bottom: 1px solid #ddd; }
.sub { color: #666; margin-top: 0; }
.cards { display: flex; flex-wrap: wrap; gap: 0.8em; margin: 1em 0; }
.card { border: 1px solid #ddd; border-radius: 6px; padding: 0.6em 1em; min-width: 9em; }
.card .v { font-size: 1.7em; font-weight: 600; } .card .k { color: #666; font-size: 0.85em; }
table { border-collapse: collapse; margin: 0.5em 0; } td, th { padding: 0.25em 0.8em; border-bottom: 1px solid #eee; text-align: right; }
th { background: #f6f6f6; } td:first-child, th:first-child { text-align: left; }
img { max-width: 100%; height: auto; border: 1px solid #eee; }
pre { background: #f6f6f6; padding: 0.8em; overflow-x: auto; font-size: 0.85em; }
.missing { color: #a33; font-style: italic; }
"""


def _pct(value: Any) -> str:
    return f"{100 * value:.2f} %" if isinstance(value, (int, float)) and math.isfinite(value) else "–"


def _image(figures: dict[str, bytes | str], name: str, alt: str) -> str:
    data = figures.get(name)
    if data is None:
        return '<p class="missing">not available for this run</p>'
    if isinstance(data, str):
        return f'<p class="missing">{html.escape(data)}</p>'
    encoded = base64.b64encode(data).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{encoded}">'


def _numbers(report: dict[str, Any]) -> str:
    final = report.get("final") or {}
    if not final:
        return '<p class="missing">no report.json: the run has not finished</p>'
    key = next((k for k in ("test_10view", "test_1view", "val_10view", "val_1view") if k in final), None)
    cards = []
    if key:
        split, views = key.split("_")
        cards += [(f"{split} top-1 error ({views.replace('view', ' view')})", _pct(final[key]["top1_error"])),
                  (f"{split} top-5 error", _pct(final[key]["top5_error"]))]
    cards += [("parameters", f"{report.get('parameters', 0):,}"), ("epochs", str(report.get("epochs", "–"))),
              ("wall time", f"{report.get('wall_seconds', 0):.0f} s")]
    card_html = "".join(f'<div class="card"><div class="v">{html.escape(v)}</div><div class="k">{html.escape(k)}</div></div>'
                        for k, v in cards)
    rows = "".join(
        f"<tr><td>{html.escape(k)}</td><td>{_pct(r.get('top1_error'))}</td><td>{_pct(r.get('top5_error'))}</td>"
        f"<td>{r.get('images', '–')}</td><td>{r.get('loss', float('nan')):.4f}</td></tr>"
        for k, r in final.items()
    )
    table = ("<table><tr><th>split, views</th><th>top-1 error</th><th>top-5 error</th><th>images</th><th>loss</th></tr>"
             f"{rows}</table>")
    return f'<div class="cards">{card_html}</div>{table}'


def _facts(report: dict[str, Any]) -> str:
    hw, versions = report.get("hardware") or {}, report.get("versions") or {}
    facts = [
        ("model", f"{report.get('model', '–')} {json.dumps(report.get('model_options') or {})}"),
        ("classes / training images", f"{report.get('classes', '–')} / {report.get('train_images', '–')}"),
        ("steps", str(report.get("steps", "–"))),
        ("best val top-1 error", _pct(report.get("best_val_top1_error"))),
        ("hardware", ", ".join(f"{k} {v}" for k, v in hw.items())),
        ("versions", ", ".join(f"{k} {v}" for k, v in versions.items())),
        ("git commit", str(report.get("git_commit") or "–")),
    ]
    return "<table>" + "".join(f"<tr><td>{html.escape(k)}</td><td style='text-align:left'>{html.escape(v)}</td></tr>"
                               for k, v in facts) + "</table>"


def render(report: dict[str, Any], config: dict[str, Any], figures: dict[str, bytes | str], split: str | None,
           title: str) -> str:
    """The page as a string (no I/O)."""
    preset = report.get("preset") or config.get("preset") or "custom"
    description = config.get("description") or ""
    on = f" on the {split} split" if split else ""
    body = [
        f"<h1>{html.escape(title)}</h1>",
        f'<p class="sub">preset <b>{html.escape(str(preset))}</b>{" — " + html.escape(description) if description else ""}</p>',
        "<h2>Final numbers</h2>", _numbers(report), _facts(report),
        "<h2>Training curves</h2>", _image(figures, "curves", "loss and error per epoch"),
        "<h2>conv1 kernels (Fig. 3)</h2>",
        "<p>Each kernel min-max scaled on its own; a two-tower model's kernels in two blocks, one per tower.</p>",
        _image(figures, "filters", "conv1 kernels"),
        f"<h2>Confusion matrix{html.escape(on)}</h2>", "<p>Centre crop; rows: true class, columns: predicted, "
        "each row normalised.</p>", _image(figures, "confusion", "confusion matrix"),
        f"<h2>Sample predictions{html.escape(on)} (Fig. 4, left)</h2>",
        "<p>The five most probable labels; the true label's bar is red when it is among them.</p>",
        _image(figures, "predictions", "top-5 predictions"),
        "<h2>Configuration</h2>", f"<pre>{html.escape(json.dumps(config, indent=2, ensure_ascii=False))}</pre>",
    ]
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(title)}: alexnet run report</title><style>{STYLE}</style></head>\n<body>\n"
            + "\n".join(body) + "\n</body></html>\n")
