"""The three numbers d2l's ``train_ch6`` prints, from a run's history and final evaluation.

d2l/torch.py (d2l-ai/d2l-zh v2.0.0 and d2l-ai/d2l-en v0.17.6, lines 475–513) prints, after the
last epoch, ``loss {train_l:.3f}, train acc {train_acc:.3f}, test acc {test_acc:.3f}``: the train
loss and accuracy are running means over the last epoch's batches, in train mode while the weights
still change (its ``Accumulator`` of ``l * X.shape[0]`` and ``accuracy``), the test accuracy is
``evaluate_accuracy_gpu`` in eval mode after it. Our epoch meters are the same running means
(``training.loop``'s ``Meters``, fed by every step's own logits), so the numbers compare row for row.
"""

from __future__ import annotations

from typing import Any

# What d2l's build printed after train_ch6's 10 epochs (loss, train acc, test acc): the executed
# notebooks of d2l-ai/d2l-zh-pytorch-colab, commit 10243a27 ("Version 2.0.0", 18 Aug 2023), e.g.
# chapter_convolutional-modern/alexnet.ipynb; the same build's use-gpu.ipynb shows Tesla V100-SXM2 16GB.
# BN-LeNet is batch-norm.ipynb's from-scratch net (its concise nn.BatchNorm2d form printed 0.267, 0.902, 0.708).
PUBLISHED = {
    "d2l_lenet": (0.469, 0.823, 0.779),  # chapter_convolutional-neural-networks/lenet.ipynb
    "d2l": (0.331, 0.878, 0.883),
    "d2l_vgg": (0.178, 0.935, 0.920),
    "d2l_nin": (0.563, 0.786, 0.790),
    "d2l_googlenet": (0.262, 0.900, 0.886),
    "d2l_bn_lenet": (0.273, 0.899, 0.807),
    "d2l_resnet": (0.012, 0.997, 0.893),
    "d2l_densenet": (0.140, 0.948, 0.885),
}


def train_ch6_numbers(history: list[dict[str, Any]], final: dict[str, Any]) -> dict[str, float] | None:
    """``{"loss", "train_acc", "test_acc"}`` as train_ch6 computes them, or None without a test split."""
    test = final.get("test_1view")
    if not history or test is None:
        return None
    last = history[-1]
    return {"loss": last["train_loss"], "train_acc": 1.0 - last["train_top1_error"], "test_acc": test["top1_accuracy"]}


def train_ch6_line(numbers: dict[str, float]) -> str:
    """The numbers in train_ch6's own format."""
    return f"loss {numbers['loss']:.3f}, train acc {numbers['train_acc']:.3f}, test acc {numbers['test_acc']:.3f}"
