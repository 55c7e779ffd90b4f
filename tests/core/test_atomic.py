"""alexnet.atomic: the user's umask, a full disk named with the file and no temporary left, best.pt as a link to last.pt."""

import os
import stat

import pytest
from helpers import save_plain_checkpoint

from alexnet import atomic


def test_written_files_get_the_users_umask(tmp_path):
    old = os.umask(0o022)
    try:
        atomic.atomic_write(tmp_path / "a.json", "{}")
        path = save_plain_checkpoint(tmp_path)
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.json").stat().st_mode) == 0o644 == stat.S_IMODE(path.stat().st_mode)


def test_a_full_disk_in_any_atomic_write_names_the_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    import errno

    def full(self, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    (tmp_path / "config.json").write_text("{}")
    monkeypatch.setattr(atomic.Path, "write_bytes", full)
    with pytest.raises(atomic.DiskFull, match=r"cannot write .*config.json: no space left on the device"):
        atomic.write_json(tmp_path / "config.json", {"a": 1})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json"] and (tmp_path / "config.json").read_text() == "{}"


def test_a_failed_write_names_the_users_path_not_the_temporary_file(tmp_path, monkeypatch):
    """Issue 25, item 9: export --out /sys/model.pt said `/sys/.model.pt.9171me__.tmp: Permission denied`."""
    import errno
    import tempfile

    def denied(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(tmp_path / ".model.pt.9171me__.tmp"))

    with monkeypatch.context() as m:
        m.setattr(tempfile, "mkstemp", denied)
        with pytest.raises(PermissionError) as info:
            atomic.atomic_write(tmp_path / "model.pt", b"x")
    assert info.value.filename == str(tmp_path / "model.pt") and info.value.strerror == "Permission denied"

    def cannot_rename(source, target):
        raise OSError(errno.EXDEV, "Invalid cross-device link", str(source), str(target))

    monkeypatch.setattr(atomic.os, "replace", cannot_rename)
    with pytest.raises(OSError) as info:
        atomic.atomic_write(tmp_path / "model.pt", b"x")
    assert info.value.filename == str(tmp_path / "model.pt") and sorted(p.name for p in tmp_path.iterdir()) == []
    if os.path.isdir("/proc"):  # a real refusal: no file can be made in /proc
        with pytest.raises(OSError) as info:
            atomic.atomic_write("/proc/alexnet-model.pt", b"x")
        assert info.value.filename == "/proc/alexnet-model.pt"


@pytest.mark.parametrize("links", [True, False])
def test_best_is_a_link_to_last_that_keeps_its_content_when_last_is_replaced(tmp_path, monkeypatch, links):
    import errno

    last, best = tmp_path / "last.pt", tmp_path / "best.pt"
    atomic.atomic_write(last, b"epoch 1")
    if not links:  # a filesystem without hard links: a copy
        monkeypatch.setattr(atomic.os, "link", lambda *a: (_ for _ in ()).throw(OSError(errno.EPERM, "no links")))
    atomic.atomic_link(last, best)
    assert best.read_bytes() == b"epoch 1" and (last.stat().st_ino == best.stat().st_ino) == links
    atomic.atomic_write(last, b"epoch 2")  # the next epoch's last.pt: a new file renamed over the name
    assert best.read_bytes() == b"epoch 1" and last.read_bytes() == b"epoch 2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt", "last.pt"]


def test_an_existing_file_is_refused_without_force_and_the_remedy_is_named(tmp_path):
    from alexnet.errors import AlexNetError

    out = tmp_path / "features.npy"
    atomic.refuse_existing(out, force=False, choose="--out")  # absent: nothing to refuse
    out.write_bytes(b"mine")
    with pytest.raises(AlexNetError, match=r"features.npy already exists; choose another --out or pass --force$"):
        atomic.refuse_existing(out, force=False, choose="--out")
    with pytest.raises(AlexNetError, match=r"features.npy already exists; pass --force to overwrite it$"):
        atomic.refuse_existing(out, force=False, choose=None)
    atomic.refuse_existing(out, force=True)
    with pytest.raises(AlexNetError, match="choose another path or pass --force"), atomic.atomic_path(out, overwrite=False):
        pass
    assert out.read_bytes() == b"mine"


def test_a_file_where_a_folder_must_go_is_named_by_every_writer(tmp_path):
    """mkdir -p under a file said "File exists" (the file itself in the way) or "Not a directory", naming
    neither the file nor the output; export, features and the run lock now say which file stands there."""
    from alexnet.errors import AlexNetError
    from alexnet.jobs import RunLock

    notes = tmp_path / "notes.txt"
    notes.write_text("mine\n")
    assert atomic.make_folder(tmp_path / "a" / "b") == tmp_path / "a" / "b" and (tmp_path / "a" / "b").is_dir()
    with pytest.raises(AlexNetError, match=f"^{notes} is a file, not a folder$"):  # named once
        atomic.make_folder(notes)
    with pytest.raises(AlexNetError, match=f"^{notes / 'x' / 'y'}: {notes} is a file, not a folder$"):
        atomic.make_folder(notes / "x" / "y")
    with pytest.raises(AlexNetError, match=f"^{notes / 'm.onnx'}: {notes} is a file, not a folder$"):
        with atomic.atomic_path(notes / "m.onnx"):
            pass
    with pytest.raises(AlexNetError, match=f"^{notes / 'f.npy'}: {notes} is a file, not a folder$"):
        RunLock(notes, output=notes / "f.npy").acquire()
    with pytest.raises(AlexNetError, match=f"^--out {tmp_path} is a folder; give a file name$"):
        atomic.check_output_path(tmp_path, True, "--out")
    assert atomic.check_output_path(tmp_path / "new" / "m.pt", False, "--out") == tmp_path / "new" / "m.pt"
    assert notes.read_text() == "mine\n" and not (tmp_path / "new").exists()
