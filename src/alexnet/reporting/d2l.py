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
