"""`alexnet bench features` in its quick mode: both rows run on JPEG photographs, and ours writes
the same fc7 as the reference's ImageFolder + torchvision alexnet (same weights, fp32)."""

import json

import pytest
from test_bench import assert_keys_as_stored

from alexnet.cli import main


def test_features_quick_rows_and_agreement(tmp_path):
    pytest.importorskip("skimage")
    out = tmp_path / "bench.json"
    assert main(["bench", "features", "--quick", "--device", "cpu", "--precision", "fp32", "--data-dir", str(tmp_path / "photos"),
                 "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["results"]
    assert [r["impl"] for r in rows] == ["reference", "ours"]
    assert all(r["part"] == "features" and r["images_per_s"] > 0 and r["photos"] == 12 for r in rows)
    ours = rows[1]
    assert ours["ratio"] == pytest.approx(ours["images_per_s"] / rows[0]["images_per_s"])
    assert ours["max_abs_diff_to_reference"] < 1e-4 * ours["reference_max_abs"]  # measured 1e-6 of it
    assert_keys_as_stored(rows, "cpu-features.json")
