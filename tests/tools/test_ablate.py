"""alexnet ablate: studies as data, a run folder per (variant, seed), resume and skip, the table."""

import json

import pytest
from helpers import StopAfter
from PIL import Image

from alexnet.cli import main
from alexnet.errors import AlexNetError
from alexnet.jobs import STATE
from alexnet.tools import ablate
from alexnet.tools.ablate import AblationOptions, plan, run_all, time_to_target
from alexnet.training.loop import RunOptions, train

TINY = ["model.options.width=0.25", "max_steps=3"]


def options(out, study="dropout", **changes):
    base = dict(preset="digits", study=study, out=out, seeds=1, flags={"epochs": 1, "device": "cpu"}, overrides=list(TINY))
    return AblationOptions(**{**base, **changes})


def test_identical_variants_share_a_folder_and_placeholders_are_filled(tmp_path):
    runs = plan(options(tmp_path, "augmentation", seeds=2))
    by_name = {(r.variant.name, r.seed): r for r in runs}
    # digits has no reflections and no lighting already: those variants are the baseline
    assert by_name[("no-flip", 0)].same_as == "baseline" and by_name[("no-flip", 0)].folder == tmp_path / "baseline" / "seed0"
    assert by_name[("no-lighting", 1)].folder == tmp_path / "baseline" / "seed1"
    no_crops = by_name[("no-crops", 0)]
    assert no_crops.same_as is None and no_crops.config.data.pipeline_options["resize"] == 24  # = the preset's crop
    assert by_name[("baseline", 1)].config.seed == 1
    everything = plan(options(tmp_path, "all"))
    assert len({r.folder for r in everything if r.variant.name == "baseline"}) == 1
    assert {r.study for r in everything} == set(ablate.STUDIES)


def test_a_list_of_studies_shares_the_baseline_and_a_typo_is_named(tmp_path):
    runs = plan(options(tmp_path, "lrn, pooling,lrn", seeds=2))
    assert [r.study for r in runs if r.variant.name != "baseline"] == ["lrn"] * 2 + ["pooling"] * 2
    assert len({r.folder for r in runs}) == 6  # baseline ×2 seeds once, no-lrn ×2, non-overlapping ×2
    with pytest.raises(AlexNetError, match=r"unknown study 'polling' \(did you mean 'pooling'\?\); valid: .*, all$"):
        plan(options(tmp_path, "lrn,polling"))
    assert [r.study for r in plan(options(tmp_path, "lrn,")) if r.variant.name != "baseline"] == ["lrn"]  # a trailing comma


def test_a_mistyped_data_set_fails_before_anything_is_written(tmp_path):
    """The corrected command must then run: a state.json left by the typo refused it as 'other settings'."""
    out = tmp_path / "ab"
    with pytest.raises(AlexNetError, match=r"^digitz: no such folder \(did you mean 'digits'\?"):
        run_all(options(out, flags={"epochs": 1, "device": "cpu", "data.spec": "digitz"}))
    assert not out.exists()


def test_time_to_target_counts_epochs_and_seconds():
    history = [{"epoch": 1, "train_top1_error": 0.6, "epoch_seconds": 2.0},
               {"epoch": 2, "train_top1_error": 0.3, "epoch_seconds": 3.0},
               {"epoch": 3, "train_top1_error": 0.2, "epoch_seconds": 4.0}]
    assert time_to_target(history, 0.25) == (3, 9.0)
    assert time_to_target(history, 0.1) == (None, None)
    # with tenths (the loop's train_top1_error_tenths): the first tenth whose own error reached it
    history[1]["train_top1_error_tenths"] = [0.5, 0.4, 0.35, 0.3, None, 0.24, 0.2, 0.2, 0.2, 0.2]
    assert time_to_target(history, 0.25) == (pytest.approx(1.6), pytest.approx(2.0 + 0.6 * 3.0))
    assert time_to_target(history, 0.2) == (pytest.approx(1.7), pytest.approx(2.0 + 0.7 * 3.0))


def test_race_curve_is_fig_1s_training_error_by_tenth_and_its_panel_plots_the_seed_mean():
    from alexnet.tools.ablate.table import race_curve, study_figure

    history = [{"epoch": 1, "train_top1_error": 0.6, "train_top1_error_tenths": [0.9, 0.8, None, 0.6, 0.5, 0.5, 0.4, 0.4, 0.3, 0.3]},
               {"epoch": 2, "train_top1_error": 0.3}]  # an epoch without tenths (an older run): its running error
    points = race_curve(history)
    assert points[:3] == [(0.1, 0.9), (0.2, 0.8), (0.4, 0.6)] and points[-1] == (2.0, 0.3) and len(points) == 10
    other = [(x, e - 0.1) for x, e in points[1:]]  # a second seed without the first tenth: the mean is over shared points
    row = {"variant": "baseline", "top1_by_seed": {0: 0.1}, "top1_error": {"mean": 0.1}, "paired_top1": {"ci95": None},
           "to_target": {"curves": {0: points, 1: other}}, "curves": {}, "curve": None}
    fig = study_figure({"studies": {"relu-tanh": [row]}, "target_error": 0.25, "seeds": 2, "preset": "p"}, "relu-tanh")
    line = fig.axes[1].get_lines()[0]
    assert list(line.get_xdata()) == [x for x, _ in points[1:]]
    assert list(line.get_ydata()) == pytest.approx([100 * (e - 0.05) for _, e in points[1:]])
    assert fig.axes[1].get_lines()[1].get_ydata()[0] == pytest.approx(25.0)  # the target line


def test_verdict_is_the_intervals_sign_and_the_tail_is_the_last_quarters_change():
    from alexnet.reporting.stats import paired
    from alexnet.tools.ablate.table import tail_change, verdict

    base = {0: 0.10, 1: 0.20, 2: 0.30, 3: 0.12}
    assert verdict(paired(base, {0: 0.20, 1: 0.28, 2: 0.40, 3: 0.20})) == "higher"  # every seed got worse: above 0
    assert verdict(paired(base, {0: 0.05, 1: 0.3, 2: 0.25, 3: 0.13})) == "no difference shown"
    assert verdict(paired({0: 0.5}, {0: 0.4})) == "one seed: no interval"
    assert tail_change([0.9, 0.5, 0.3, 0.25, 0.2, 0.2, 0.19, 0.2]) == pytest.approx(0.2 - 0.2)  # the last quarter: flat
    assert tail_change([0.9, 0.8]) is None


def test_relu_tanh_table_pairs_the_epochs_to_the_target_by_seed(tmp_path):
    """Fig. 1's race in the table: epochs until 25 % training error per seed, and their paired Δ."""
    from alexnet.tools.ablate.table import tabulate

    opts = options(tmp_path, "relu-tanh", seeds=3)
    runs = plan(opts)
    reach = {("baseline", 0): 5, ("baseline", 1): 6, ("baseline", 2): 6, ("tanh", 0): 3, ("tanh", 1): 4, ("tanh", 2): 3}
    for r in runs:
        r.folder.mkdir(parents=True)
        (r.folder / "report.json").write_text(json.dumps({"final": {"test_1view": {"top1_error": 0.01, "top5_error": 0.0}},
                                                          "wall_seconds": 10.0}))
        n = reach[(r.variant.name, r.seed)]
        rows = [{"epoch": e, "train_top1_error": 0.5 if e < n else 0.2, "val_top1_error": 0.1, "epoch_seconds": 1.0} for e in range(1, 9)]
        (r.folder / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    base, tanh = tabulate(runs, opts, ["relu-tanh"], ablate.STUDIES)["studies"]["relu-tanh"]
    assert base["to_target"]["epochs"]["mean"] == pytest.approx(17 / 3) and tanh["to_target"]["epochs_by_seed"] == {0: 3, 1: 4, 2: 3}
    diff = tanh["to_target"]["paired_epochs"]
    assert diff["mean"] == pytest.approx(-7 / 3) and diff["ci95"][1] < 0  # d = −2, −2, −3


def test_two_variants_train_resume_skip_and_tabulate(tmp_path):
    opts = options(tmp_path)
    runs = plan(opts)
    # an interrupted run of the second variant: it must be resumed, not restarted (OUT's record is written first)
    ablate.open_job(opts, runs).save(tmp_path / STATE)
    interrupted = [r for r in runs if r.variant.name == "no-dropout"][0]
    train(interrupted.config, RunOptions(out=interrupted.folder, progress_bar=False, callbacks=[StopAfter(1)]))
    assert (interrupted.folder / "checkpoints" / "last.pt").is_file()
    seen = []
    table = run_all(opts, lambda r, status: seen.append((r.variant.name, status)))
    assert seen == [("baseline", "new"), ("no-dropout", "resume")]
    assert json.loads((interrupted.folder / "report.json").read_text())["steps"] == 3
    for name in ("ablation.md", "ablation.json", "ablation.png", "ablation-dropout.png"):
        assert (tmp_path / name).is_file()
    for name in ("ablation.png", "ablation-dropout.png"):
        with Image.open(tmp_path / name) as im:
            im.load()
            assert im.width > 100
    assert table["runs"] == 2 and table["cost_seconds"] > 0
    rows = table["studies"]["dropout"]
    assert [r["variant"] for r in rows] == ["baseline", "no-dropout"]
    assert all(r["top1_error"]["n"] == 1 and 0 <= r["top1_error"]["mean"] <= 1 for r in rows)
    assert rows[0]["delta_top1"] == 0.0
    assert json.loads((tmp_path / "ablation.json").read_text()) == json.loads(json.dumps(table))
    md = (tmp_path / "ablation.md").read_text()
    assert "| no-dropout (no dropout on fc6/fc7) |" in md and f"{100 * rows[1]['top1_error']['mean']:.2f}" in md
    # a rerun trains nothing: every folder is done
    stamp = (interrupted.folder / "report.json").stat().st_mtime_ns
    seen.clear()
    run_all(opts, lambda r, status: seen.append(status))
    assert seen == ["done", "done"] and (interrupted.folder / "report.json").stat().st_mtime_ns == stamp
    # a run folder written before a setting existed (here: optim.layers, schedule.milestones) is still done
    config = json.loads((interrupted.folder / "config.json").read_text())
    del config["optim"]["layers"], config["schedule"]["milestones"]
    (interrupted.folder / "config.json").write_text(json.dumps(config))
    seen.clear()
    run_all(opts, lambda r, status: seen.append(status))
    assert seen == ["done", "done"]
    # the same folders asked for with another configuration: refused, nothing overwritten
    with pytest.raises(AlexNetError, match=r"state.json: a finished ablate run with other settings \(overrides .*'optim.lr=0.05'\]\)"):
        run_all(options(tmp_path, overrides=[*TINY, "optim.lr=0.05"]))
    other = options(tmp_path, overrides=[*TINY, "optim.lr=0.05"])
    with pytest.raises(AlexNetError, match="seed0 holds a run with another configuration"):  # each run folder is checked too
        ablate.state(plan(other)[0])


def test_cli_rejects_unknown_options_before_training(tmp_path, capsys):
    code = main(["ablate", "--study", "lrn", "--seeds", "1", "--epochs", "1", "--set", "model.options.nonsense=1",
                 "--out", str(tmp_path / "a")])
    assert code == 2 and "nonsense" in capsys.readouterr().err
    assert not (tmp_path / "a" / "baseline").exists()


def test_an_out_of_other_files_is_refused_before_training(tmp_path):
    (tmp_path / "thesis.tex").write_text("mine")
    with pytest.raises(AlexNetError, match=r"holds other files \(thesis.tex\) and no alexnet ablate job; .* pass --force"):
        run_all(options(tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["thesis.tex"]  # nothing trained, the lock released


def test_a_users_file_of_an_ablate_name_is_never_written_over(tmp_path, capsys):
    """Issue 25, item 1: mine/ablation.md (the user's) and no ablate record: refused with and without --force."""
    (tmp_path / "ablation.md").write_text("MINE")
    (tmp_path / "ablation-lrn.png").write_text("my figure")
    for force in ([], ["--force"]):
        code = main(["ablate", "--study", "lrn", "--seeds", "1", "--epochs", "1", "--device", "cpu", *force,
                     "--out", str(tmp_path)])
        assert code == 2 and "not written by alexnet ablate" in capsys.readouterr().err
    assert (tmp_path / "ablation.md").read_text() == "MINE" and (tmp_path / "ablation-lrn.png").read_text() == "my figure"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ablation-lrn.png", "ablation.md"]


def test_ctrl_c_says_to_rerun_the_ablation_not_train_resume(tmp_path, monkeypatch, capsys):
    """A run's own Ctrl-C advice is ``alexnet train --resume RUN``; inside an ablation the command that continues
    every run is the ablation's own, said on one line."""
    from alexnet.training.loop import TrainingInterrupted

    def interrupted(config, run_options):
        raise TrainingInterrupted(f"interrupted at epoch 1, step 2; resume with: alexnet train --resume {run_options.out}")

    monkeypatch.setattr(ablate, "train", interrupted)
    code = main(["ablate", "--study", "lrn", "--seeds", "1", "--epochs", "1", "--device", "cpu", "--out", str(tmp_path / "a")])
    err = capsys.readouterr().err.strip()
    assert code == 130 and len(err.splitlines()) == 1 and "train --resume" not in err
    assert err.startswith(f"alexnet: interrupted in {tmp_path / 'a' / 'baseline' / 'seed0'}; ")
    assert err.endswith("run the same alexnet ablate command again to continue")
