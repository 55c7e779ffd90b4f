"""The paper's pipeline as batch transforms: crops, reflections, lighting, ten views, normalisation."""

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms as T

from alexnet.data.imageset import ImageSet
from alexnet.data.loader import epoch_order, iter_batches
from alexnet.data.stats import compute_stats
from alexnet.data.transforms import FULL_RESCALE, Pipeline, Preprocess, downsample, pipeline


def photo(h=375, w=500):
    skimage_data = pytest.importorskip("skimage.data")
    img = skimage_data.chelsea()  # 300×451 RGB, a real photograph
    return np.asarray(Image.fromarray(img).resize((w, h), Image.BILINEAR))


def test_downsample_equals_torchvision_resize_and_centre_crop():
    img = photo(375, 500)
    ours = downsample(img, 256)
    ref = np.asarray(T.CenterCrop(256)(T.Resize(256)(Image.fromarray(img))))
    assert ours.shape == (256, 256, 3)
    np.testing.assert_array_equal(ours, ref)
    tall = downsample(img.transpose(1, 0, 2).copy(), 256)
    np.testing.assert_array_equal(tall, np.asarray(T.CenterCrop(256)(T.Resize(256)(Image.fromarray(img.transpose(1, 0, 2).copy())))))


@pytest.mark.parametrize("shape", [(1, 20000), (20000, 1), (3, 4000), (700, 5)])
def test_downsample_of_a_thin_or_wide_image_resamples_only_about_its_output(shape, monkeypatch):
    """Issue 25, item 2: a 1×20000 strip was rescaled whole (5,120,000×256 pixels, 3.9 GB) before the crop.
    Every image Pillow makes is now at most FULL_RESCALE × the output, and the pixels stay within 1 of torchvision's."""
    made = []
    resize = Image.Image.resize

    def recording(self, size, *args, **kwargs):
        made.append(size[0] * size[1])
        return resize(self, size, *args, **kwargs)

    img = np.random.default_rng(0).integers(0, 256, (*shape, 3), dtype=np.uint8)
    monkeypatch.setattr(Image.Image, "resize", recording)
    ours = downsample(img, 32)
    assert ours.shape == (32, 32, 3) and made and max(made) <= FULL_RESCALE * 32 * 32
    monkeypatch.setattr(Image.Image, "resize", resize)
    if max(shape) <= 4000:  # torchvision's own whole rescale is affordable here
        ref = np.asarray(T.CenterCrop(32)(T.Resize(32)(Image.fromarray(img))))
        assert np.abs(ours.astype(int) - ref.astype(int)).max() <= 1


def stats_for(images):
    return compute_stats(images)


def test_centre_crop_and_ten_views_match_torchvision_tencrop():
    img = downsample(photo(), 256)
    pre = Preprocess(pipeline("torchvision"), stats_for(img[None]))
    x = torch.from_numpy(img[None])
    views = pre.views(x, 10)
    assert views.shape == (1, 10, 3, 224, 224)
    ref = T.TenCrop(224)(torch.from_numpy(img).permute(2, 0, 1).float())
    mean = torch.tensor(pre.stats.channel_mean).float().view(3, 1, 1)
    std = torch.tensor(pre.stats.channel_std).float().view(3, 1, 1)
    for i, r in enumerate(ref):
        torch.testing.assert_close(views[0, i], (r - mean) / std)
    torch.testing.assert_close(pre.views(x, 1)[:, 0], pre.centre_crop(x))
    torch.testing.assert_close(views[:, 4], pre.centre_crop(x))


@pytest.mark.parametrize("name", ["torchvision", "caffenet"])
def test_centre_crop_of_a_stored_batch_is_cut_before_it_becomes_float(name):
    """eval() of uint8 batches as stored: the same values as fitting, cropping and normalising the
    float batch, bit for bit, and channels_last (the fast path's layout: no copy left to make)."""
    images = np.stack([downsample(photo(), 256), downsample(photo()[::-1].copy(), 256)])
    pre = Preprocess(pipeline(name), stats_for(images))
    x = torch.from_numpy(images)
    o = (256 - pre.pipeline.crop) // 2
    slow = pre.normalize(pre.fit(x)[:, :, o : o + pre.pipeline.crop, o : o + pre.pipeline.crop].contiguous())
    fast = pre.centre_crop(x)
    assert torch.equal(fast, slow) and fast.is_contiguous(memory_format=torch.channels_last)


def test_mean_image_is_subtracted_pixel_by_pixel_under_random_crops():
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (6, 40, 40, 3), dtype=np.uint8)
    p = Pipeline("t", resize=40, crop=32, flip=False, lighting=0.0)
    stats = compute_stats(imgs)
    stats.mean_image = np.round(stats.mean_image)  # whole numbers, so that the mean image is itself a uint8 image
    pre = Preprocess(p, stats)
    # training crops of the mean image itself give exactly zero
    mean_img = torch.from_numpy(stats.mean_image.astype(np.uint8))[None].repeat(4, 1, 1, 1)
    out = pre.augment(mean_img, torch.Generator().manual_seed(0))
    assert out.shape == (4, 3, 32, 32)
    assert out.abs().max() == 0


def test_random_crops_vary_and_reflect():
    imgs = np.arange(2 * 12 * 12 * 3, dtype=np.int64).reshape(2, 12, 12, 3) % 251
    imgs = imgs.astype(np.uint8)
    p = Pipeline("t", resize=12, crop=8, normalize="unit", flip=True, lighting=0.0)
    pre = Preprocess(p, None)
    g = torch.Generator().manual_seed(1)
    outs = [pre.augment(torch.from_numpy(imgs), g) for _ in range(20)]
    distinct = {tuple(o[0, 0, 0, :3].tolist()) for o in outs}
    assert len(distinct) > 3  # different positions / reflections
    full = torch.from_numpy(imgs).permute(0, 3, 1, 2).float() / 255
    for o in outs:  # every training patch is a crop of the image or of its reflection
        patch = o[0]
        found = any(
            torch.equal(src[:, t : t + 8, l : l + 8], patch)
            for src in (full[0], full[0].flip(-1)) for t in range(5) for l in range(5)
        )
        assert found


@pytest.mark.parametrize("normalize", ["mean_image", "channel", "unit"])
def test_batch_gather_crop_equals_the_per_image_crop(normalize):
    """The GPU path (one gather for the batch) and the CPU path (one slice per image) cut the same patches."""
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (6, 20, 20, 3), dtype=np.uint8)
    pre = Preprocess(Pipeline("t", resize=20, crop=15, normalize=normalize, lighting=0.0), compute_stats(imgs))
    x = torch.from_numpy(imgs)
    tops, lefts, flips = [0, 5, 2, 5, 1, 3], [5, 0, 3, 5, 4, 0], [True, False, True, True, False, False]
    loop, gather = pre._crop_uint8(x, tops, lefts, flips), pre._crop_gather(x, tops, lefts, flips)
    assert gather.shape == (6, 3, 15, 15) and gather.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(gather, loop, rtol=0, atol=1e-5)
    want = x[1, 5:20, 0:15].permute(2, 0, 1).float()  # image 1 unreflected, image 0 reflected
    if normalize == "unit":
        torch.testing.assert_close(gather[1], want / 255.0)
        torch.testing.assert_close(gather[0], x[0, 0:15, 5:20].permute(2, 0, 1).float().flip(-1) / 255.0)


def test_pca_lighting_adds_one_colour_shift_per_image():
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (8, 16, 16, 3), dtype=np.uint8)
    stats = compute_stats(imgs)
    base = Pipeline("t", resize=16, crop=16, normalize="mean_image", flip=False, lighting=0.0)
    lit = Pipeline("t", resize=16, crop=16, normalize="mean_image", flip=False, lighting=0.1)
    x = torch.from_numpy(imgs)
    diff = Preprocess(lit, stats).augment(x, torch.Generator().manual_seed(0)) - Preprocess(base, stats).augment(x)
    shift = diff[:, :, 0, 0]
    torch.testing.assert_close(diff, shift[:, :, None, None].expand_as(diff))  # same shift at every pixel
    assert shift.abs().max() > 0
    # the shift lies in the span of the eigenvectors scaled by the eigenvalues: solve for alpha
    eig = torch.tensor(stats.eigvec * stats.eigval / 255.0).float()
    alpha = torch.linalg.solve(eig, shift.T).T
    assert alpha.std() == pytest.approx(0.1, rel=0.8)


def test_grey_data_to_rgb_model_and_back():
    grey = np.full((2, 8, 8, 1), 100, np.uint8)
    pre = Preprocess(Pipeline("t", resize=8, crop=8, normalize="unit", flip=False, lighting=0.0), None)
    out = pre.centre_crop(torch.from_numpy(grey))
    assert out.shape == (2, 3, 8, 8)
    torch.testing.assert_close(out, torch.full_like(out, 100 / 255))
    rgb = np.zeros((1, 8, 8, 3), np.uint8)
    rgb[..., 0] = 255
    pre1 = Preprocess(Pipeline("t", resize=8, crop=8, channels=1, normalize="unit", flip=False, lighting=0.0), None)
    assert pre1.centre_crop(torch.from_numpy(rgb)).flatten()[0].item() == pytest.approx(0.299, abs=1e-4)


def test_small_images_are_fitted_on_the_device():
    pre = Preprocess(pipeline("small"), compute_stats(np.random.default_rng(0).integers(0, 256, (4, 8, 8, 1), dtype=np.uint8)))
    x = torch.randint(0, 256, (4, 8, 8, 1), dtype=torch.uint8)
    assert pre.augment(x).shape == (4, 3, 32, 32)
    assert pre.views(x, 10).shape == (4, 10, 3, 32, 32)


def test_random_resized_crop_output():
    img = downsample(photo(), 256)
    pre = Preprocess(pipeline("torchvision"), compute_stats(img[None]))
    out = pre.augment(torch.from_numpy(np.stack([img] * 3)), torch.Generator().manual_seed(0))
    assert out.shape == (3, 3, 224, 224) and torch.isfinite(out).all()
    assert out.is_contiguous(memory_format=torch.channels_last)
    assert not torch.allclose(out[0], out[1])


def test_random_resized_crop_is_torchvisions_resized_crop_of_the_drawn_boxes():
    from torchvision.transforms.v2 import functional as TF

    from alexnet.data.transforms import _resized_crop_boxes

    img = downsample(photo(), 256)
    stats = compute_stats(img[None])
    pre = Preprocess(pipeline("torchvision", lighting=0.0), stats)
    batch = torch.from_numpy(np.stack([img, img[::-1].copy(), img[:, ::-1].copy(), img]))
    out = pre.augment(batch, torch.Generator().manual_seed(3))
    g = torch.Generator().manual_seed(3)  # the same draws: boxes, then reflections
    boxes = _resized_crop_boxes(4, 256, 256, pre.pipeline.min_area, g)
    flips = (torch.rand(4, generator=g) < 0.5).tolist()
    assert len({b for b in boxes}) == 4 and all(0 < h <= 256 and 0 < w <= 256 for _, _, h, w in boxes)
    mean, std = (torch.tensor(v, dtype=torch.float32).view(3, 1, 1) for v in (stats.channel_mean, stats.channel_std))
    for i, (top, left, h, w) in enumerate(boxes):
        want = TF.resized_crop(batch[i].permute(2, 0, 1), top, left, h, w, [224, 224], antialias=True)
        want = (want.flip(-1) if flips[i] else want).float()
        torch.testing.assert_close(out[i], (want - mean) / std, rtol=1e-5, atol=1e-5)


def test_preprocess_state_round_trip():
    imgs = np.random.default_rng(0).integers(0, 256, (3, 36, 36, 3), dtype=np.uint8)
    pre = Preprocess(pipeline("small"), compute_stats(imgs))
    back = Preprocess.from_state(pre.to_state())
    assert back.pipeline == pre.pipeline
    x = torch.from_numpy(imgs)
    torch.testing.assert_close(back.centre_crop(x), pre.centre_crop(x))


def test_epoch_order_is_reproducible_and_sharded():
    a = epoch_order(10, shuffle=True, seed=3, epoch=1)
    assert sorted(a) == list(range(10))
    np.testing.assert_array_equal(a, epoch_order(10, shuffle=True, seed=3, epoch=1))
    assert not np.array_equal(a, epoch_order(10, shuffle=True, seed=3, epoch=2))
    shards = [epoch_order(10, shuffle=True, seed=3, epoch=1, rank=r, world_size=3) for r in range(3)]
    assert sum(len(s) for s in shards) == 12 and set(np.concatenate(shards)) == set(range(10))


def test_iter_batches_resumes_at_a_batch_and_keeps_order():
    imgs = np.arange(10, dtype=np.uint8).reshape(10, 1, 1, 1).repeat(2, 1).repeat(2, 2)
    s = ImageSet(labels=np.arange(10), classes=[str(i) for i in range(10)], images=imgs)
    full = [y.tolist() for _, y in iter_batches(s, 3, size=2, shuffle=True, seed=0)]
    assert [y.tolist() for _, y in iter_batches(s, 3, size=2, shuffle=True, seed=0, start=2)] == full[2:]
    for x, y in iter_batches(s, 3, size=2, shuffle=True, seed=0):
        assert x[:, 0, 0, 0].tolist() == y.tolist()  # images stay with their labels
    lazy = ImageSet(labels=np.arange(10), classes=s.classes, loader=lambda i: np.full((5, 7, 3), i, np.uint8))
    got = [(x.shape, y.tolist()) for x, y in iter_batches(lazy, 4, size=4)]
    assert got[0][0] == (4, 4, 4, 3) and [l for _, y in got for l in y] == list(range(10))


def test_iter_batches_prefetched_in_a_thread_are_the_same_batches():
    imgs = np.arange(50, dtype=np.uint8).reshape(50, 1, 1, 1).repeat(3, 1).repeat(3, 2)
    s = ImageSet(labels=np.arange(50), classes=[str(i) for i in range(50)], images=imgs)
    plain = [(x.clone(), y) for x, y in iter_batches(s, 4, size=3, shuffle=True, seed=1, prefetch=0)]
    for depth in (1, 2, 20):
        ahead = list(iter_batches(s, 4, size=3, shuffle=True, seed=1, prefetch=depth))
        assert len(ahead) == len(plain) == 13
        for (x0, y0), (x1, y1) in zip(plain, ahead):
            assert torch.equal(x0, x1) and torch.equal(y0, y1)
    batches = iter_batches(s, 4, size=3, shuffle=True, seed=1, prefetch=2)
    first = next(batches)
    batches.close()  # stopping early leaves no thread behind
    assert torch.equal(first[1], plain[0][1])
    import threading

    assert not any(t.name.startswith("alexnet-batches") and t.is_alive() for t in threading.enumerate())


def test_a_checkpoints_preprocessing_absent_or_malformed_is_one_line_naming_the_file():
    from alexnet.errors import AlexNetError

    state = Preprocess(pipeline("small", normalize="unit", lighting=0.0), None).to_state()
    assert Preprocess.from_checkpoint(state, "c.pt", "unused").pipeline == Preprocess.from_state(state).pipeline
    with pytest.raises(AlexNetError, match=r"^c.pt: checkpoint has no preprocessing; it cannot be evaluated without it$"):
        Preprocess.from_checkpoint({}, "c.pt", "it cannot be evaluated without it")
    with pytest.raises(AlexNetError, match=r"^c.pt: unusable preprocessing in checkpoint \((KeyError|TypeError): "):
        Preprocess.from_checkpoint({"pipeline": {"no_such_field": 1}}, "c.pt", "unused")
