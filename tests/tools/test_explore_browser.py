"""alexnet explore in real browsers: Debian's chromium driven by Playwright, and Debian's Firefox ESR
driven over WebDriver BiDi (tests/bidi.py), against `alexnet explore`.

The test starts the command as a user would (a subprocess on a free loopback port, over a digits
checkpoint it builds in seconds), uploads a digit PNG, waits for the top-5, opens every view and
asserts what the page shows; screenshots go to its temporary folder, or to $ALEXNET_SCREENSHOTS
(``ALEXNET_SCREENSHOTS=docs/figures`` makes docs/EXPLORE.md's figures). ``ALEXNET_EXPLORE_RUN=RUN``
uses a trained run folder (its best.pt) instead of the untrained checkpoint, for those figures.
Each test skips, saying why, when its browser (/usr/bin/chromium, /usr/bin/firefox-esr) or its
client (playwright, websockets) is missing; CI installs both browsers in .ci/run, so there they run.
The tests are given the system browsers; nothing downloads one.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from alexnet import checkpoint, models
from alexnet.data import Preprocess, compute_stats, open_dataset, pipeline
from alexnet.models.cudaconvnet_layers import ceil_output_size
from alexnet.training.run_folder import RunFolder

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run"]
SRC = Path(__file__).resolve().parents[2] / "src"

FIREFOX = Path("/usr/bin/firefox-esr")
pytest.importorskip("starlette", reason="the [explore] extra is not installed")


def needs(browser: Path, package: str) -> None:
    if not browser.exists():
        pytest.skip(f"no {browser}: install Debian's {browser.name} (apt-get install {browser.name}) to run this browser test")
    pytest.importorskip(package, reason=f"the {package.split('.')[0]} package is not installed (pip install -e .[test])")


def build_run(folder: Path) -> tuple[Path, Path]:
    """An untrained digits checkpoint and a run folder beside it (config and two epochs of metrics)."""
    torch.manual_seed(0)
    train = open_dataset("digits").splits["train"]
    preprocess = Preprocess(pipeline("small", resize=28, crop=24, channels=1, flip=False, lighting=0.0), compute_stats(train.images))
    options = {"in_channels": 1, "width": 0.25, "input_size": 24}
    model = models.create("alexnet_small", num_classes=10, **options)
    run = RunFolder(folder / "run")
    run.start()
    run.write_config({"preset": "digits", "data": {"spec": "digits"}})
    for epoch, loss in ((1, 2.25), (2, 2.1)):
        run.append_metrics({"epoch": epoch, "train_loss": loss, "val_loss": loss + 0.05, "val_top1_error": loss / 3})
    ck = checkpoint.from_model(model, [str(d) for d in range(10)], model_options=options, preprocess=preprocess.to_state(),
                               provenance=checkpoint.collect_provenance("digits", {"data": {"spec": "digits"}}))
    checkpoint.save(run.best, ck)
    return run.best, run.root


@pytest.fixture
def server(tmp_path):
    trained = os.environ.get("ALEXNET_EXPLORE_RUN")
    if trained:
        ckpt, run = Path(trained) / "checkpoints" / "best.pt", Path(trained)
    else:
        ckpt, run = build_run(tmp_path)
    env = dict(os.environ, PYTHONPATH=str(SRC), OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-m", "alexnet", "explore", "--checkpoint", str(ckpt), "--run", str(run),
                             "--port", "0", "--device", "cpu", "--bank-limit", "400", "--eval-limit", "200"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    found = None
    try:
        said = []
        for line in proc.stdout:  # "loading …", then the URL once the model and the bank are ready
            said.append(line)
            found = re.search(r"http://127\.0\.0\.1:\d+/", line)
            if found:
                break
        assert found, f"alexnet explore did not print its URL: {''.join(said)!r}"
        yield found.group(0)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def wait_for_images(page, selector: str) -> None:
    page.wait_for_function(f"[...document.querySelectorAll({selector!r})].every(i => i.complete && i.naturalWidth > 0)")


def digit_png(path: Path) -> Path:
    image = np.zeros((64, 64), np.uint8)
    image[10:54, 28:36] = 255  # a "1"
    Image.fromarray(image).save(path)
    return path


def test_explore_in_chromium(server, tmp_path):
    needs(CHROMIUM, "playwright.sync_api")
    from playwright import sync_api

    shots = Path(os.environ.get("ALEXNET_SCREENSHOTS") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch_persistent_context(str(tmp_path / "profile"), executable_path=str(CHROMIUM), args=FLAGS,
                                                       headless=True, viewport={"width": 1280, "height": 900})
        page = browser.new_page()
        requests: list[str] = []
        page.on("request", lambda r: requests.append(r.url))
        page.goto(server)
        page.wait_for_selector("#model:has-text('alexnet_small')")

        page.set_input_files("#file", str(digit_png(tmp_path / "one.png")))
        page.wait_for_selector("#top5 li.bar >> nth=4")
        bars = page.locator("#top5 li.bar")
        assert bars.count() == 5
        percents = [float(t.split()[0]) for t in page.locator("#top5 .pct").all_inner_texts()]
        assert percents == sorted(percents, reverse=True) and 0 < sum(percents) <= 100.5
        assert page.locator("#crop").get_attribute("src").startswith("data:image/png")
        assert "24×24 crop" in page.inner_text("#crop-caption")
        page.check("#tenviews")
        page.wait_for_selector("#ten figure >> nth=9")
        assert page.locator("#ten figcaption").nth(5).inner_text() == "reflected top-left"
        page.screenshot(path=str(shots / "explore-classify.png"), full_page=True)

        page.click("#tabs button[data-view=layers]")
        page.wait_for_selector(".layer h3:has-text('conv1')")
        text = page.inner_text("#layers")
        assert re.search(r"conv1\s+Conv2d · 24×24×\d+", text) and "tower 1" in text and "fc8" in text
        assert page.locator(".layer").first.locator("img.grid").count() == 2  # two towers side by side
        page.screenshot(path=str(shots / "explore-layers.png"))
        page.locator(".layer img.grid").first.click(position={"x": 2, "y": 2})
        page.wait_for_selector("#zoom[open]")
        assert "map 0" in page.inner_text("#zoom-caption")
        page.click("#zoom-close")
        # CNN Explainer's click: a unit of conv1's second tower, its arithmetic from the real forward pass
        page.locator(".layer").first.locator("img.grid").nth(1).click(position={"x": 2, "y": 2})
        page.wait_for_selector("#zoom[open]")
        page.locator("#zoom-canvas").click(position={"x": 3, "y": 2})
        page.wait_for_selector("#arithmetic p:has-text('conv1 [')")
        text = page.inner_text("#arithmetic")
        assert re.search(r"conv1 \[\d+, \d+, \d+\] = ", text) and "tower 2's own maps" not in text  # conv1 reads the image
        assert "kernel" in text and "+ bias" in text
        page.select_option("#ar-layer", "norm1")
        page.fill("#ar-unit", "9,3,4")
        page.click("#ar-go")
        page.wait_for_selector("#arithmetic p:has-text('LRN over maps')")
        assert "(k + α'·Σa²)^β" in page.inner_text("#arithmetic")
        page.select_option("#ar-layer", "softmax")
        page.click("#ar-go")
        page.wait_for_selector("#arithmetic td:has-text('p = ')")
        assert "the most probable is" in page.inner_text("#arithmetic")
        page.select_option("#ar-layer", "conv2")
        page.fill("#ar-unit", "20,4,5")
        page.click("#ar-go")
        page.wait_for_selector("#arithmetic p:has-text(\"'s own maps only\")")
        page.screenshot(path=str(shots / "explore-arithmetic.png"), full_page=True)
        page.select_option("#ar-layer", "conv2")
        page.fill("#ar-unit", "999,0,0")
        page.click("#ar-go")
        page.wait_for_selector("#message:has-text('outside conv2')")

        page.click("#tabs button[data-view=why]")
        page.wait_for_selector("#gradcam[src^='data:image/png']")
        assert "Grad-CAM" in page.inner_text("#gradcam-caption") and "relu5" in page.inner_text("#gradcam-caption")
        assert "occlusion" in page.inner_text("#occlusion-caption")
        page.select_option("#why-class", "7")
        page.wait_for_selector("#gradcam-caption:has-text('“7”')")
        page.screenshot(path=str(shots / "explore-why.png"))

        page.click("#tabs button[data-view=architecture]")
        page.wait_for_function("document.querySelector('#architecture').naturalWidth > 300")
        page.screenshot(path=str(shots / "explore-architecture.png"))

        page.click("#tabs button[data-view=geometry]")
        page.wait_for_selector("#geo-formula:has-text('54.25')")  # the paper's 224: (224 − 11)/4 + 1
        assert "= 54" in page.inner_text("#geo-formula")
        for label, shown in (("conv1 at 227 (Caffe's bvlc_alexnet)", "/ 4⌋ + 1 = 55"),  # a whole number: no "unrounded"
                             ("conv1 at 224 with cuda-convnet's ceil rule (alexnet_cudaconvnet)", "/ 4⌉ = 55 (unrounded: 54.25)")):
            page.select_option("#geo-preset", label)
            assert page.inner_text("#geo-formula").endswith(shown)
        box = page.locator("#geo-out").bounding_box()
        page.mouse.move(box["x"] + box["width"] - 2, box["y"] + 2)  # the last column of the first row
        assert page.inner_text("#geo-cell") == "output (0, 54) reads input rows 0–10, columns 216–226 (partly padding): 121 cells"
        page.screenshot(path=str(shots / "explore-geometry.png"))
        rng = np.random.default_rng(0)
        cases = []
        while len(cases) < 300:
            n, k, st, p, d = (int(v) for v in (rng.integers(1, 80), rng.integers(1, 12), rng.integers(1, 6), rng.integers(0, 6), rng.integers(1, 4)))
            if n + 2 * p >= d * (k - 1) + 1:
                cases.append([n, k, st, p, d])
        floor = page.evaluate("cases => cases.map(c => outputSize(...c, 'floor').out)", cases)
        ceil = page.evaluate("cases => cases.map(c => outputSize(c[0], c[1], c[2], c[3], 1, 'ceil').out)", cases)
        meta = [F.conv2d(torch.empty(1, 1, n, n, device="meta"), torch.empty(1, 1, k, k, device="meta"), stride=st, padding=p,
                         dilation=d).shape[-1] for n, k, st, p, d in cases]
        assert floor == meta  # the page's formula is PyTorch's
        assert ceil == [ceil_output_size(n, k, st, p) for n, k, st, p, _ in cases]  # cuda-convnet's rule, as the models build it

        # what a unit sees: the first map layer's channel 0 on opening, then relu2's channel 5, a class, a bad channel
        page.click("#tabs button[data-view=units]")
        page.wait_for_selector("#unit-vis-caption:has-text('conv1 channel 0 optimised from noise')")
        page.select_option("#unit-layer", "relu2")
        page.fill("#unit-channel", "5")
        page.click("#unit-go")
        page.wait_for_selector("#unit-vis-caption:has-text('relu2 channel 5 optimised from noise')")
        wait_for_images(page, "#unit-top img, #unit-vis")
        assert page.locator("#unit-top figure").count() == 9
        values = [float(c.rsplit("·", 1)[1]) for c in page.locator("#unit-top figcaption").all_inner_texts()]
        assert values == sorted(values, reverse=True)
        caption = page.inner_text("#unit-caption")
        assert "relu2 channel 5: the 9 test images (of the first 200" in caption and "15×15 px receptive field" in caption
        assert re.search(r"mean activation over the map -?[\d.e-]+ → -?[\d.e-]+( \(× [\d.]+\))?, 96 steps", page.inner_text("#unit-vis-caption"))
        page.screenshot(path=str(shots / "explore-units.png"), full_page=True)
        page.select_option("#unit-layer", "")
        page.select_option("#unit-class", "7")
        page.click("#unit-go")
        page.wait_for_selector("#unit-vis-caption:has-text('class 7 (7) optimised from noise: its logit')")
        assert "a class sees the whole crop" in page.inner_text("#unit-caption")
        page.select_option("#unit-layer", "conv2")
        page.fill("#unit-channel", "999")
        page.click("#unit-go")
        page.wait_for_selector("#message:has-text(\"channel 999 is outside conv2's 0–\")")
        page.locator("#unit-top img").first.click()  # a patch's image becomes the current one
        page.wait_for_selector("#current-caption:has-text('test ')")

        page.click("#tabs button[data-view=filters]")
        page.wait_for_selector("#filters figure >> nth=1")
        assert "tower 2" in page.inner_text("#filters")
        page.screenshot(path=str(shots / "explore-filters.png"))

        page.select_option("#split", "test")
        page.fill("#index", "5")
        page.click("#pick")
        page.click("#tabs button[data-view=neighbours]")
        page.wait_for_selector("#neighbours figure >> nth=7")
        assert "training images" in page.inner_text("#bank")
        wait_for_images(page, "#neighbours img")
        page.screenshot(path=str(shots / "explore-neighbours.png"))

        page.click("#tabs button[data-view=run]")
        page.wait_for_selector("#confusion td")
        assert page.locator("#curves").get_attribute("src").startswith("data:image/png")
        page.locator("#confusion td.diag").first.click()
        page.wait_for_selector("#cell p:has-text('true 0')")
        wait_for_images(page, "#cell img")
        page.screenshot(path=str(shots / "explore-run.png"), full_page=True)

        # a bad upload: a message in the page, the page still works
        (tmp_path / "notes.png").write_text("not an image")
        page.click("#tabs button[data-view=classify]")
        page.set_input_files("#file", str(tmp_path / "notes.png"))
        page.wait_for_selector("#message:has-text('not an image')")
        assert page.locator("#top5 li.bar").count() == 5
        browser.close()
    assert all(u.startswith(server) or u.startswith(("data:", "blob:")) for u in requests), \
        [u for u in requests if not u.startswith(server)]
    for name in ("classify", "layers", "arithmetic", "why", "architecture", "geometry", "filters", "neighbours", "run"):
        assert (shots / f"explore-{name}.png").stat().st_size > 1000
    assert (shots / "explore-units.png").stat().st_size > 1000


def test_explore_in_firefox(server, tmp_path):
    """The same visit in Firefox ESR: upload, top-5, ten views, every tab, a confusion cell, a bad
    upload; only the server's own URLs requested."""
    needs(FIREFOX, "websockets")
    from bidi import Firefox

    page = Firefox(str(FIREFOX), tmp_path / "firefox-profile")
    try:
        page.goto(server)
        page.wait("document.querySelector('#model').innerText.includes('alexnet_small')")
        page.set_files("#file", digit_png(tmp_path / "one.png"))
        page.wait("document.querySelectorAll('#top5 li.bar').length === 5")
        percents = [float(t.split()[0]) for t in page.js("[...document.querySelectorAll('#top5 .pct')].map(e => e.innerText)")]
        assert percents == sorted(percents, reverse=True) and 0 < sum(percents) <= 100.5
        assert page.js("document.querySelector('#crop').src").startswith("data:image/png")
        page.click("#tenviews")
        page.wait("document.querySelectorAll('#ten figure').length === 10")
        assert page.js("document.querySelectorAll('#ten figcaption')[5].innerText") == "reflected top-left"
        page.screenshot(tmp_path / "firefox-classify.png")

        page.click("#tabs button[data-view=layers]")
        page.wait("[...document.querySelectorAll('.layer h3')].some(h => h.innerText.includes('conv1'))")
        assert "tower 1" in page.text("#layers") and "fc8" in page.text("#layers")
        page.click("#tabs button[data-view=why]")
        page.wait("document.querySelector('#gradcam').src.startsWith('data:image/png')")
        page.js("(s => { s.value = '7'; s.dispatchEvent(new Event('change')); })(document.querySelector('#why-class'))")
        page.wait("document.querySelector('#gradcam-caption').innerText.includes('“7”')")
        page.click("#tabs button[data-view=arithmetic]")
        page.wait("document.querySelector('#ar-layer').options.length > 10")
        page.js("document.querySelector('#ar-layer').value = 'conv2'; document.querySelector('#ar-unit').value = '20,4,5'")
        page.click("#ar-go")
        page.wait("document.querySelector('#arithmetic').innerText.includes(\"'s own maps only\")")
        page.click("#tabs button[data-view=architecture]")
        page.wait("document.querySelector('#architecture').naturalWidth > 300")
        page.click("#tabs button[data-view=geometry]")
        page.wait("document.querySelector('#geo-formula').innerText.includes('54.25')")
        page.click("#tabs button[data-view=units]")
        page.wait("document.querySelector('#unit-vis-caption').innerText.includes('conv1 channel 0 optimised from noise')")
        page.js("(s => { s.value = 'pool2'; s.dispatchEvent(new Event('change')); })(document.querySelector('#unit-layer'))")
        page.js("document.querySelector('#unit-channel').value = '3'")
        page.click("#unit-go")
        page.wait("document.querySelector('#unit-vis-caption').innerText.includes('pool2 channel 3 optimised from noise')")
        page.wait("[...document.querySelectorAll('#unit-top img')].every(i => i.complete && i.naturalWidth > 0)")
        assert page.js("document.querySelectorAll('#unit-top figure').length") == 9
        assert "19×19 px receptive field" in page.text("#unit-caption")
        page.screenshot(tmp_path / "firefox-units.png")
        page.js("document.querySelector('#unit-channel').value = '999'")
        page.click("#unit-go")
        page.wait("document.querySelector('#message').innerText.includes('channel 999 is outside pool2')")
        page.click("#tabs button[data-view=filters]")
        page.wait("document.querySelectorAll('#filters figure').length >= 2")

        page.js("document.querySelector('#split').value = 'test'; document.querySelector('#index').value = '5'")
        page.click("#pick")
        page.click("#tabs button[data-view=neighbours]")
        page.wait("document.querySelectorAll('#neighbours figure').length >= 8")
        page.wait("[...document.querySelectorAll('#neighbours img')].every(i => i.complete && i.naturalWidth > 0)")
        page.click("#tabs button[data-view=run]")
        page.wait("document.querySelector('#confusion td')")
        page.click("#confusion td.diag")
        page.wait("document.querySelector('#cell p') && document.querySelector('#cell p').innerText.includes('true 0')")
        page.screenshot(tmp_path / "firefox-run.png")

        (tmp_path / "notes.png").write_text("not an image")
        page.click("#tabs button[data-view=classify]")
        page.set_files("#file", tmp_path / "notes.png")
        page.wait("document.querySelector('#message').innerText.includes('not an image')")
        assert page.js("document.querySelectorAll('#top5 li.bar').length") == 5
    finally:
        page.close()
    assert page.requests and all(u.startswith(server) or u.startswith(("data:", "blob:")) for u in page.requests), \
        [u for u in page.requests if not u.startswith(server)]
    for name in ("classify", "units", "run"):
        assert (tmp_path / f"firefox-{name}.png").stat().st_size > 1000


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_train_explore_follows_the_run_live_in_chromium(tmp_path):
    """`alexnet train --explore`: the page comes up after the first epoch and, without a reload, sees the
    run's epoch count advance (ConvNetJS's live page)."""
    needs(CHROMIUM, "playwright.sync_api")
    import signal

    from playwright import sync_api

    port = free_port()
    env = dict(os.environ, PYTHONPATH=str(SRC), OMP_NUM_THREADS="1")
    train = subprocess.Popen([sys.executable, "-m", "alexnet", "train", "--preset", "digits", "--epochs", "300", "--device", "cpu",
                              "--out", str(tmp_path / "run"), "--quiet", "--set", "model.options.width=0.25",
                              "--explore", "--port", str(port)],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, start_new_session=True)
    try:
        said = []
        for line in train.stdout:  # the explorer prints its URL once the first checkpoint is there
            said.append(line)
            if f"http://127.0.0.1:{port}/" in line:
                break
        assert said and f"http://127.0.0.1:{port}/" in said[-1], "".join(said)
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch_persistent_context(str(tmp_path / "profile"), executable_path=str(CHROMIUM), args=FLAGS,
                                                           headless=True, viewport={"width": 1280, "height": 900})
            page = browser.new_page()
            page.goto(f"http://127.0.0.1:{port}/")
            page.click("#tabs button[data-view=run]")
            page.wait_for_selector("#run-live:has-text('training epoch')")
            first = int(page.locator("#run-live").get_attribute("data-epochs"))
            page.wait_for_function(f"+document.querySelector('#run-live').dataset.epochs > {first}", timeout=90_000)
            assert "of 300" in page.inner_text("#run-live") and page.locator("#curves").get_attribute("src").startswith("data:")
            # the view in front follows the run: conv1's kernels redrawn at the next epoch, without a click
            page.click("#tabs button[data-view=filters]")
            page.wait_for_selector("#filters img")
            kernels = page.locator("#filters img").first.get_attribute("src")
            page.wait_for_function(f"document.querySelector('#filters img') && "
                                   f"document.querySelector('#filters img').src !== {kernels!r}", timeout=90_000)
            browser.close()
    finally:
        os.killpg(train.pid, signal.SIGTERM)
        train.wait(timeout=30)
