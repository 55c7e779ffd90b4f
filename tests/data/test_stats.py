import numpy as np
import pytest
import torch

from alexnet.data.stats import Stats, StatsAccumulator, compute_stats


def test_stats_match_numpy_over_all_pixels(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(50, 6, 5, 3), dtype=np.uint8)
    images[..., 1] = images[..., 0] // 2 + 20  # correlated channels, so the PCA has structure
    s = compute_stats(images, chunk=7)
    flat = images.reshape(-1, 3).astype(np.float64)
    np.testing.assert_allclose(s.mean_image, images.mean(axis=0), rtol=1e-5)
    np.testing.assert_allclose(s.channel_mean, flat.mean(axis=0))
    np.testing.assert_allclose(s.channel_std, flat.std(axis=0))
    cov = np.cov(flat, rowvar=False, bias=True)
    np.testing.assert_allclose(s.eigvec @ np.diag(s.eigval) @ s.eigvec.T, cov, rtol=1e-6, atol=1e-6)
    assert np.all(np.diff(s.eigval) <= 0) and s.count == 50
    # round trips: npz file and checkpoint tensors
    s.save(tmp_path / "stats.npz")
    back = Stats.load(tmp_path / "stats.npz")
    np.testing.assert_array_equal(back.eigvec, s.eigvec)
    state = s.to_state()
    assert isinstance(state["mean_image"], torch.Tensor)
    np.testing.assert_array_equal(Stats.from_state(state).mean_image, s.mean_image)


def test_stats_refuse_mixed_sizes():
    acc = StatsAccumulator()
    acc.update(np.zeros((2, 4, 4, 3), np.uint8))
    with pytest.raises(ValueError, match="one size"):
        acc.update(np.zeros((2, 5, 4, 3), np.uint8))
