"""The JPEG encoding of the packed store: variable-length JPEG records and their offsets index.

A raw 256×256 store of ImageNet's 1,281,167 training images is 252 GB (196,608 bytes an image):
more than most machines' page cache, so a GPU that trains at tens of thousands of images/s would
read it from disk. FFCV's answer is to store JPEG and decode in the loader: its
``RGBImageField(write_mode="jpg", jpeg_quality=90)`` (libffcv/ffcv, ``ffcv/fields/rgb_image.py``:
quality 90 by default, encoded by OpenCV), about 15 kB an image at 256 px here (≈ 19 GB for ImageNet). ``alexnet prepare
--encoding jpeg`` does the same in the store's own layout (:mod:`alexnet.data.store`)::

    OUT/SPLIT.jpeg.bin     the JPEG files of the split's images, one after another (each S×S, C channels)
    OUT/SPLIT.index.npy    int64 [N, 2]: byte offset and length of record i in SPLIT.jpeg.bin

Record i is image i of the split (the labels' order). The images are the same S×S down-sampled
images the raw store holds (§2), encoded once by Pillow (libjpeg-turbo) at ``quality`` with its
default 4:2:0 chroma subsampling, grey images as one-channel JPEG.

Decoding: one ``torchvision.io.decode_jpeg(records, device=...)`` call on the batch's list of
records, on any device (:func:`decode_on_device`):

* on the CPU, libjpeg-turbo, its [C, H, W] results (views of [H, W, C] buffers) copied one by one
  into a preallocated uint8 [B, S, S, C] batch (``torch.stack`` of those views is ~50× slower on a
  CPU). Chosen by measurement (``alexnet bench decode``, docs/PERFORMANCE.md): faster per core than
  Pillow (an Image object and a copy out of it per record) and than ``decode_jpeg`` called once
  per record; its pixels equal Pillow's (both libjpeg-turbo, same IDCT). The loader runs it in
  worker processes;
* on a GPU, the same call is nvJPEG's batched decode, then one stack on the GPU. nvJPEG's IDCT may
  differ from libjpeg-turbo's by a grey level here and there. Only the device differs, so the
  tests check the GPU's code path on the CPU.

(torchvision 0.29 deprecates its image decoders in favour of TorchCodec; they still work, and
the device's torchvision 0.26 does not warn. Moving to TorchCodec is a change of this module only.)

Every record is checked before it is decoded: it must lie inside the file and start and end with
the JPEG start- and end-of-image markers, so a file cut short (a copy that stopped, a full disk)
is refused with one line naming the file and the record, never decoded into a half-grey image.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from alexnet.atomic import atomic_path
from alexnet.errors import AlexNetError, one_line

ENCODINGS = ("raw", "jpeg")
DEFAULT_QUALITY = 90  # FFCV's default: 15.0 kB a 256×256 photograph here (alexnet bench decode)
SOI, EOI = b"\xff\xd8", b"\xff\xd9"  # JPEG's start- and end-of-image markers


def records_file(split: str) -> str:
    return f"{split}.jpeg.bin"


def index_file(split: str) -> str:
    return f"{split}.index.npy"


def encode(image: np.ndarray, quality: int) -> bytes:
    """uint8 [H, W, C] (C = 1 or 3) as a JPEG file's bytes (Pillow, 4:2:0 for colour)."""
    pil = Image.fromarray(image[..., 0] if image.shape[2] == 1 else image)
    buffer = io.BytesIO()
    pil.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def decode_pil(data: bytes, channels: int) -> np.ndarray:
    """Pillow's decode of one record as uint8 [H, W, C]: the reference the fast decoders must equal."""
    image = Image.open(io.BytesIO(data), formats=("JPEG",))  # a store's records are JPEG files, nothing else
    image.load()
    array = np.asarray(image.convert("L" if channels == 1 else "RGB"), dtype=np.uint8)
    return np.ascontiguousarray(array[..., None] if channels == 1 else array)


def _mode(channels: int):
    from torchvision.io import ImageReadMode

    return ImageReadMode.GRAY if channels == 1 else ImageReadMode.RGB


class JpegRecords:
    """The records of one split, as the lazy ``loader`` of an :class:`~alexnet.data.imageset.ImageSet`.

    ``records(i)`` decodes record i; :meth:`decode_batch` decodes many into one uint8
    [B, S, S, C] tensor on the CPU or a GPU. Picklable for DataLoader workers: each process maps
    the file itself. ``ids`` are the store's record numbers (for messages) of the rows of ``index``.
    """

    def __init__(self, path: str | os.PathLike, index: np.ndarray, size: int, channels: int,
                 ids: np.ndarray | None = None) -> None:
        self.path, self.index, self.size, self.channels = Path(path), index, size, channels
        self.ids = np.arange(len(index)) if ids is None else ids
        self._map: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.index)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_map": None}

    def __call__(self, i: int) -> np.ndarray:
        return self.decode_batch(np.array([i]))[0].numpy()

    def take(self, rows: np.ndarray) -> JpegRecords:
        """The records at ``rows``, in that order (a subset of the split)."""
        rows = np.asarray(rows, dtype=np.int64)
        return JpegRecords(self.path, self.index[rows], self.size, self.channels, self.ids[rows])

    def read(self, i: int) -> np.ndarray:
        """The bytes of row i, checked to be one whole JPEG file."""
        if self._map is None:
            self._map = np.memmap(self.path, dtype=np.uint8, mode="r")
        offset, length = (int(v) for v in self.index[i])
        data = self._map[offset : offset + length]
        if len(data) != length or bytes(data[:2]) != SOI or bytes(data[-2:]) != EOI:
            raise AlexNetError(f"{self.path}: record {int(self.ids[i])} (bytes {offset:,}–{offset + length:,}) is not a "
                               f"whole JPEG (truncated or corrupt); prepare the store again")
        return np.array(data)  # a copy: decoders want writable memory, and the map may be closed

    def decode_batch(self, rows: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
        """uint8 [B, S, S, C] of the records at ``rows`` on ``device``: libjpeg-turbo on the CPU, nvJPEG on CUDA."""
        data = [torch.from_numpy(self.read(int(i))) for i in rows]
        return decode_on_device(data, torch.device(device), self.channels, self.size, [self.name(int(i)) for i in rows])

    def name(self, i: int) -> str:
        """Row i as messages name it: the file and the store's record number."""
        return f"{self.path}: record {int(self.ids[i])}"


def decode_on_device(data: list[torch.Tensor], device: torch.device, channels: int, size: int,
                     names: list[str]) -> torch.Tensor:
    """One batched ``decode_jpeg`` call on ``device`` (nvJPEG on CUDA): uint8 [B, S, S, C] there."""
    from torchvision.io import decode_jpeg

    mode = _mode(channels)
    try:
        images = decode_jpeg(data, mode=mode, device=device)
    except RuntimeError as e:
        for name, record in zip(names, data):  # which one: decode them one by one on the CPU
            try:
                decode_jpeg(record, mode=mode)
            except RuntimeError as one:
                raise AlexNetError(f"{name}: cannot decode ({one_line(one, first_line=True)})") from None
        raise AlexNetError(f"{names[0]} … {names[-1]}: cannot decode on {device} ({one_line(e, first_line=True)})") from None
    for name, image in zip(names, images):
        if image.shape != (channels, size, size):
            raise AlexNetError(f"{name}: decodes to {list(image.shape)}, the store says [{channels}, {size}, {size}]")
    if device.type == "cpu":  # torch.stack of these [C, H, W] views is ~50× slower on a CPU than copying each
        out = torch.empty((len(images), size, size, channels), dtype=torch.uint8)
        for k, image in enumerate(images):
            out[k].copy_(image.permute(1, 2, 0))
        return out
    return torch.stack([image.permute(1, 2, 0) for image in images])  # one kernel on a GPU


def open_records(root: Path, entry: dict, size: int, channels: int) -> JpegRecords:
    """The records of one split of the store at ``root``, validated against the file's size."""
    path, index_path = root / entry["images"], root / entry["index"]
    n = int(entry["count"])
    try:
        index = np.load(index_path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise AlexNetError(f"{index_path}: cannot read the record index ({e})") from None
    if index.shape != (n, 2) or index.dtype != np.int64:
        raise AlexNetError(f"{index_path}: expected int64 [{n}, 2] (offset, length), got {index.dtype} {list(index.shape)}")
    if not path.is_file():
        raise AlexNetError(f"{path}: missing (the JPEG records of {n:,} images)")
    file_size = path.stat().st_size
    if n:
        if (index[:, 0] < 0).any() or (index[:, 1] < len(SOI) + len(EOI)).any():
            bad = int(np.flatnonzero((index[:, 0] < 0) | (index[:, 1] < 4))[0])
            raise AlexNetError(f"{index_path}: record {bad} has offset {index[bad, 0]} and length {index[bad, 1]}")
        ends = index[:, 0] + index[:, 1]
        if ends.max() > file_size:
            bad = int(np.flatnonzero(ends > file_size)[0])
            raise AlexNetError(f"{path}: {file_size:,} bytes, but record {bad} ends at byte {int(ends[bad]):,} "
                               f"(the file is truncated); prepare the store again")
    return JpegRecords(path, index, size, channels)


class RecordWriter:
    """A split being written by ``alexnet prepare --encoding jpeg``: records appended as they come.

    ``SPLIT.slots.npy`` (int64 [N, 2], rows of -1 until written) says where each source image's
    record is; records land in completion order, so the final index is not sorted by offset. A
    checkpoint flushes the records to disk and then saves the slots (atomically); on a resume the
    records file is cut back to the end of the last checkpointed record, so whatever a killed run
    appended after it is dropped and written again.
    """

    def __init__(self, records_path: Path, slots_path: Path, size: int, channels: int) -> None:
        self.records_path, self.slots_path, self.size, self.channels = records_path, slots_path, size, channels
        self.slots = np.load(slots_path, allow_pickle=False)
        done = self.done
        self.end = int((self.slots[done, 0] + self.slots[done, 1]).max()) if done.any() else 0
        self.file = open(records_path, "r+b")
        self.file.truncate(self.end)
        self.file.seek(self.end)

    @staticmethod
    def create(records_path: Path, slots_path: Path, count: int) -> None:
        records_path.write_bytes(b"")
        save_npy(slots_path, np.full((count, 2), -1, dtype=np.int64))

    @property
    def done(self) -> np.ndarray:
        return self.slots[:, 1] >= 0

    def put(self, i: int, image: np.ndarray, data: bytes) -> None:
        self.file.write(data)
        self.slots[i] = (self.end, len(data))
        self.end += len(data)

    def written(self, rows: np.ndarray) -> np.ndarray:
        """The decoded images of records already written (a resume's statistics)."""
        records = JpegRecords(self.records_path, self.slots[rows], self.size, self.channels, ids=rows)
        return records.decode_batch(np.arange(len(rows))).numpy()

    def checkpoint(self) -> None:
        self.file.flush()
        os.fsync(self.file.fileno())
        save_npy(self.slots_path, self.slots)

    def close(self) -> None:
        self.file.close()

    def finish(self, order: np.ndarray, index_path: Path) -> None:
        """The final index: the records of the source images at ``order``, in that order."""
        save_npy(index_path, np.ascontiguousarray(self.slots[order]))


def save_npy(path: Path, array: np.ndarray) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, array, allow_pickle=False)
