"""The paper's ablations (§3, §4, Fig. 1) as side-by-side training runs, repeated over seeds.

A study is data: a name and its variants, each variant a list of ``--set`` overrides applied to
the same preset (:data:`STUDIES`). The first variant of every study is ``baseline``, the preset as
it is; every other variant changes one thing. Adding a study is a few lines::

    STUDIES["dropout"] = (BASELINE, Variant("no-dropout", ("model.options.dropout=0.0",), "no dropout on fc6/fc7"))

Overrides may name the base pipeline's fields in braces (``{crop}``, ``{resize}``), filled in from
the resolved preset, so "no crops" can be said once for every preset.

Runs go to ``OUT/VARIANT/seedN`` — full training run folders (config.json, metrics.jsonl,
checkpoints, report.json, report.html). Variants whose resolved configuration is identical share
a folder (the baseline is trained once per seed for ``--study all``; an augmentation variant that
the preset already has, e.g. no reflections on digits, is not trained twice). A folder with
report.json is done and is not trained again; one with checkpoints/last.pt but no report resumes
exactly where it stopped; a folder holding a run of another configuration is an error, never
overwritten.

The table (``ablation.md``, ``ablation.json``, ``ablation.png`` in OUT) gives per variant the mean ±
sample standard deviation (n − 1) over seeds of the final top-1/top-5 error on the test split
(val when there is none; with the preset's evaluation views), the change from the baseline, and
for ``relu-tanh`` the epochs and seconds of training until the running training top-1 error first
reached the target (Fig. 1: 25 % on CIFAR-10, reached six times sooner with ReLUs).
"""

from __future__ import annotations

import json
import logging
import statistics
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from . import models
from .atomic import atomic_write, write_json
from .config import TrainConfig, resolve
from .data.transforms import pipeline
from .errors import AlexNetError
from .runs import RunFolder
from .train import RunOptions, train
from .visualize import _pyplot, save_figure

log = logging.getLogger(__name__)

TARGET_ERROR = 0.25  # Fig. 1: training error the ReLU and tanh nets race to


@dataclass(frozen=True)
class Variant:
    name: str  # also its run folder's name: unique across studies unless the overrides are the same
    overrides: tuple[str, ...] = ()  # `--set` items, on top of the preset and the command's flags
    note: str = ""  # what it is, for the table


BASELINE = Variant("baseline", (), "the preset as it is")

STUDIES: dict[str, tuple[Variant, ...]] = {
    # §3.1, Fig. 1: saturating tanh instead of ReLU everywhere
    "relu-tanh": (BASELINE, Variant("tanh", ('model.options.activation="tanh"',), "tanh instead of ReLU")),
    # §3.3: −1.4 / −1.2 points top-1 / top-5 on ImageNet from LRN
    "lrn": (BASELINE, Variant("no-lrn", ("model.options.lrn=false",), "no local response normalisation")),
    # §3.4: −0.4 / −0.3 from overlapping 3/2 pooling against 2/2
    "pooling": (BASELINE, Variant("non-overlapping", ('model.options.pooling="non-overlapping"',), "2×2 stride-2 pooling")),
    # §4.2: "Without dropout, our network exhibits substantial overfitting"
    "dropout": (BASELINE, Variant("no-dropout", ("model.options.dropout=0.0",), "no dropout on fc6/fc7")),
    # §4.1: translations + reflections, and PCA lighting (> −1 top-1)
    "augmentation": (
        BASELINE,
        Variant("no-flip", ("data.pipeline_options.flip=false",), "no horizontal reflections"),
        Variant("no-lighting", ("data.pipeline_options.lighting=0.0",), "no PCA lighting"),
        # crops off: store the images at the crop size, so the random crop is the whole image and
        # the model's input size does not change (the centre crop at test time is the whole image too)
        Variant("no-crops", ("data.pipeline_options.resize={crop}",), "images stored at the crop size: no random translations"),
        Variant("no-augmentation", ("data.pipeline_options.flip=false", "data.pipeline_options.lighting=0.0",
                                    "data.pipeline_options.resize={crop}"), "none of the three"),
    ),
    # §3.2: two towers against one tower of half the kernels (−1.7 / −1.2)
    "towers": (BASELINE, Variant("one-tower", ("model.options.towers=1",), "one tower with half the kernels, no groups")),
    # §4.2 and §5: the paper's dropout (survivors unscaled, × 0.5 at test) against the inverted dropout
    # of PyTorch and Caffe. With the paper's init only the first learns at ε = 0.01 (docs/TRAINING.md);
    # whichever the preset has is the baseline's run.
    "dropout-scaling": (
        BASELINE,
        Variant("paper-dropout", ('model.options.dropout_scaling="paper"',), "§4.2: survivors unscaled, × (1 − p) at test"),
        Variant("inverted-dropout", ('model.options.dropout_scaling="inverted"',), "PyTorch/Caffe: survivors × 1/(1 − p) in training"),
    ),
    # §3.3 against Ioffe & Szegedy 2015 §3.2: LRN (the baseline), batch normalization in its place
    # (bn1…bn5 after each conv, before its ReLU), and neither. "no-lrn" is the lrn study's variant:
    # the same configuration, so with --study all it is trained once.
    "norm": (
        BASELINE,
        Variant("batch-norm", ("model.options.lrn=false", "model.options.batch_norm=true"), "batch normalization instead of LRN"),
        Variant("no-lrn", ("model.options.lrn=false",), "no normalisation layer"),
    ),
}


@dataclass
class AblationOptions:
    """What ``alexnet ablate`` was asked for."""

    preset: str
    study: str  # a key of STUDIES, or "all"
    out: Path
    seeds: int = 2  # seeds preset.seed, preset.seed + 1, ...
    flags: dict[str, Any] = field(default_factory=dict)  # as config.resolve takes them (data.spec, epochs, device, …)
    overrides: list[str] = field(default_factory=list)  # `--set` items for every variant
    target_error: float = TARGET_ERROR  # relu-tanh: training top-1 error to reach


@dataclass
class Run:
    study: str
    variant: Variant
    seed: int
    config: TrainConfig
    folder: Path
    same_as: str | None = None  # an earlier variant with the identical configuration


def studies(name: str) -> list[str]:
    if name == "all":
        return list(STUDIES)
    if name not in STUDIES:
        raise AlexNetError(f"unknown study {name!r}; valid: {', '.join(STUDIES)}, all")
    return [name]


def plan(options: AblationOptions) -> list[Run]:
    """Every (study, variant, seed) with its resolved configuration and run folder."""
    if options.seeds < 1:
        raise AlexNetError(f"--seeds {options.seeds}: at least one seed")
    base = resolve(options.preset, options.flags, options.overrides)
    fields = asdict(pipeline(base.data.pipeline, **base.data.pipeline_options))
    runs: list[Run] = []
    folders: dict[str, tuple[str, str]] = {}  # config (without seed) as JSON -> (variant name, folder name)
    for study in studies(options.study):
        for variant in STUDIES[study]:
            items = [item.format(**fields) for item in variant.overrides]
            config = resolve(options.preset, options.flags, [*options.overrides, *items])
            key = json.dumps({**config.to_dict(), "seed": None}, sort_keys=True)
            first, folder_name = folders.setdefault(key, (variant.name, variant.name))
            same_as = first if first != variant.name else None
            for i in range(options.seeds):
                seed = base.seed + i
                runs.append(Run(study, variant, seed, _with_seed(config, seed), options.out / folder_name / f"seed{seed}", same_as))
    return runs


def _with_seed(config: TrainConfig, seed: int) -> TrainConfig:
    return replace(config, seed=seed)


def check_models(runs: list[Run]) -> None:
    """Build every variant's model once before training anything, so a typo fails now, not hours in."""
    seen = set()
    for run in runs:
        key = (run.config.model.name, json.dumps(run.config.model.options, sort_keys=True))
        if key in seen:
            continue
        seen.add(key)
        try:
            models.create(run.config.model.name, **run.config.model.options)
        except (ValueError, TypeError) as e:
            raise AlexNetError(f"study {run.study}, variant {run.variant.name}: {e}") from None


def state(run: Run) -> str:
    """done | resume | new, for a run folder; refuses a folder holding another configuration's run."""
    folder = RunFolder(run.folder, write=False)
    if folder.config.is_file():
        stored = folder.read_config()
        wanted = json.loads(json.dumps(run.config.to_dict()))
        if stored != wanted:
            changed = sorted(k for k in set(stored) | set(wanted) if stored.get(k) != wanted.get(k))
            raise AlexNetError(f"{run.folder} holds a run with another configuration (differs in {', '.join(changed)}); "
                               "use another --out or remove it")
    if folder.report_json.is_file():
        return "done"
    if folder.last.is_file():
        return "resume"
    return "new"


def run_all(options: AblationOptions, on_run: Callable[[Run, str], None] | None = None) -> dict[str, Any]:
    """Train what is not done yet, then write the table; returns it (ablation.json's content)."""
    runs = plan(options)
    check_models(runs)
    options.out.mkdir(parents=True, exist_ok=True)
    trained: set[Path] = set()
    for run in runs:
        if run.folder in trained:
            continue
        status = state(run)
        if on_run:
            on_run(run, status)
        if status != "done":
            train(run.config, RunOptions(out=run.folder, resume=status == "resume", force=status == "new", progress_bar=False))
        trained.add(run.folder)
    table = tabulate(runs, options)
    write_table(table, options.out)
    return table


# ---------------------------------------------------------------------------------------------
# The table


def final_errors(report: dict[str, Any], views: int) -> tuple[str, float, float]:
    """(which, top-1, top-5) of a run's report.json: test with the preset's views, else val."""
    final = report.get("final") or {}
    for key in (f"test_{views}view", "test_1view", f"val_{views}view", "val_1view"):
        if key in final:
            return key, final[key]["top1_error"], final[key]["top5_error"]
    raise AlexNetError(f"{report.get('run_dir')}: report.json has no final val or test errors")


def time_to_target(history: list[dict[str, Any]], target: float) -> tuple[int | None, float | None]:
    """(epochs, seconds of training) until the running training top-1 error first reached ``target``."""
    seconds = 0.0
    for record in history:
        seconds += record.get("epoch_seconds", 0.0)
        if record["train_top1_error"] <= target:
            return record["epoch"], seconds
    return None, None


def mean_std(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"mean": None, "std": None, "n": 0}
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0, "n": len(values)}


def tabulate(runs: list[Run], options: AblationOptions) -> dict[str, Any]:
    """The study table: per variant, mean ± std of the final errors and of the time to the target error."""
    table: dict[str, Any] = {"preset": options.preset, "seeds": options.seeds, "flags": {k: v for k, v in options.flags.items() if v is not None},
                             "overrides": options.overrides, "target_error": options.target_error, "studies": {}}
    for study in studies(options.study):
        rows = []
        for variant in STUDIES[study]:
            mine = [r for r in runs if r.study == study and r.variant == variant]
            top1, top5, epochs, seconds, reached, wall, which = [], [], [], [], 0, [], set()
            for r in mine:
                folder = RunFolder(r.folder, write=False)
                report = folder.read_report()
                key, e1, e5 = final_errors(report, r.config.eval_views)
                which.add(key)
                top1.append(e1)
                top5.append(e5)
                wall.append(report.get("wall_seconds", 0.0))
                n_epochs, secs = time_to_target(folder.read_metrics(), options.target_error)
                if n_epochs is not None:
                    reached += 1
                    epochs.append(n_epochs)
                    seconds.append(secs)
            row = {"variant": variant.name, "note": variant.note, "overrides": list(variant.overrides),
                   "same_as": mine[0].same_as if mine else None, "evaluated_on": sorted(which),
                   "folders": sorted({str(r.folder) for r in mine}), "top1_error": mean_std(top1), "top5_error": mean_std(top5),
                   "wall_seconds": mean_std(wall)}
            if study == "relu-tanh":
                row["to_target"] = {"reached": reached, "runs": len(mine), "epochs": mean_std(epochs), "seconds": mean_std(seconds)}
            rows.append(row)
        base = rows[0]["top1_error"]["mean"], rows[0]["top5_error"]["mean"]
        for row in rows:
            row["delta_top1"] = row["top1_error"]["mean"] - base[0] if base[0] is not None else None
            row["delta_top5"] = row["top5_error"]["mean"] - base[1] if base[1] is not None else None
        table["studies"][study] = rows
    return table


def _pm(stat: dict[str, Any], scale: float = 100.0, digits: int = 2) -> str:
    if stat["mean"] is None:
        return "–"
    if stat["n"] < 2:  # one run: no spread to show
        return f"{scale * stat['mean']:.{digits}f}"
    return f"{scale * stat['mean']:.{digits}f} ± {scale * stat['std']:.{digits}f}"


def markdown(table: dict[str, Any]) -> str:
    flags = ", ".join(f"{k}={v}" for k, v in table["flags"].items())
    lines = [f"# Ablations: preset {table['preset']}, {table['seeds']} seed(s)" + (f", {flags}" if flags else ""), ""]
    if table["overrides"]:
        lines += [f"Common overrides: {', '.join(table['overrides'])}", ""]
    lines += ["Final error in %, mean ± std over seeds (n − 1); Δ = change of the mean from the baseline, in points.", ""]
    for study, rows in table["studies"].items():
        lines += [f"## {study}", ""]
        relu = study == "relu-tanh"
        head = "| variant | top-1 error | top-5 error | Δ top-1 | Δ top-5 |"
        rule = "|---|---|---|---|---|"
        if relu:
            head += f" epochs to {100 * table['target_error']:g} % train error | seconds to it |"
            rule += "---|---|"
        lines += [head, rule]
        for row in rows:
            name = f"{row['variant']} ({row['note']})" + (f" = {row['same_as']}" if row["same_as"] else "")
            delta = lambda d: "–" if d is None else f"{100 * d:+.2f}"
            line = f"| {name} | {_pm(row['top1_error'])} | {_pm(row['top5_error'])} | {delta(row['delta_top1'])} | {delta(row['delta_top5'])} |"
            if relu:
                t = row["to_target"]
                reached = "" if t["reached"] == t["runs"] else f" ({t['reached']}/{t['runs']} runs reached it)"
                line += f" {_pm(t['epochs'], 1.0, 1)}{reached} | {_pm(t['seconds'], 1.0, 1)} |"
            lines.append(line)
        where = sorted({w for row in rows for w in row["evaluated_on"]})
        lines += ["", f"Evaluated on: {', '.join(where)}.", ""]
    return "\n".join(lines)


def table_figure(table: dict[str, Any]):
    """One panel per study: bars of the mean top-1 error with ±std error bars, per variant."""
    plt = _pyplot()
    names = list(table["studies"])
    cols = min(3, len(names))
    rows = -(-len(names) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.4 * cols + 0.6, 3.4 * rows + 0.3), squeeze=False)
    for ax in axes.flat[len(names):]:
        ax.set_axis_off()
    for ax, study in zip(axes.flat, names):
        rows = table["studies"][study]
        means = [100 * (r["top1_error"]["mean"] or 0) for r in rows]
        stds = [100 * (r["top1_error"]["std"] or 0) for r in rows]
        ax.bar(range(len(rows)), means, yerr=stds, capsize=4, color=["#7f7f7f"] + ["#1f77b4"] * (len(rows) - 1))
        ax.set_xticks(range(len(rows)), [r["variant"] for r in rows], rotation=30, ha="right", fontsize=8)
        ax.set_title(study, fontsize=10)
        ax.set_ylabel("top-1 error (%)")
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(f"ablations, preset {table['preset']}: mean ± std over {table['seeds']} seed(s)", fontsize=11)
    fig.tight_layout()
    return fig


def write_table(table: dict[str, Any], out: Path) -> None:
    """ablation.md, ablation.json and ablation.png in ``out``, each written atomically."""
    atomic_write(out / "ablation.md", markdown(table))
    write_json(out / "ablation.json", table)
    fig = table_figure(table)
    save_figure(fig, out / "ablation.png")
    _pyplot().close(fig)

