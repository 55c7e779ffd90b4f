"""Data: sources → ImageSets → transforms → loader. See :mod:`alexnet.data.imageset` for the contract."""

from .images import BadImage, decode_image
from .imageset import ImageSet
from .loader import epoch_order, iter_batches, num_batches
from .sources import Dataset, open_dataset
from .stats import Stats, StatsAccumulator, compute_stats
from .transforms import PIPELINES, Pipeline, Preprocess, downsample, pipeline

__all__ = [
    "BadImage", "Dataset", "ImageSet", "PIPELINES", "Pipeline", "Preprocess", "Stats", "StatsAccumulator",
    "compute_stats", "decode_image", "downsample", "epoch_order", "iter_batches", "num_batches", "open_dataset",
    "pipeline",
]
