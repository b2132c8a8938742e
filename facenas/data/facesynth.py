"""Loader for the Face Synthetics layout: ``{i:06d}.png`` (RGB) and ``{i:06d}_seg.png`` (labels) per frame."""

from __future__ import annotations

import math
import os
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812 - the usual alias
from PIL import Image
from torch.utils.data import Dataset

from facenas.data.classes import IGNORE_INDEX, NUM_CLASSES
from facenas.errors import DatasetError

SPLITS = ("train", "val", "test", "all")
_MASK_MODES = ("L", "P")

Batch = tuple[torch.Tensor, torch.Tensor]


class Splits(NamedTuple):
    """Index ranges of the three splits over the sorted frame list (train, then val, then test)."""

    train: range
    val: range
    test: range


def _split_count(n: int, fraction: float) -> int:
    """Frames for one held-out split: rounded half up, at least one when ``n >= 3``."""
    count = math.floor(n * fraction + 0.5)
    return max(count, 1) if fraction > 0 and n >= 3 else count


def split_indices(n: int, val_fraction: float = 0.02, test_fraction: float = 0.10) -> Splits:
    """Split ``n`` sorted frames into train, val and test ranges, in that order.

    For ``n = 100_000`` this is train 0..87,999, val 88,000..89,999, test 90,000..99,999.
    """
    if n < 0:
        raise DatasetError(f"frame count must be >= 0, got {n}")
    for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0.0 <= value < 1.0:
            raise DatasetError(f"{name} must be in [0, 1), got {value}")
    if val_fraction + test_fraction >= 1.0:
        raise DatasetError(f"val_fraction + test_fraction must be < 1, got {val_fraction + test_fraction}")
    n_val, n_test = _split_count(n, val_fraction), _split_count(n, test_fraction)
    excess = n_val + n_test - max(n - 1, 0)  # keep at least one training frame
    if excess > 0:
        floor = 1 if n >= 3 and test_fraction > 0 else 0
        cut = min(excess, n_test - floor)
        n_test, n_val = n_test - cut, n_val - (excess - cut)
    n_train = n - n_val - n_test
    return Splits(range(0, n_train), range(n_train, n_train + n_val), range(n_train + n_val, n))


def _describe(names: Sequence[str], limit: int = 3) -> str:
    shown = ", ".join(names[:limit])
    return f"{shown} (+{len(names) - limit} more)" if len(names) > limit else shown


def _frame_of(name: str) -> tuple[str, bool]:
    """``("123", False)`` for ``123.png``, ``("123", True)`` for ``123_seg.png``, ``("", False)`` else."""
    if not name.endswith(".png"):
        return "", False
    stem = name[:-4]
    is_mask = stem.endswith("_seg")
    frame = stem[:-4] if is_mask else stem
    return (frame, is_mask) if frame.isdecimal() else ("", False)


def frame_entries(root: Path) -> tuple[list[str], list[os.DirEntry[str]]]:
    """Frame ids under ``root`` sorted numerically, and the directory entries of their files.

    One directory listing; files not named ``<digits>.png`` or ``<digits>_seg.png`` (and folders such as
    ``.facenas-cache``) are ignored. Raises DatasetError unless every image has its mask and vice versa.
    """
    if not root.is_dir():
        raise DatasetError(f"dataset directory not found: {root}")
    images: set[str] = set()
    masks: set[str] = set()
    entries: list[os.DirEntry[str]] = []
    with os.scandir(root) as listing:
        for entry in listing:
            frame, is_mask = _frame_of(entry.name)
            if frame:
                (masks if is_mask else images).add(frame)
                entries.append(entry)
    if not images and not masks:
        raise DatasetError(f"no frames (<id>.png with <id>_seg.png) found in {root}")
    _check_pairs(root, images, masks)
    return sorted(images, key=lambda frame: (int(frame), frame)), entries


def discover_frames(root: Path) -> list[str]:
    """Return the frame ids (file stems) under ``root`` sorted numerically, with one directory listing.

    Files not named ``<digits>.png`` or ``<digits>_seg.png`` are ignored.
    """
    return frame_entries(root)[0]


def _check_pairs(root: Path, images: set[str], masks: set[str]) -> None:
    no_mask = sorted(f"{frame}.png" for frame in images - masks)
    if no_mask:
        raise DatasetError(f"{len(no_mask)} image(s) in {root} have no _seg.png mask: {_describe(no_mask)}")
    no_image = sorted(f"{frame}_seg.png" for frame in masks - images)
    if no_image:
        raise DatasetError(f"{len(no_image)} mask(s) in {root} have no image: {_describe(no_image)}")


def check_img_size(img_size: Sequence[int]) -> tuple[int, int]:
    """``img_size`` as ``(w, h)``; DatasetError unless it is two positive ints."""
    values = tuple(img_size) if isinstance(img_size, Sequence) else ()
    if len(values) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in values):
        raise DatasetError(f"img_size must be (width, height) with two positive ints, got {img_size!r}")
    return values[0], values[1]


def frame_size(root: Path) -> tuple[int, int]:
    """``(w, h)`` of the dataset's first image (read from its header; Face Synthetics frames share one
    size). DatasetError when the directory holds no frames or the image cannot be read."""
    frame = discover_frames(root)[0]
    path = root / f"{frame}.png"
    try:
        with Image.open(path) as image:
            return image.size
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise DatasetError(f"cannot read {path}: {exc}") from exc


def _open(path: Path) -> Image.Image:
    """Open and fully decode an image, turning any failure into a :class:`DatasetError`."""
    try:
        with Image.open(path) as image:
            image.load()
            return image
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise DatasetError(f"cannot read {path}: {exc}") from exc


def load_frame(image_path: Path, mask_path: Path, img_size: tuple[int, int], frame: str) -> Batch:
    """Decode one frame into the loader's ``(image, mask)`` tensors at ``img_size = (w, h)``."""
    image, mask = _open(image_path), _open(mask_path)
    if image.size != mask.size:
        raise DatasetError(f"size mismatch in frame {frame}: image {image.size}, mask {mask.size}")
    if mask.mode not in _MASK_MODES:
        raise DatasetError(f"{mask_path} must be an 8-bit single-channel label map, got mode {mask.mode}")
    return _image_tensor(image, img_size), _mask_tensor(mask, img_size)


def _image_tensor(image: Image.Image, img_size: tuple[int, int]) -> torch.Tensor:
    array = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    tensor = torch.from_numpy(array).permute(2, 0, 1).contiguous()
    width, height = img_size
    if tensor.shape[1:] == (height, width):
        return tensor
    resized = F.interpolate(
        tensor[None], size=(height, width), mode="bilinear", align_corners=False, antialias=True
    )
    # rounded to 8 bits, as a resized image is stored: the data cache then serves exactly these values
    levels = resized[0].clamp_(0.0, 1.0).mul_(255.0).round_().to(torch.uint8).numpy()
    scaled = levels.astype(np.float32)
    scaled /= np.float32(255.0)
    return torch.from_numpy(scaled)


def _mask_tensor(mask: Image.Image, img_size: tuple[int, int]) -> torch.Tensor:
    labels = torch.from_numpy(np.array(mask, dtype=np.int64))
    width, height = img_size
    if labels.shape != (height, width):
        labels = F.interpolate(labels[None, None].float(), size=(height, width), mode="nearest")
        labels = labels[0, 0].long()
    labels[(labels >= NUM_CLASSES) & (labels != IGNORE_INDEX)] = IGNORE_INDEX
    return labels


def check_split_args(split: str, img_size: Sequence[int], limit: int | None) -> tuple[int, int]:
    """Validate a loader's ``split``, ``img_size`` and ``limit``; return ``img_size`` as ``(w, h)``."""
    if split not in SPLITS:
        raise DatasetError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise DatasetError(f"limit must be a positive int or None, got {limit!r}")
    return check_img_size(img_size)


def select_split(
    n: int, split: str, val_fraction: float, test_fraction: float, limit: int | None, root: Path
) -> range:
    """Indices into the ``n`` sorted frames that make up ``split`` (its first ``limit`` frames)."""
    indices = range(n) if split == "all" else getattr(split_indices(n, val_fraction, test_fraction), split)
    if not indices:
        raise DatasetError(f"split {split!r} of {root} is empty")
    return indices[:limit] if limit is not None else indices


class FaceDataset(Dataset[Batch], ABC):
    """One split of a Face Synthetics directory as ``(image, mask)`` pairs; base of both loaders.

    ``image`` is float32 ``(3, h, w)`` RGB / 255 at ``img_size = (w, h)``, ``mask`` int64 ``(h, w)``.
    """

    root: Path
    split: str
    img_size: tuple[int, int]
    frame_ids: list[str]

    def __len__(self) -> int:
        return len(self.frame_ids)

    @abstractmethod
    def __getitem__(self, index: int) -> Batch: ...


class FaceSyntheticsDataset(FaceDataset):
    """Face Synthetics frames decoded from the PNG files.

    ``image`` is bilinearly resized (antialiased) to ``img_size = (w, h)`` and rounded to 8 bits (so
    that the data cache, which stores uint8, serves the same values); ``mask`` is resized with
    nearest, labels ``>= NUM_CLASSES`` (facewear) mapped to ``IGNORE_INDEX``. Files are read lazily in
    ``__getitem__``; :class:`facenas.data.cache.CachedFaceDataset` serves the same items from a cache.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        split: str = "train",
        img_size: Sequence[int] = (256, 256),
        val_fraction: float = 0.02,
        test_fraction: float = 0.10,
        limit: int | None = None,
    ) -> None:
        self.img_size = check_split_args(split, img_size, limit)
        self.root = Path(root)
        self.split = split
        frames = discover_frames(self.root)
        indices = select_split(len(frames), split, val_fraction, test_fraction, limit, self.root)
        self.frame_ids = [frames[i] for i in indices]

    def paths(self, index: int) -> tuple[Path, Path]:
        """Image and mask path of item ``index``."""
        frame = self.frame_ids[index]
        return self.root / f"{frame}.png", self.root / f"{frame}_seg.png"

    def __getitem__(self, index: int) -> Batch:
        image_path, mask_path = self.paths(index)
        return load_frame(image_path, mask_path, self.img_size, self.frame_ids[index])
