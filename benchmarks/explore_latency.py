"""How long `alexnet explore` takes to answer each view for one image, on the paper's 1000-class net.

    PYTHONPATH=src python3 benchmarks/explore_latency.py [--model alexnet] [--device cpu] [--repeats 3]

It saves an untrained checkpoint of ``--model`` with the paper's pipeline (statistics of a few
random images: the weights and statistics do not change the time), starts an explorer
``Session`` on it (no data set), uploads a 500×375 JPEG of noise and times each request the page
makes (``time.perf_counter``, the median of ``--repeats``; Why once), then the model's forward pass
alone for comparison. The figures in docs/EXPLORE.md ("Speed") were made with it.
"""

from __future__ import annotations

import argparse
import io
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from alexnet import checkpoint, models
from alexnet.data import Preprocess, compute_stats, pipeline
from alexnet.tools.bench.timing import measure
from alexnet.tools.explore.session import ExploreConfig, ImageRef, Session


def timed(fn, repeats: int) -> float:
    """Median seconds of ``repeats`` calls on the CPU, none untimed (the bench's ``measure``)."""
    return measure(fn, torch.device("cpu"), warmup=0, reps=repeats).median


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="alexnet")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    model = models.create(args.model)
    images = np.random.default_rng(0).integers(0, 256, (4, 256, 256, 3), dtype=np.uint8)
    ck = checkpoint.from_model(model, [f"class {i}" for i in range(model.num_classes)],
                               preprocess=Preprocess(pipeline("paper"), compute_stats(images)).to_state())
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.pt"
        checkpoint.save(path, ck)
        session = Session(ExploreConfig(path, device=args.device))
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (375, 500, 3), dtype=np.uint8)).save(buffer, "JPEG")
    start = time.perf_counter()
    ref = ImageRef(token=session.add_upload(buffer.getvalue(), "noise.jpg"))
    rows = [("upload (decode + resize a 500×375 JPEG)", time.perf_counter() - start, 0)]
    for name, fn, repeats in [
        ("classify, centre crop", lambda: session.classify(ref, 1), args.repeats),
        ("classify, ten views", lambda: session.classify(ref, 10), args.repeats),
        ("layers", lambda: session.layers(ref), args.repeats),
        ("filters", session.filters, args.repeats),
        ("why (Grad-CAM + occlusion)", lambda: session.why(ref, None, None, None), 1),
    ]:
        rows.append((name, timed(fn, repeats), len(json.dumps(fn())) if repeats > 1 else 0))
    x = torch.zeros(1, 3, model.input_size, model.input_size, device=args.device)
    with torch.no_grad():
        model.to(args.device).eval()(x)
        rows.append(("the forward pass alone", timed(lambda: model(x), args.repeats), 0))
    print(f"{args.model} on {args.device}, {torch.get_num_threads()} threads")
    for name, seconds, size in rows:
        print(f"  {name:42s} {seconds:7.3f} s" + (f"   answer {size / 1024:.0f} KiB" if size else ""))


if __name__ == "__main__":
    main()
