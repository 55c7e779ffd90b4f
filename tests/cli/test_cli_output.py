"""What the commands print and write: the epoch lines, --quiet, a closed pipe, and the files they refuse to overwrite."""

import os
import subprocess
import sys

import pytest
from helpers import TINY, tiny_config

from alexnet import cli
from alexnet.cli.train import print_epoch
from alexnet.errors import most_workers
from alexnet.reporting.html_report import TrainingReport
from alexnet.training.loop import RunOptions, train


def test_epoch_lines_say_error(capsys):
    print_epoch({"epoch": 1, "train_loss": 2.4, "train_top1_error": 0.8684, "train_top5_error": 0.1229, "val_loss": 2.0,
                 "val_top1_error": 0.5, "val_top5_error": 0.1, "lr": 0.01, "images_per_second": 100.0, "epoch_seconds": 1.0})
    line = capsys.readouterr().out
    assert "train loss 2.4000 top-1 err 86.84%" in line and "val loss 2.0000 top-1 err 50.00% top-5 err 10.00%" in line


def test_quiet_still_prints_the_answer_and_a_closed_pipe_is_silent(tmp_path, capsys, cli_env):
    assert cli.main(["train", "--device", "cpu", "--epochs", "1", "--quiet", "--out", str(tmp_path / "q"),
                     *[a for s in TINY for a in ("--set", s)]]) == 0
    out = capsys.readouterr().out
    assert "top-1 err" in out and "test_1view" in out and "epoch   1" not in out
    # the reader is gone before alexnet writes (its imports take a second): every write meets a closed pipe
    piped = subprocess.run(f"{sys.executable} -m alexnet models | true", shell=True, capture_output=True, text=True, env=cli_env)
    assert piped.stderr == ""


def test_every_writer_refuses_to_overwrite_without_force(tmp_path, capsys):
    out = tmp_path / "run"
    train(tiny_config(max_steps=2), RunOptions(out=out, progress_bar=False, callbacks=[TrainingReport()]))
    assert cli.main(["visualize", "report", str(out)]) == 2  # train wrote report.html
    assert "report.html already exists; pass --force" in capsys.readouterr().err
    assert cli.main(["visualize", "report", str(out), "--force"]) == 0
    ckpt = str(out / "checkpoints" / "last.pt")
    plots = tmp_path / "plots"
    assert cli.main(["eval", "--checkpoint", ckpt, "--data", "digits", "--plots", str(plots), "--device", "cpu"]) == 0
    stamp = (plots / "confusion_matrix.png").stat().st_mtime_ns
    assert cli.main(["eval", "--checkpoint", ckpt, "--data", "digits", "--plots", str(plots), "--device", "cpu"]) == 2
    assert "confusion_matrix.png already exists; pass --force" in capsys.readouterr().err
    assert (plots / "confusion_matrix.png").stat().st_mtime_ns == stamp
    (tmp_path / "taken" / "confusion_matrix.png").mkdir(parents=True)  # a folder of the figure's name: refused first
    assert cli.main(["eval", "--checkpoint", str(tmp_path / "absent.pt"), "--plots", str(tmp_path / "taken"), "--force"]) == 2
    assert capsys.readouterr().err.strip().endswith("confusion_matrix.png is a folder; remove it or choose another --plots")


def test_train_flags_and_the_resume_help_name_real_options():
    from alexnet.training.config import FLAGS
    from alexnet.training.resume import RESUMABLE

    parser = cli.build_parser()
    train = parser._subparsers._group_actions[0].choices["train"]
    options = {s for a in train._actions for s in a.option_strings}
    assert set(FLAGS.values()) <= options  # every setting's flag exists, with its dashes
    ns = train.parse_args(["--batch-size", "7", "--lrn-kernel", "eager", "--no-channels-last"])
    from alexnet.cli.train import flags
    assert {k: v for k, v in flags(ns).items() if v is not None} == {"batch_size": 7, "lrn_kernel": "eager", "channels_last": False}
    resume_help = next(a.help for a in train._actions if "--resume" in a.option_strings)
    assert all(FLAGS[k] in resume_help for k in RESUMABLE) and "--lrn-kernel" in resume_help and "lrn_kernel" not in resume_help


def test_count_flags_out_of_range_are_one_line_errors_before_any_work(tmp_path, capsys):
    png, ck = str(tmp_path / "f.png"), str(tmp_path / "absent.pt")  # the check comes before the checkpoint is read
    cases = [
        (["visualize", "neighbors", ck, "--queries", "0", "--out", png], "--queries 0: must be at least 1"),
        (["visualize", "neighbors", ck, "--train-limit", "-1", "--out", png], "--train-limit -1: must be 0 or more"),
        (["visualize", "predictions", ck, "--images", "0", "--out", png], "--images 0: must be at least 1"),
        (["eval", "--checkpoint", ck, "--data", "digits", "--workers", "-1"], "--workers -1: must be 0 or more"),
        (["prepare", "digits", str(tmp_path / "store"), "--workers", "-2"], "--workers -2: must be 0 or more"),
        (["prepare", "digits", str(tmp_path / "store"), "--workers", "1000000000"],  # it went to multiprocessing.Pool
         f"--workers 1000000000: at most {most_workers()} worker processes here ({os.cpu_count()} CPUs)"),
        (["bench", "step", "--quick", "--workers", "-1"], "--workers -1: must be 0 or more"),
        (["summary", "alexnet", "--num-classes", "0"], "--num-classes 0: must be at least 1"),
        (["ablate", "--study", "lrn", "--seeds", "0", "--out", str(tmp_path / "ab")], "--seeds 0: must be at least 1"),
        (["explore", "--bank-limit", "-5"], "--bank-limit -5: must be 0 or more"),
        (["bench", "step", "--quick", "--warmup", "-1"], "--warmup -1: must be 0 or more"),
        (["bench", "decode", "--quick", "--photos", "0", "--data-dir", str(tmp_path / "b")], "--photos 0: must be at least 1"),
        (["bench", "serve", "--quick", "--serve-seconds", "-1"], "--serve-seconds -1: must be more than 0"),
        (["probe", "--features", str(tmp_path / "a.npy"), "--features-test", str(tmp_path / "b.npy"), "--max-iter", "0"],
         "--max-iter 0: must be at least 1"),
        (["probe", "--features", str(tmp_path / "a.npy"), "--features-test", str(tmp_path / "b.npy"), "--C", "nan"],
         "--C nan must be a positive, finite number"),  # it reached scikit-learn, whose error named no flag
    ]
    for argv, message in cases:
        assert cli.main(argv) == 2, argv
        assert capsys.readouterr().err == f"alexnet: error: {message}\n", argv
    for argv in (["visualize", "predictions", ck, "--seed", "-1", "--out", png],  # numpy's "expected non-negative integer"
                 ["train", "--seed", "1" + "0" * 29]):  # torch's "Overflow when unpacking long long"
        with pytest.raises(SystemExit) as exited:
            cli.main(argv)
        err = capsys.readouterr().err
        assert exited.value.code == 2 and len(err.splitlines()) == 1, argv
        assert "error: argument --seed: " in err and "is not a seed: a whole number from 0 (up to 18 digits)" in err, argv
    assert list(tmp_path.iterdir()) == []  # nothing was written


def test_a_path_through_a_file_is_named_before_any_work(tmp_path, capsys):
    """Writing under a file: "Not a directory" (or, for eval --plots, a failure after the whole evaluation)
    now names the file that stands where a folder should."""
    notes = tmp_path / "notes.txt"
    notes.write_text("mine\n")
    cases = [
        (["train", "--preset", "digits", "--epochs", "1", "--out", str(notes / "run")], f"{notes / 'run'}: {notes} is a file, not a folder"),
        (["eval", "--checkpoint", str(tmp_path / "absent.pt"), "--data", "digits", "--plots", str(notes)],
         f"--plots {notes}: {notes} is a file; give a folder"),
        (["summary", "alexnet", "--svg", str(notes / "fig.svg")], f"--svg {notes / 'fig.svg'}: {notes} is a file, not a folder"),
        (["export", "--checkpoint", str(tmp_path / "absent.pt"), "--format", "onnx", "--out", str(notes / "m.onnx")],
         f"--out {notes / 'm.onnx'}: {notes} is a file, not a folder"),
        (["import", "torchvision", str(tmp_path / "absent.pth"), "--out", str(notes / "c.pt")],
         f"--out {notes / 'c.pt'}: {notes} is a file, not a folder"),
        (["export", "--checkpoint", str(tmp_path / "absent.pt"), "--format", "torchscript", "--out", str(tmp_path), "--force"],
         f"--out {tmp_path} is a folder; give a file name"),
    ]
    for argv, message in cases:
        assert cli.main(argv) == 2, argv
        assert capsys.readouterr().err == f"alexnet: error: {message}\n", argv
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"] and notes.read_text() == "mine\n"


def test_debug_and_verbose_work_after_the_subcommand_as_the_hints_say_them(tmp_path):
    from alexnet.errors import AlexNetError

    args = cli.build_parser().parse_args(["import", "torchvision", "w.pth", "--out", "c.pt", "-v", "--debug"])
    assert args.verbose and args.debug
    args = cli.build_parser().parse_args(["--debug", "info", "c.pt"])  # before it, as ever: not undone by the subcommand's default
    assert args.debug and not getattr(args, "verbose", False)
    with pytest.raises(AlexNetError, match="no such checkpoint"):  # --debug: the exception itself, not the one line
        cli.main(["info", str(tmp_path / "absent.pt"), "--debug"])


def test_help_shows_defaults_but_never_none():
    """ablate and visualize show argparse's "(default: X)"; an option whose help names what stands in for None
    ("the preset's") said "(default: None)" after it."""
    parser = cli.build_parser()
    commands = parser._subparsers._group_actions[0].choices
    texts = [commands["ablate"].format_help(), *(f.format_help() for f in commands["visualize"]._subparsers._group_actions[0].choices.values())]
    assert "(default: 5)" in texts[0] and "(default: the preset's)" in " ".join(texts[0].split())
    assert not any("(default: None)" in t for t in texts)


def test_counts_read_as_english():
    """train's recipe and last lines said "1 epochs, 1 steps", eval "1 view(s)"."""
    from alexnet.errors import counted

    assert [counted(1, "epoch"), counted(0, "epoch"), counted(235, "step")] == ["1 epoch", "0 epochs", "235 steps"]


def test_usage_mistakes_are_one_line_with_the_nearest_choice(capsys):
    """argparse printed its usage block (five lines for export) above the error, and "invalid choice: 'trian'
    (choose from …)" with no suggestion; an unknown flag given to a subcommand was reported by `alexnet`."""
    cases = [
        (["trian"], "alexnet: error: argument COMMAND: 'trian' is not one of models, summary, prepare, train, info, eval, predict, "
                    "features, probe, search, import, export, visualize, explore, serve, ablate, bench, demo (did you mean 'train'?) "
                    "(see alexnet --help)"),
        (["export", "--checkpoint", "x"], "alexnet export: error: the following arguments are required: --format, --out "
                                          "(see alexnet export --help)"),
        (["export", "--checkpoint", "x", "--format", "onx", "--out", "y"],
         "alexnet export: error: argument --format: 'onx' is not one of onnx, torchscript, safetensors (did you mean 'onnx'?) "
         "(see alexnet export --help)"),
        (["train", "--lr-kernel", "eager"], "alexnet train: error: unrecognized arguments: --lr-kernel eager (did you mean "
                                            "'--lrn-kernel'?) (see alexnet train --help)"),
        (["train", "--bogus"], "alexnet train: error: unrecognized arguments: --bogus (see alexnet train --help)"),
        (["visualize", "filters", "c.pt", "--out", "f.png", "--forse"],
         "alexnet visualize filters: error: unrecognized arguments: --forse (did you mean '--force'?) "
         "(see alexnet visualize filters --help)"),
    ]
    for argv, line in cases:
        with pytest.raises(SystemExit) as stop:
            cli.main(argv)
        assert stop.value.code == 2 and capsys.readouterr().err == line + "\n", argv


def test_alexnet_alone_lists_the_commands(capsys):
    """A newcomer's first try, `alexnet` with nothing after it, said only "the following arguments are required: COMMAND"."""
    assert cli.main([]) == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: alexnet") and "train" in err and "required" not in err


def test_demo_refuses_what_it_cannot_use_before_its_first_line(tmp_path, capsys):
    """demo repeated train's advice (--resume, --force: flags demo does not have) after printing its first line."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text("{}")
    (tmp_path / "notes.txt").write_text("mine")
    for argv, message in ((["--out", str(run)], f"--out {run} already holds a run; choose another --out"),
                          (["--out", str(tmp_path / "notes.txt")], "notes.txt: a file, not a folder; choose another --out"),
                          (["--device", "cpuu", "--out", str(tmp_path / "new")], "--device 'cpuu': not a device")):
        assert cli.main(["demo", *argv]) == 2
        printed = capsys.readouterr()
        assert printed.out == "" and message in printed.err and len(printed.err.splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt", "run"]
