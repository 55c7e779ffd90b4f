"""Data: sources → ImageSets → transforms → loader. See :mod:`alexnet.data.imageset` for the contract."""

from alexnet.data.images import BadImage, decode_image
from alexnet.data.imageset import ImageSet
from alexnet.data.loader import epoch_order, iter_batches, num_batches
from alexnet.data.sources import Dataset, open_dataset
from alexnet.data.stats import Stats, StatsAccumulator, compute_stats
from alexnet.data.transforms import PIPELINES, Pipeline, Preprocess, downsample, pipeline

__all__ = [
    "BadImage", "Dataset", "ImageSet", "PIPELINES", "Pipeline", "Preprocess", "Stats", "StatsAccumulator",
    "compute_stats", "decode_image", "downsample", "epoch_order", "iter_batches", "num_batches", "open_dataset",
    "pipeline",
]
