"""errors: the one line every command prints."""

import errno

from alexnet.errors import one_line


def test_one_line_folds_cuts_and_takes_a_librarys_first_line(tmp_path):
    assert one_line(ValueError("a\n   b\tc")) == "a b c"  # whitespace folded, every line kept
    assert one_line(ValueError("x" * 50), 10) == "x" * 10
    assert one_line(RuntimeError("  ")) == "RuntimeError"  # an empty message: its type
    shape = RuntimeError("Given input size: (256x1x1). Calculated output size: (256x0x0). Output size is too small\n"
                         "Exception raised from ... (most recent call first):\nframe #0: ...")
    assert one_line(shape, first_line=True) == "Given input size: (256x1x1). Calculated output size: (256x0x0). Output size is too small"
    assert one_line(OSError(errno.ENOENT, "No such file or directory", "x.jpg"), first_line=True) == \
        "x.jpg: No such file or directory"
    (tmp_path / "notes").write_text("mine")
    below = tmp_path / "notes" / "out.png"
    assert one_line(OSError(errno.ENOTDIR, "Not a directory", str(below))) == f"{below}: {tmp_path / 'notes'} is a file, not a folder"
