"""report.html: written by every training run, self-contained (embedded PNGs, nothing fetched)."""

import base64
import io
import json
import re

import pytest
from PIL import Image

from alexnet.cli import main
from alexnet.reporting import figures as visualize
from alexnet.reporting import html_report
from alexnet.reporting.html_report import TrainingReport, render, write_report_html
from alexnet.training.config import resolve
from alexnet.training.loop import RunOptions, train

TINY = ["model.options.width=0.25", "max_steps=3"]
RUN_PLOTTED: dict = {}  # run folder -> the (probabilities, labels) its training run plotted as the confusion matrix


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "digits-tiny"
    config = resolve("digits", {"epochs": 1, "device": "cpu"}, TINY)

    def second_pass(*args, **kwargs):
        raise AssertionError("the training run's report ran the model over the test split again")

    plotted = []

    def plot_confusion(probs, labels, *args, **kwargs):
        plotted.append((probs, labels))
        return plot(probs, labels, *args, **kwargs)

    plot = visualize.plot_confusion
    with pytest.MonkeyPatch.context() as mp:  # the confusion matrix comes from the final evaluation's probabilities
        mp.setattr(html_report, "split_probabilities", second_pass)
        mp.setattr(visualize, "plot_confusion", plot_confusion)
        train(config, RunOptions(out=out, progress_bar=False, callbacks=[TrainingReport()]))
    RUN_PLOTTED[out] = plotted
    return out


def embedded_pngs(page: str) -> list[Image.Image]:
    images = []
    for data in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page):
        im = Image.open(io.BytesIO(base64.b64decode(data, validate=True)))
        im.load()
        images.append(im)
    return images


def test_training_writes_a_self_contained_report(run_dir):
    page = (run_dir / "report.html").read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>")
    assert "http://" not in page and "https://" not in page
    assert "<script" not in page and "<link" not in page and "@import" not in page and "url(" not in page
    sources = re.findall(r'src="([^"]*)"', page)
    assert sources and all(s.startswith("data:image/png;base64,") for s in sources)
    images = embedded_pngs(page)
    assert len(images) == 4  # curves, conv1 kernels, confusion matrix, sample predictions
    assert all(im.width > 100 and im.height > 50 for im in images)
    for name in ("curves.png", "filters.png", "confusion.png", "predictions.png"):
        assert (run_dir / name).is_file()
    # the final numbers and the configuration are on the page
    report = json.loads((run_dir / "report.json").read_text())
    assert f"{100 * report['final']['test_1view']['top1_error']:.2f} %" in page
    assert "&quot;max_steps&quot;: 3" in page and "alexnet_small" in page
    assert "Sample predictions on the test split" in page
    # the confusion matrix is the one of report.json's one-view test figures, all 359 images
    [(probs, labels)] = RUN_PLOTTED[run_dir]
    wrong = (probs.argmax(1).numpy() != labels).sum()
    assert len(labels) == report["final"]["test_1view"]["images"] == 359
    assert wrong / len(labels) == pytest.approx(report["final"]["test_1view"]["top1_error"], abs=1e-12)


def test_rewriting_a_report_from_the_run_folder(run_dir, capsys):
    (run_dir / "report.html").unlink()
    assert main(["visualize", "report", str(run_dir)]) == 0
    page = (run_dir / "report.html").read_text()
    assert len(embedded_pngs(page)) == 4
    assert str(run_dir / "report.html") in capsys.readouterr().out


def test_a_figure_that_cannot_be_drawn_never_costs_the_page(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"preset": "x", "epochs": 1}))
    out = write_report_html(tmp_path)  # no metrics, no checkpoint, no report.json
    page = out.read_text()
    assert "not drawn" in page and "not available for this run" in page and "has not finished" in page
    assert embedded_pngs(page) == []


def test_the_page_shows_the_configuration_as_resumed(tmp_path, caplog):
    """report.html's configuration is the run's own as a resume reads it: config.json with resume.jsonl's
    changes (a run resumed with --epochs 20 says 20); a report.json that is not the run's is left out."""
    (tmp_path / "config.json").write_text(json.dumps({"preset": "x", "epochs": 10}))
    (tmp_path / "resume.jsonl").write_text(json.dumps({"step": 5, "changes": {"epochs": {"from": 10, "to": 20}}}) + "\n")
    (tmp_path / "report.json").write_text("[1, 2]")
    page = write_report_html(tmp_path).read_text()
    assert "&quot;epochs&quot;: 20" in page and "&quot;epochs&quot;: 10" not in page
    assert "report.json: expected a JSON object; left out of the report" in caplog.text


def test_a_folder_that_is_not_a_run_gets_no_page(tmp_path, capsys):
    """Issue 25, item 1: visualize report wrote report.html (and curves.png) into any folder."""
    (tmp_path / "notes.txt").write_text("mine")
    for force in ([], ["--force"]):
        assert main(["visualize", "report", str(tmp_path), *force]) == 2
        assert f"{tmp_path}: not a training run folder (no config.json" in capsys.readouterr().err
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]
    assert main(["visualize", "report", str(tmp_path / "notes.txt")]) == 2  # it said "no such run folder"
    assert capsys.readouterr().err.strip().endswith("notes.txt: a file, not a run folder")


def test_render_escapes_what_it_shows():
    page = render({"final": {}}, {"description": "<b>bold</b> & co"}, {}, None, "<run>")
    assert "<b>bold</b>" not in page and "&lt;b&gt;bold&lt;/b&gt; &amp; co" in page and "&lt;run&gt;" in page
