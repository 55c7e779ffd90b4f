"""The bench's one row: a line of the printed table and an object of the report's ``results``.

Every part (step, infer, data, decode, features) makes its rows as :class:`Row`. A timed row keeps
its :class:`~alexnet.tools.bench.timing.Measurement` (every repetition: the spread is in the report)
and how much one timed call handles, from which its figures follow: images/s is
``images_per_call / median`` and ms is per batch, ``median / batches_per_call``. Its ratio is its
images/s over that of the part's first reference row measuring the same ``what``
(:func:`with_ratios`). A row without a measurement did not run here (``note`` says why) or measures
a size (its figures are in ``settings``).

:meth:`Row.to_dict` writes the JSON keys of the results in benchmarks/results, so old reports read
as new ones: the measured thing is ``kind`` in the infer part, ``what`` in data, decode and serve,
and not written in step and features (one thing each).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

import torch

from alexnet.tools.bench.timing import Measurement, measure_interleaved

WHAT_KEY = {"infer": "kind", "data": "what", "decode": "what", "serve": "what"}  # the JSON key of Row.what, by part


@dataclass(frozen=True)
class Row:
    """One measured path of one part."""

    part: str  # step, infer, data, decode, features, d2l or serve
    label: str  # the line's name: implementation, model, precision, layout
    impl: str  # "reference", "ours", "baseline" or "other"
    what: str  # what is measured (step, latency, throughput, data, end_to_end, decode, size, features, load, overload)
    batch_size: int
    settings: dict = field(default_factory=dict)  # how it ran (model, precision, allocator, storage, …): JSON keys
    timing: Measurement | None = None  # None: not run here, or not a time
    images_per_call: float = 0  # images one timed call handles
    batches_per_call: float = 1  # batches one timed call handles: ms is per batch
    train_gflop: float | None = None  # training GFLOP per image (2 per multiply-accumulate): gives TFLOP/s
    ratio: float | None = None  # images/s over the part's reference's (with_ratios)
    note: str | None = None  # why a row did not run, or what an untimed row says

    @property
    def images_per_s(self) -> float:
        return self.images_per_call / self.timing.median

    @property
    def ms(self) -> float:
        return self.timing.median / self.batches_per_call * 1e3

    @property
    def tflops(self) -> float:
        return self.images_per_s * self.train_gflop / 1e3

    def to_dict(self, matmul_peak_tflops: float | None = None) -> dict:
        """The JSON object; ``of_matmul_peak`` is TFLOP/s over the machine's matrix-product rate when given."""
        out = {"part": self.part, "label": self.label, "impl": self.impl, "batch_size": self.batch_size}
        if self.part in WHAT_KEY:
            out[WHAT_KEY[self.part]] = self.what
        if self.note is not None:
            out["note"] = self.note
        out.update(self.settings)
        if self.timing is None:
            return out
        out.update(self.timing.to_dict(), images_per_s=self.images_per_s, ms=self.ms)
        if self.ratio is not None:
            out["ratio"] = self.ratio
        if self.train_gflop is not None:
            out.update(train_gflop_per_image=self.train_gflop, tflops=self.tflops)
            if matmul_peak_tflops:
                out["of_matmul_peak"] = self.tflops / matmul_peak_tflops
        return out


def measure_rows(paths: list[tuple[Row, Callable[[], object]]], device: torch.device, *, warmup: int,
                 reps: int) -> list[Row]:
    """Time each (row, call) interleaved (:func:`~alexnet.tools.bench.timing.measure_interleaved`); the rows with their timing."""
    timings = measure_interleaved([call for _, call in paths], device, warmup=warmup, reps=reps)
    return [replace(row, timing=m) for (row, _), m in zip(paths, timings)]


def with_ratios(rows: list[Row]) -> list[Row]:
    """Each timed row with its images/s over that of the first timed reference row of its ``what``."""
    reference: dict[str, float] = {}
    for r in rows:
        if r.impl == "reference" and r.timing is not None:
            reference.setdefault(r.what, r.images_per_s)
    return [replace(r, ratio=r.images_per_s / reference[r.what]) if r.timing is not None and r.what in reference else r
            for r in rows]
