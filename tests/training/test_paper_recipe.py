"""The paper's recipe learns (issue 4, reference §4): its model, init and ε drive the loss well below
ln(classes), where reimplementations famously stall.

The `paper` preset as it ships — the two-tower `alexnet` at 227, §5's init (N(0, 0.01), biases 1 in
conv2/4/5 and fc6/7), §4.2's dropout (survivors unscaled, × 0.5 at test), SGD ε = 0.01, momentum
0.9, weight decay 5e-4, batch 128, mean-image input with crops, reflections and PCA lighting —
trained on the embedded digits (10 classes, up-sampled to 256) for a few epochs. The only changes
are the data, the number of epochs and one view at the end (ten views cost time and prove nothing
here). docs/TRAINING.md has the measurements behind the thresholds, and the run with PyTorch's
inverted dropout that stays at ln 10.
"""

import math
import os

import pytest
import torch
from helpers import Records

from alexnet import models
from alexnet.models.layers import PaperDropout
from alexnet.runtime import precision_supported
from alexnet.training.config import resolve
from alexnet.training.loop import RunOptions, train

EPOCHS = 8  # 9 steps each at batch 128: the loss leaves ln 10 at step 35–45 (docs/TRAINING.md)
NATIVE_BF16 = precision_supported(torch.device("cpu"), "bf16")
# Its 72 steps of the 227-px net take 3–4 min on one core in bf16 (AMX, AVX512-BF16) but 14 min in fp32
# on an AVX2 CPU, more than `make test`'s whole budget: there it runs when asked (README, Development).
ASKED = os.environ.get("ALEXNET_SLOW_TESTS") == "1"


@pytest.mark.skipif(not (NATIVE_BF16 or ASKED), reason="the paper recipe's 72 steps take 14 min on one core "
                    "without native bf16 (AVX2): ALEXNET_SLOW_TESTS=1 runs it")
def test_paper_preset_learns_at_small_scale(tmp_path):
    precision = "bf16" if NATIVE_BF16 else "fp32"  # the same recipe, faster
    config = resolve("paper", {"epochs": EPOCHS, "device": "cpu", "precision": precision},
                     ["data.spec='digits'", "eval_views=1", "data.workers=0"])
    # What is kept of the preset: the model, its init and dropout, the optimiser and the batch.
    assert config.model.name == "alexnet" and config.model.options == {}
    assert (config.optim.lr, config.optim.momentum, config.optim.weight_decay, config.batch_size) == (0.01, 0.9, 5e-4, 128)
    model = models.create(config.model.name)
    assert model.config.init == "paper" and isinstance(model.drop7, PaperDropout)

    seen = Records()
    report = train(config, RunOptions(out=tmp_path / "run", progress_bar=False, callbacks=[seen])).report
    records = seen.records

    chance = math.log(10)
    assert records[0]["train_loss"] > 0.9 * chance  # it starts at chance: the test is not passed by the first step
    assert records[-1]["train_loss"] < 0.5 * chance, [round(r["train_loss"], 3) for r in records]
    assert records[-1]["val_top1_error"] < 0.3  # chance is 0.9
    assert report["final"]["test_1view"]["top1_error"] < 0.3
