"""Arrays → PNG for the page: images, grids of feature maps, heat maps laid over the crop.

Everything the page shows is a PNG made here and sent as a ``data:`` URI inside the JSON answer
(one request per view, nothing written to disk). Maps are scaled to 0–255 per layer, not per map,
so a map that barely fires looks dark beside one that fires strongly (CNN Explainer's convention);
the page enlarges them with nearest-neighbour scaling, so a 6×6 map shows its 36 units.
"""

from __future__ import annotations

import base64
import io
import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

GAP = 1  # pixels between maps in a grid (white)


def png(image: np.ndarray) -> bytes:
    """uint8 [H, W], [H, W, 1] or [H, W, 3] → PNG bytes."""
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[..., 0]
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(buffer, format="PNG")
    return buffer.getvalue()


def png_uri(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def data_uri(image: np.ndarray) -> str:
    return png_uri(png(image))


def upscale(image: np.ndarray, at_least: int) -> np.ndarray:
    """Nearest-neighbour enlargement by a whole factor so the shorter side is at least ``at_least`` pixels."""
    factor = max(1, math.ceil(at_least / min(image.shape[:2])))
    return image.repeat(factor, axis=0).repeat(factor, axis=1) if factor > 1 else image


def thumbnail(image: np.ndarray, side: int) -> np.ndarray:
    """An image with its longer side brought to about ``side``: enlarged by whole factors (pixels stay
    visible) when smaller, reduced with Pillow's antialiasing when larger (the ten views of a 227 crop)."""
    if max(image.shape[:2]) <= side:
        return upscale(image, side)
    grey = image.ndim == 3 and image.shape[2] == 1
    pil = Image.fromarray(image[..., 0] if grey else image)
    pil.thumbnail((side, side), Image.LANCZOS)
    return np.asarray(pil)


def to_uint8(values: np.ndarray, lo: float, hi: float) -> np.ndarray:
    scaled = (values.astype(np.float32) - lo) / max(hi - lo, 1e-12)
    return (np.clip(scaled, 0.0, 1.0) * 255.0).round().astype(np.uint8)


@dataclass
class Grid:
    """A layer's maps tiled in ``columns``: map i sits at row i // columns, column i % columns, each
    cell ``height``×``width`` pixels with ``GAP`` between cells (what the page needs to enlarge one)."""

    image: np.ndarray  # uint8 [H, W]
    count: int
    columns: int
    height: int
    width: int


def map_grid(maps: np.ndarray, lo: float, hi: float) -> Grid:
    """float [C, h, w] → one grey grid image, roughly square (more columns than rows for wide sets)."""
    c, h, w = maps.shape
    columns = max(1, math.ceil(math.sqrt(c * h / w)))
    rows = math.ceil(c / columns)
    image = np.full((rows * (h + GAP) - GAP, columns * (w + GAP) - GAP), 255, dtype=np.uint8)
    tiles = to_uint8(maps, lo, hi)
    for i in range(c):
        r, col = divmod(i, columns)
        image[r * (h + GAP): r * (h + GAP) + h, col * (w + GAP): col * (w + GAP) + w] = tiles[i]
    return Grid(image, c, columns, h, w)


def vector_grid(values: np.ndarray, lo: float, hi: float) -> Grid:
    """An FC layer's D units as 1×1 "maps" in a near-square grid (fc7's 4096 → 64×64), without gaps."""
    d = values.shape[0]
    columns = math.ceil(math.sqrt(d))
    rows = math.ceil(d / columns)
    padded = np.full(rows * columns, lo, dtype=np.float32)
    padded[:d] = values
    return Grid(to_uint8(padded.reshape(rows, columns), lo, hi), d, columns, 1, 1)


def heat_overlay(image: np.ndarray, heat: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """The crop (uint8 [h, w, C]) with a heat map (float [h, w], 0–1) blended over it in matplotlib's "jet"."""
    from matplotlib import colormaps  # heavy; only when a heat map is drawn

    rgb = image if image.shape[2] == 3 else image.repeat(3, axis=2)
    colours = colormaps["jet"](np.clip(heat, 0.0, 1.0))[..., :3] * 255.0
    return ((1 - alpha) * rgb.astype(np.float32) + alpha * colours).round().clip(0, 255).astype(np.uint8)
