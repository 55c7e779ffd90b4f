"""ImageNet's 1000 class names, offline.

torchvision ships them with its weights' metadata (``AlexNet_Weights.IMAGENET1K_V1.meta
["categories"]``), in the order of the sorted WordNet ids (n01440764 "tench" … n15075141 "toilet
tissue"), which is also the synset order of Caffe's ``synset_words.txt``, so imported torchvision
and Caffe weights share one list: output i of fc8 is ``imagenet_classes()[i]``.
"""

from __future__ import annotations

from functools import lru_cache

NUM_CLASSES = 1000


@lru_cache(maxsize=1)
def _categories() -> tuple[str, ...]:
    from torchvision.models import AlexNet_Weights

    names = tuple(AlexNet_Weights.IMAGENET1K_V1.meta["categories"])
    if len(names) != NUM_CLASSES:
        raise RuntimeError(f"torchvision lists {len(names)} ImageNet classes, expected {NUM_CLASSES}")
    return names


def imagenet_classes() -> list[str]:
    """The 1000 ILSVRC-2012 class names in fc8's output order ("tench", "goldfish", …)."""
    return list(_categories())
