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
overwritten. OUT itself is an ablate job (:mod:`alexnet.jobs`): ``OUT/state.json`` records the preset,
flags and overrides a rerun must repeat, ``OUT/.lock`` keeps a second ``alexnet ablate`` out, and an
OUT of other files or other settings is refused unless ``--force``, which trains beside them and never
removes a file ablate did not write.

The table (``ablation.md``, ``ablation.json``, ``ablation.png`` and one ``ablation-STUDY.png`` per
study in OUT; :mod:`alexnet.tools.ablate.table`) gives per variant the mean ± sample standard deviation
(n − 1) over seeds of the final top-1/top-5 error on the test split (val when there is none; with
the preset's evaluation views), the paired difference from the baseline with its 95 % interval,
how flat the curves were at the end, the total cost, and for ``relu-tanh`` the epochs and seconds
of training until the training top-1 error first reached the target (Fig. 1: 25 % on CIFAR-10,
reached six times sooner with ReLUs), to a tenth of an epoch: the error over each tenth's images.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from alexnet import jobs, models
from alexnet.data import open_dataset
from alexnet.data.transforms import pipeline
from alexnet.errors import AlexNetError, at_least, unknown
from alexnet.jobs import STATE, JobRecord, RunLock
from alexnet.reporting.html_report import TrainingReport
from alexnet.reporting.stats import mean_std
from alexnet.tools.ablate.table import final_errors, tabulate, time_to_target, write_table
from alexnet.training.config import TrainConfig, from_dict, resolve
from alexnet.training.loop import RunOptions, train
from alexnet.training.run_folder import RunFolder

__all__ = ["STUDIES", "AblationOptions", "Run", "final_errors", "mean_std", "plan", "run_all", "time_to_target"]

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
    seeds: int = 5  # seeds preset.seed, preset.seed + 1, ... (5: t(0.975, 4) = 2.78; 2 gives 12.7)
    flags: dict[str, Any] = field(default_factory=dict)  # as config.resolve takes them (data.spec, epochs, device, …)
    overrides: list[str] = field(default_factory=list)  # `--set` items for every variant
    target_error: float = TARGET_ERROR  # relu-tanh: training top-1 error to reach
    force: bool = False  # write into an OUT of other files or settings (never removing a file ablate did not write)


@dataclass
class Run:
    study: str
    variant: Variant
    seed: int
    config: TrainConfig
    folder: Path
    same_as: str | None = None  # an earlier variant with the identical configuration


def studies(name: str) -> list[str]:
    """``all``, one study or a comma-separated list (``lrn,pooling``), in the order given, each once."""
    if name == "all":
        return list(STUDIES)
    names = list(dict.fromkeys(n.strip() for n in name.split(",") if n.strip()))  # "lrn," is lrn
    if not names:
        raise AlexNetError(unknown("study", name, STUDIES, ", all"))
    for n in names:
        if n not in STUDIES:
            raise AlexNetError(unknown("study", n, STUDIES, ", all"))
    return names


def plan(options: AblationOptions) -> list[Run]:
    """Every (study, variant, seed) with its resolved configuration and run folder."""
    at_least("--seeds", options.seeds)
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


def state(run: Run, force: bool = False) -> str:
    """done | resume | new, for a run folder; refuses, unless ``force``, a folder holding another configuration's
    run (``force``: it is trained again, "new", and train's --force removes only the run's own files)."""
    folder = RunFolder(run.folder, write=False)
    if folder.config.is_file():
        # through from_dict(): a config.json written before a setting existed reads as that setting's default
        stored = json.loads(json.dumps(from_dict(TrainConfig, folder.read_config()).to_dict()))
        wanted = json.loads(json.dumps(run.config.to_dict()))
        if stored != wanted:
            if force:
                return "new"
            changed = sorted(k for k in set(stored) | set(wanted) if stored.get(k) != wanted.get(k))
            raise AlexNetError(f"{run.folder} holds a run with another configuration (differs in {', '.join(changed)}); "
                               "use another --out or remove it (or pass --force to train it again)")
    if folder.report_json.is_file():
        return "done"
    if folder.last.is_file():
        return "resume"
    return "new"


def own_files(runs: list[Run], out: Path) -> list[str]:
    """The names ablate writes in OUT: its record, the variants' run folders, the tables."""
    return [STATE, *{r.folder.relative_to(out).parts[0] for r in runs}, "ablation.md", "ablation.json", "ablation.png",
            *(f"ablation-{study}.png" for study in STUDIES)]


def open_job(options: AblationOptions, runs: list[Run]) -> JobRecord:
    """OUT's record (alexnet.jobs): new or empty OUT, or one of the same preset, flags and overrides; another is
    refused unless --force, which writes beside other files and never removes a run folder."""
    own = own_files(runs, options.out)
    jobs.claim(options.out, "ablate", force=options.force, own=own)
    settings = {"preset": options.preset, "flags": options.flags, "overrides": options.overrides}
    record = jobs.resume(options.out / STATE, "ablate", settings, force=options.force, own=own[:1])
    return record or JobRecord("ablate", settings, files=own[1:])


def run_all(options: AblationOptions, on_run: Callable[[Run, str], None] | None = None) -> dict[str, Any]:
    """Train what is not done yet, then write the table; returns it (ablation.json's content). One writer: OUT/.lock."""
    runs = plan(options)
    check_models(runs)
    for spec in dict.fromkeys(run.config.data.spec for run in runs):  # a mistyped --data fails before OUT is made
        open_dataset(spec)
    with RunLock(options.out):
        record = open_job(options, runs)
        record.done = False
        record.save(options.out / STATE)
        trained: set[Path] = set()
        for run in runs:
            if run.folder in trained:
                continue
            status = state(run, options.force)
            if on_run:
                on_run(run, status)
            if status != "done":
                try:
                    train(run.config, RunOptions(out=run.folder, resume=status == "resume", force=status == "new",
                                                 progress_bar=False, callbacks=[TrainingReport()]))
                except KeyboardInterrupt:  # the run's own advice is train --resume; the ablation continues them all
                    raise KeyboardInterrupt(f"interrupted in {run.folder}; the finished runs and this one's last checkpoint "
                                            "are kept: run the same alexnet ablate command again to continue") from None
            trained.add(run.folder)
        table = tabulate(runs, options, studies(options.study), STUDIES)
        write_table(table, options.out)
        record.done = True
        record.save(options.out / STATE)
    return table
