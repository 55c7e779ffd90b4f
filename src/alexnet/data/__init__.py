"""Data: sources → ImageSets → transforms → loader. See :mod:`alexnet.data.imageset` for the contract."""

from .imageset import ImageSet

__all__ = ["ImageSet"]
