"""Data: sources → ImageSets → transforms → loader. See :mod:`alexnet.data.imageset` for the contract."""

from .imageset import ImageSet
from .loader import epoch_order, iter_batches, num_batches
from .stats import Stats, StatsAccumulator, compute_stats
from .transforms import PIPELINES, Pipeline, Preprocess, downsample, pipeline

__all__ = [
    "ImageSet", "PIPELINES", "Pipeline", "Preprocess", "Stats", "StatsAccumulator",
    "compute_stats", "downsample", "epoch_order", "iter_batches", "num_batches", "pipeline",
]
