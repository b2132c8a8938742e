"""On-disk pieces of a data cache: the source listing's checksum, ``manifest.json`` and the done record.

A cache directory holds ``images.npy`` (uint8 ``(N, H, W, 3)``), ``masks.npy`` (uint8 ``(N, H, W)``),
``manifest.json`` and, while it is being prepared, ``chunks.done`` (one finished chunk index a line,
fsync'd after each). Only a manifest with ``complete: true`` makes the arrays usable.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np

from facenas.data.facesynth import check_img_size, frame_entries
from facenas.errors import DatasetError

FORMAT_VERSION: Final[int] = 1
MANIFEST: Final[str] = "manifest.json"
IMAGES: Final[str] = "images.npy"
MASKS: Final[str] = "masks.npy"
DONE: Final[str] = "chunks.done"
LOCK: Final[str] = "prepare.lock"


@dataclass(frozen=True)
class SourceListing:
    """The frames of a dataset directory and a checksum of their names, sizes and mtimes."""

    frames: list[str]
    checksum: str


def source_listing(root: Path) -> SourceListing:
    """List ``root`` once (one scandir, one stat per frame file) and checksum what a cache depends on."""
    frames, entries = frame_entries(root)
    by_name = {entry.name: entry for entry in entries}
    lines = []
    for frame in frames:
        for name in (f"{frame}.png", f"{frame}_seg.png"):
            stat = by_name[name].stat()
            lines.append(f"{name}\t{stat.st_size}\t{stat.st_mtime_ns}\n")
    return SourceListing(frames, "sha256:" + hashlib.sha256("".join(lines).encode()).hexdigest())


@dataclass(frozen=True)
class CacheManifest:
    """What a cache directory holds: ``frames`` (sorted) at ``img_size = (w, h)`` from one source listing."""

    img_size: tuple[int, int]
    frames: list[str] = field(repr=False)
    source_checksum: str
    chunk_frames: int
    complete: bool = False
    source: str = ""  # the dataset directory it was prepared from (informational)
    format: int = FORMAT_VERSION

    @property
    def count(self) -> int:
        return len(self.frames)

    @property
    def chunks(self) -> int:
        return -(-self.count // self.chunk_frames)

    def chunk_rows(self, chunk: int) -> range:
        """Rows of chunk ``chunk``."""
        start = chunk * self.chunk_frames
        return range(start, min(start + self.chunk_frames, self.count))

    def to_json(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "complete": self.complete,
            "img_size": list(self.img_size),
            "count": self.count,
            "chunk_frames": self.chunk_frames,
            "source_checksum": self.source_checksum,
            "source": self.source,
            "images": IMAGES,
            "masks": MASKS,
            "frames": self.frames,
        }

    @classmethod
    def from_json(cls, data: Any, path: Path) -> CacheManifest:
        """Parse a manifest; DatasetError naming ``path`` when it is malformed."""
        try:
            manifest = cls(
                img_size=check_img_size(data["img_size"]),
                frames=[str(frame) for frame in data["frames"]],
                source_checksum=str(data["source_checksum"]),
                chunk_frames=int(data["chunk_frames"]),
                complete=data["complete"] is True,
                source=str(data.get("source", "")),
                format=int(data["format"]),
            )
            if manifest.count != data["count"] or manifest.chunk_frames < 1:
                raise ValueError("count or chunk_frames")
        except (KeyError, TypeError, ValueError, DatasetError) as exc:
            raise DatasetError(
                f"data cache manifest {path} is malformed ({exc!r}); prepare the cache again"
            ) from exc
        return manifest


def read_manifest(directory: Path) -> CacheManifest | None:
    """The manifest in ``directory``; None when there is none, DatasetError when it cannot be parsed."""
    path = directory / MANIFEST
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise DatasetError(f"cannot read data cache manifest {path}: {exc}") from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DatasetError(f"data cache manifest {path} is not JSON ({exc})") from exc
    return CacheManifest.from_json(data, path)


def fsync_dir(directory: Path) -> None:
    """Make renames and new names in ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_manifest(directory: Path, manifest: CacheManifest) -> None:
    """Write ``manifest.json`` atomically and durably (temporary file, fsync, rename, fsync the folder)."""
    tmp = directory / f".{MANIFEST}.tmp"
    with tmp.open("w", encoding="utf-8") as handle:
        json.dump(manifest.to_json(), handle, separators=(",", ":"))
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, directory / MANIFEST)
    fsync_dir(directory)


def read_done(directory: Path, chunks: int) -> set[int]:
    """Chunk indices recorded as finished; a torn last line (no newline) does not count."""
    try:
        text = (directory / DONE).read_text(encoding="ascii", errors="replace")
    except FileNotFoundError:
        return set()
    lines = text.split("\n")[:-1]  # the part after the last newline is unfinished
    return {int(line) for line in lines if line.isdigit() and int(line) < chunks}


def array_shapes(directory: Path) -> tuple[tuple[int, ...], tuple[int, ...]] | None:
    """Shapes of ``images.npy`` and ``masks.npy`` (headers only), None if either is missing or not uint8."""
    shapes = []
    for name in (IMAGES, MASKS):
        try:
            array = np.load(directory / name, mmap_mode="r")
        except (OSError, ValueError):
            return None
        if array.dtype != np.uint8:
            return None
        shapes.append(tuple(array.shape))
        del array
    return shapes[0], shapes[1]


def expected_shapes(manifest: CacheManifest) -> tuple[tuple[int, ...], tuple[int, ...]]:
    width, height = manifest.img_size
    return (manifest.count, height, width, 3), (manifest.count, height, width)
