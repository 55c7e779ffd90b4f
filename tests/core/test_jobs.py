"""alexnet.jobs: one writer per job (a live holder refused by pid, a dead one's lock taken over) and the
one rule of the state record (resume the same settings; refuse another kind, other settings or other files
without --force; --force removes only the job's own files)."""

import os
import signal
import subprocess
import sys

import pytest

from alexnet.errors import AlexNetError
from alexnet.jobs import LOCK, STATE, JobRecord, RunLock, claim, read_record, resume

SETTINGS = {"source": "/photos", "size": 24}


def test_a_held_lock_refuses_a_second_writer_naming_the_pid(tmp_path):
    with RunLock(tmp_path):
        assert f"pid {os.getpid()} on host" in (tmp_path / LOCK).read_text()
        with pytest.raises(AlexNetError, match=rf"{tmp_path} is being written by pid {os.getpid()} on host .*; wait for"):
            RunLock(tmp_path).acquire()
    assert not (tmp_path / LOCK).exists()  # released and removed
    RunLock(tmp_path).acquire().release()


def test_the_lock_of_a_killed_process_is_taken_over(tmp_path, cli_env):
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from alexnet.jobs import RunLock; "
                               "RunLock(sys.argv[1], '.job.lock').acquire(); print('held', flush=True); time.sleep(60)",
                               str(tmp_path)], stdout=subprocess.PIPE, text=True, env=cli_env)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(AlexNetError, match=rf"is being written by pid {holder.pid} on host"):
            RunLock(tmp_path, ".job.lock").acquire()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert f"pid {holder.pid}" in (tmp_path / ".job.lock").read_text()  # a stale lock file is left behind
    with RunLock(tmp_path, ".f.npy.lock", tmp_path / "f.npy"):  # a lock of one output names it, not its folder
        with pytest.raises(AlexNetError, match=rf"^{tmp_path}/f.npy is being written by pid {os.getpid()} on host"):
            RunLock(tmp_path, ".f.npy.lock", tmp_path / "f.npy").acquire()
    with RunLock(tmp_path, ".job.lock"):
        assert f"pid {os.getpid()}" in (tmp_path / ".job.lock").read_text()


def test_the_same_settings_resume_and_no_record_starts_afresh(tmp_path):
    assert resume(tmp_path / STATE, "prepare", SETTINGS, force=False) is None
    JobRecord("prepare", dict(SETTINGS), {"done": 3}, ["train.images.u8"]).save(tmp_path / STATE)
    assert read_record(tmp_path / STATE) == JobRecord("prepare", SETTINGS, {"done": 3}, ["train.images.u8"], done=False)
    record = resume(tmp_path / STATE, "prepare", {"size": 24, "source": "/photos"}, force=False)
    assert record.progress == {"done": 3} and record.files == ["train.images.u8"] and not record.done


def test_a_record_of_another_kind_or_other_settings_is_refused(tmp_path):
    JobRecord("features", {"layer": "fc7"}).save(tmp_path / STATE)
    for force in (False, True):
        with pytest.raises(AlexNetError, match=r"state.json: the record of an alexnet features job, not prepare; choose another "
                                               r"output \(--force does not remove another job's files\)"):
            resume(tmp_path / STATE, "prepare", SETTINGS, force=force)
    assert read_record(tmp_path / STATE).kind == "features"
    JobRecord("prepare", {**SETTINGS, "size": 32}, done=True).save(tmp_path / STATE)
    with pytest.raises(AlexNetError, match=r"a finished prepare run with other settings \(size 32 → 24\); rerun it as it was"):
        resume(tmp_path / STATE, "prepare", SETTINGS, force=False)
    JobRecord("prepare", {**SETTINGS, "flags": {"epochs": 1, "device": None}}).save(tmp_path / STATE)
    with pytest.raises(AlexNetError, match=r"other settings \(flags.epochs 1 → 2\)"):  # not the two whole tables
        resume(tmp_path / STATE, "prepare", {**SETTINGS, "flags": {"epochs": 2, "device": None}}, force=False)
    (tmp_path / STATE).write_text('{"digest": "abc"}')
    with pytest.raises(AlexNetError, match=r"state.json: not a job record .*; pass --force"):
        resume(tmp_path / STATE, "prepare", SETTINGS, force=False)
    assert (tmp_path / STATE).read_text() == '{"digest": "abc"}'  # nothing removed


def test_force_removes_only_the_jobs_own_files(tmp_path):
    JobRecord("prepare", {**SETTINGS, "size": 32}, files=["train.images.u8"]).save(tmp_path / STATE)
    for name in ("train.images.u8", "val.images.u8", "holiday.jpg"):
        (tmp_path / name).write_text(name)
    (tmp_path / "photos").mkdir()
    assert resume(tmp_path / STATE, "prepare", SETTINGS, force=True, own=["val.images.u8", "photos"]) is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["holiday.jpg", "photos"]  # a folder is never removed


def test_a_folder_of_other_files_is_refused_without_force_and_kept_with_it(tmp_path):
    assert claim(tmp_path / "new", "ablate", force=False) == []
    (tmp_path / LOCK).write_text("")
    (tmp_path / "baseline").mkdir()  # an empty folder of its own name holds nothing to lose
    assert claim(tmp_path, "ablate", force=False, own=["ablation.md", "baseline"]) == []
    (tmp_path / "thesis.tex").write_text("mine")
    with pytest.raises(AlexNetError, match=rf"{tmp_path} holds other files \(thesis.tex\) and no alexnet ablate job; "
                                           "choose a new or empty folder, or pass --force"):
        claim(tmp_path, "ablate", force=False, own=["ablation.md"])
    assert claim(tmp_path, "ablate", force=True, own=["ablation.md"]) == [tmp_path / "thesis.tex"]
    assert (tmp_path / "thesis.tex").read_text() == "mine"
    with pytest.raises(AlexNetError, match="thesis.tex exists and is not a folder"):
        claim(tmp_path / "thesis.tex", "ablate", force=True)


def test_a_file_of_the_jobs_own_name_without_its_record_is_never_written_over(tmp_path):
    """The user's ablation.md in a folder with no ablate record is theirs: refused, even with --force."""
    (tmp_path / "ablation.md").write_text("MINE")
    for force in (False, True):
        with pytest.raises(AlexNetError, match=rf"{tmp_path}/ablation.md: not written by alexnet ablate \({tmp_path} has no "
                                               r"state.json\), and ablate writes a file of that name; move it out .*--force "
                                               r"never replaces"):
            claim(tmp_path, "ablate", force=force, own=["ablation.md"])
    JobRecord("ablate", {}).save(tmp_path / STATE)
    assert claim(tmp_path, "ablate", force=False, own=["ablation.md"]) == []  # with its record: its own table
    assert (tmp_path / "ablation.md").read_text() == "MINE"
