"""`alexnet bench decode --quick`: every way of storing the photographs is decoded, and the sizes are right."""

import importlib.util
import json

from test_bench import assert_keys_as_stored

from alexnet.cli import main


def test_decode_quick_rows_and_sizes(tmp_path, capsys):
    out = tmp_path / "decode.json"
    assert main(["bench", "decode", "--quick", "--device", "cpu", "--data-dir", str(tmp_path / "d"), "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "raw store" in printed and "JPEG store" in printed and "ImageNet's train set" in printed
    rows = json.loads(out.read_text())["results"]
    timed = [r for r in rows if r["what"] == "decode"]
    assert {r["storage"] for r in timed} == {"folder", "raw", "jpeg"}
    assert len(timed) == 6 + (importlib.util.find_spec("cv2") is not None)  # OpenCV's row where it is installed
    assert all(r["images_per_s"] > 0 and r["cores"] == 1 and r["images"] == 12 for r in timed)
    assert timed[0]["impl"] == "reference" and timed[0]["ratio"] == 1.0
    sizes = {r["storage"]: r for r in rows if r["what"] == "size"}
    assert sizes["raw"]["bytes_per_image"] == 256 * 256 * 3
    assert 0 < sizes["jpeg"]["bytes_per_image"] < sizes["folder"]["bytes_per_image"] < sizes["raw"]["bytes_per_image"]
    assert sizes["raw"]["imagenet_train_gb"] == 256 * 256 * 3 * 1_281_167 / 1e9
    assert_keys_as_stored(rows, "cpu-decode.json")
