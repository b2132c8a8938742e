"""Decode a Face Synthetics directory once into uint8 memory maps at the training size; read them back.

:func:`prepare_cache` decodes and resizes every frame exactly as :class:`FaceSyntheticsDataset` does
(images stored as ``round(255 * x)``, masks with labels already mapped), in parallel chunks whose rows each
worker writes into the shared memory map. A finished chunk is recorded durably, so an interrupted prepare
continues where it stopped; the manifest is marked complete last. :class:`CachedFaceDataset` serves the
same items as the PNG loader from the cache (bit for bit: both round resized images to 8 bits), and
:func:`open_split` picks the cache or the PNGs for a dataset directory.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import logging
import multiprocessing
import os
import shlex
import shutil
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import torch

from facenas.cpus import usable_cpus
from facenas.data.cachefiles import (
    DONE,
    FORMAT_VERSION,
    IMAGES,
    LOCK,
    MANIFEST,
    MASKS,
    CacheManifest,
    SourceListing,
    array_shapes,
    expected_shapes,
    read_done,
    read_manifest,
    source_listing,
    write_manifest,
)
from facenas.data.facesynth import (
    Batch,
    FaceDataset,
    FaceSyntheticsDataset,
    check_img_size,
    check_split_args,
    load_frame,
    select_split,
)
from facenas.errors import DatasetError

log = logging.getLogger(__name__)

CACHE_DIRNAME: Final[str] = ".facenas-cache"
CHUNK_FRAMES: Final[int] = 64
_PR_SET_PDEATHSIG: Final[int] = 1
ProgressCallback = Callable[[int, int], None]
U8Array = npt.NDArray[np.uint8]


def default_cache_dir(dataset_dir: str | os.PathLike[str], img_size: Sequence[int]) -> Path:
    """``dataset_dir/.facenas-cache/{w}x{h}``."""
    width, height = check_img_size(img_size)
    return Path(dataset_dir) / CACHE_DIRNAME / f"{width}x{height}"


def cache_for(
    setting: str, dataset_dir: str | os.PathLike[str], img_size: Sequence[int]
) -> str | Path | None:
    """What a service's ``--data-cache`` means at one image size, for :func:`open_split`: ``auto``
    (:func:`default_cache_dir` when there is one, else the PNGs), ``none`` (the PNGs), or a directory that
    holds one cache per size, ``<dir>/<w>x<h>`` (which must be there)."""
    if setting == "auto":
        return "auto"
    if setting == "none":
        return None
    w, h = check_img_size(img_size)
    return Path(setting) / f"{w}x{h}"


def prepare_command(dataset_dir: Path, img_size: tuple[int, int], out: Path | None = None) -> str:
    """The ``facenas data prepare`` command line that builds this cache."""
    command = f"facenas data prepare --dataset-dir {shlex.quote(str(dataset_dir))} --img-size "
    command += f"{img_size[0]}x{img_size[1]}"
    return command + (f" --out {shlex.quote(str(out))}" if out is not None else "")


def mismatch(manifest: CacheManifest, img_size: tuple[int, int], listing: SourceListing) -> str | None:
    """Why a cache does not belong to ``listing`` at ``img_size``; None when it does."""
    if manifest.format != FORMAT_VERSION:
        return f"it is in cache format {manifest.format}, this facenas reads format {FORMAT_VERSION}"
    if manifest.img_size != img_size:
        (w, h), (want_w, want_h) = manifest.img_size, img_size
        return f"it holds {w}x{h} frames, not {want_w}x{want_h}"
    if manifest.source_checksum != listing.checksum:
        return "the dataset's frames changed since it was prepared (names, sizes or modification times)"
    return None


# ---------------------------------------------------------------------------------------- prepare


@dataclass(frozen=True)
class _Chunk:
    """One unit of work: decode ``frames`` into rows ``start ..`` of the cache in ``directory``."""

    index: int
    root: str
    directory: str
    img_size: tuple[int, int]
    start: int
    frames: tuple[str, ...]


def image_to_uint8(image: torch.Tensor) -> U8Array:
    """A loader image (float32 ``(3, h, w)`` in [0, 1]) as uint8 ``(h, w, 3)``, rounded to nearest."""
    array: U8Array = image.mul(255.0).round_().to(torch.uint8).permute(1, 2, 0).numpy()
    return array


def _decode_chunk(chunk: _Chunk) -> tuple[int, int]:
    """Decode one chunk into the shared memory maps and flush them; return (chunk index, frames)."""
    root, directory = Path(chunk.root), Path(chunk.directory)
    images = np.load(directory / IMAGES, mmap_mode="r+")
    masks = np.load(directory / MASKS, mmap_mode="r+")
    for row, frame in enumerate(chunk.frames, chunk.start):
        image, mask = load_frame(root / f"{frame}.png", root / f"{frame}_seg.png", chunk.img_size, frame)
        images[row] = image_to_uint8(image)
        masks[row] = mask.numpy().astype(np.uint8)
    images.flush()  # msync: the rows are on disk before the chunk is recorded as done
    masks.flush()
    del images, masks
    return chunk.index, len(chunk.frames)


def _init_worker() -> None:
    """One decoding process per core, and it dies with the prepare that started it (Linux)."""
    torch.set_num_threads(1)
    if sys.platform == "linux":
        ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _decode_all(chunks: list[_Chunk], workers: int) -> Iterator[tuple[int, int]]:
    """Decode ``chunks`` (in this process, or in a pool of ``workers``), yielding each as it finishes."""
    if workers == 1 or len(chunks) <= 1:
        yield from map(_decode_chunk, chunks)
        return
    # fork (as DataLoader workers): no re-import of torch or of the caller's __main__ per worker
    context = multiprocessing.get_context("fork")
    pool = ProcessPoolExecutor(min(workers, len(chunks)), context, initializer=_init_worker)
    try:
        futures = [pool.submit(_decode_chunk, chunk) for chunk in chunks]
        for future in as_completed(futures):
            yield future.result()
    except BrokenProcessPool as exc:
        raise DatasetError(
            f"a decoding process died ({exc}); run the same prepare again, it resumes where it stopped"
        ) from exc
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


@contextmanager
def _exclusive(directory: Path) -> Iterator[None]:
    """Hold ``prepare.lock`` in ``directory`` so that two prepares never write one cache.

    A POSIX record lock: owned by this process alone (forked decoding workers do not inherit it) and
    released the moment the process dies, however it dies.
    """
    with (directory / LOCK).open("a") as handle:
        try:
            fcntl.lockf(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EACCES, errno.EAGAIN):
                raise
            raise DatasetError(
                f"another `facenas data prepare` is writing {directory}; wait for it to finish"
            ) from exc
        yield


def _existing(
    directory: Path, img_size: tuple[int, int], listing: SourceListing
) -> tuple[CacheManifest | None, str | None]:
    """The usable (complete or resumable) manifest in ``directory``, or None and why it is not usable."""
    try:
        manifest = read_manifest(directory)
    except DatasetError as exc:
        return None, str(exc)
    if manifest is None:
        return None, None
    reason = mismatch(manifest, img_size, listing)
    if reason is None and array_shapes(directory) != expected_shapes(manifest):
        reason = f"{IMAGES} or {MASKS} is missing or does not match the manifest"
    return (None, reason) if reason else (manifest, None)


def _create(directory: Path, manifest: CacheManifest) -> None:
    """Start an empty cache: remove old files (unlinked, so readers keep their maps), allocate arrays."""
    for name in (MANIFEST, DONE, IMAGES, MASKS):
        (directory / name).unlink(missing_ok=True)
    shapes = expected_shapes(manifest)
    need = sum(int(np.prod(shape)) for shape in shapes)
    free = shutil.disk_usage(directory).free
    if free < need:
        raise DatasetError(
            f"the data cache needs {need / 1e9:.2f} GB in {directory}, only {free / 1e9:.2f} GB are free; "
            "free space or write it elsewhere with --out"
        )
    for name, shape in zip((IMAGES, MASKS), shapes, strict=True):
        array = np.lib.format.open_memmap(directory / name, mode="w+", dtype=np.uint8, shape=shape)
        array.flush()
        del array
        with (directory / name).open("rb") as handle:
            os.fsync(handle.fileno())
    write_manifest(directory, manifest)


def _start(
    directory: Path, root: Path, img_size: tuple[int, int], listing: SourceListing, chunk_frames: int
) -> tuple[CacheManifest, set[int]]:
    """The manifest to fill and the chunks already done: resumed when it matches, else a new cache."""
    manifest, reason = _existing(directory, img_size, listing)
    if manifest is not None:
        done = set(range(manifest.chunks)) if manifest.complete else read_done(directory, manifest.chunks)
        return manifest, done
    if reason is not None:
        log.warning(
            "data cache is out of date; preparing it again",
            extra={"cache_dir": str(directory), "reason": reason},
        )
    manifest = CacheManifest(img_size, listing.frames, listing.checksum, chunk_frames, False, str(root))
    _create(directory, manifest)
    return manifest, set()


def _fill(
    directory: Path,
    root: Path,
    manifest: CacheManifest,
    done: set[int],
    workers: int,
    on_progress: ProgressCallback | None,
) -> None:
    """Decode every chunk not in ``done``, recording each durably in ``chunks.done`` as it finishes."""
    total = manifest.count
    finished = sum(len(manifest.chunk_rows(k)) for k in done)
    if on_progress is not None:
        on_progress(finished, total)
    todo = []
    for k in range(manifest.chunks):
        if k not in done:
            rows = manifest.chunk_rows(k)
            frames = tuple(manifest.frames[rows.start : rows.stop])
            todo.append(_Chunk(k, str(root), str(directory), manifest.img_size, rows.start, frames))
    with (directory / DONE).open("a", encoding="ascii") as record:
        for index, count in _decode_all(todo, workers):
            record.write(f"{index}\n")
            record.flush()
            os.fsync(record.fileno())
            finished += count
            if on_progress is not None:
                on_progress(finished, total)


def prepare_cache(
    dataset_dir: str | os.PathLike[str],
    img_size: Sequence[int],
    out: str | os.PathLike[str] | None = None,
    workers: int | None = None,
    on_progress: ProgressCallback | None = None,
    *,
    chunk_frames: int | None = None,
) -> CacheManifest:
    """Decode ``dataset_dir`` at ``img_size = (w, h)`` into ``out`` (default :func:`default_cache_dir`).

    ``workers`` processes (default: every usable CPU) decode chunks of ``chunk_frames`` frames (default:
    up to 64, at least 4 chunks per worker); ``on_progress(done, total)`` is called with frame counts,
    first with what an earlier run finished.
    A complete cache of the same source listing is returned as is; a partial one is resumed; one that no
    longer matches the dataset is rebuilt (logged). Returns the complete manifest.
    """
    root = Path(dataset_dir)
    size = check_img_size(img_size)
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise DatasetError(f"workers must be a positive int or None, got {workers!r}")
    if chunk_frames is not None and (
        isinstance(chunk_frames, bool) or not isinstance(chunk_frames, int) or chunk_frames < 1
    ):
        raise DatasetError(f"chunk_frames must be a positive int or None, got {chunk_frames!r}")
    directory = Path(out) if out is not None else default_cache_dir(root, size)
    listing = source_listing(root)
    workers = workers or usable_cpus()
    chunk_frames = chunk_frames or max(1, min(CHUNK_FRAMES, -(-len(listing.frames) // (4 * workers))))
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with _exclusive(directory):
            manifest, done = _start(directory, root.resolve(), size, listing, chunk_frames)
            if manifest.complete:
                if on_progress is not None:
                    on_progress(manifest.count, manifest.count)
                return manifest
            if done:
                log.info(
                    "resuming data cache",
                    extra={"cache_dir": str(directory), "chunks_done": len(done), "chunks": manifest.chunks},
                )
            _fill(directory, root, manifest, done, workers, on_progress)
            complete = replace(manifest, complete=True)
            write_manifest(directory, complete)
    except OSError as exc:
        raise DatasetError(
            f"cannot write the data cache in {directory}: {exc}; pass --out with a writable directory"
        ) from exc
    log.info(
        "data cache complete",
        extra={"cache_dir": str(directory), "frames": complete.count, "img_size": list(size)},
    )
    return complete


# ---------------------------------------------------------------------------------------- reading


def _complete_manifest(directory: Path) -> CacheManifest:
    """The manifest of a complete cache with arrays of the right shape; DatasetError otherwise."""
    manifest = read_manifest(directory)
    if manifest is None or not manifest.complete:
        state = "has no manifest" if manifest is None else "is incomplete (its prepare has not finished)"
        raise DatasetError(f"data cache {directory} {state}; run `facenas data prepare` for it")
    if array_shapes(directory) != expected_shapes(manifest):
        raise DatasetError(
            f"data cache {directory}: {IMAGES} or {MASKS} is missing or does not match the manifest; "
            "prepare it again"
        )
    return manifest


class CachedFaceDataset(FaceDataset):
    """The items of :class:`FaceSyntheticsDataset`, read from a cache made by :func:`prepare_cache`.

    Same split semantics (``split_indices`` over the cache's sorted frames, ``limit``). The memory maps
    are opened read-only on first use in each process (and dropped when pickled), so DataLoader workers
    and other processes share one cache through the page cache. Freshness against the dataset directory
    is checked by :func:`open_split`, not here. ``root`` is the dataset directory (default: the one the
    cache was prepared from).
    """

    def __init__(
        self,
        cache_dir: str | os.PathLike[str],
        split: str = "train",
        img_size: Sequence[int] | None = None,
        val_fraction: float = 0.02,
        test_fraction: float = 0.10,
        limit: int | None = None,
        root: str | os.PathLike[str] | None = None,
    ) -> None:
        self.cache_dir = Path(cache_dir)
        manifest = _complete_manifest(self.cache_dir)
        self.img_size = check_split_args(split, manifest.img_size if img_size is None else img_size, limit)
        if self.img_size != manifest.img_size:
            w, h = manifest.img_size
            raise DatasetError(f"data cache {self.cache_dir} holds {w}x{h} frames, not {self.img_size}")
        self.root = Path(root) if root is not None else Path(manifest.source or self.cache_dir)
        self.split = split
        self._rows = select_split(manifest.count, split, val_fraction, test_fraction, limit, self.root)
        self.frame_ids = [manifest.frames[i] for i in self._rows]
        self._maps: tuple[U8Array, U8Array] | None = None
        self._pid = -1

    def _arrays(self) -> tuple[U8Array, U8Array]:
        """The read-only memory maps of this process (opened on first use after a fork or unpickling)."""
        if self._maps is None or self._pid != os.getpid():
            images = np.load(self.cache_dir / IMAGES, mmap_mode="r")
            masks = np.load(self.cache_dir / MASKS, mmap_mode="r")
            self._maps, self._pid = (images, masks), os.getpid()
        return self._maps

    def __getitem__(self, index: int) -> Batch:
        row = self._rows[index]
        images, masks = self._arrays()
        # numpy, as the PNG path: single-threaded, and bit-identical to it
        image = np.ascontiguousarray(images[row].transpose(2, 0, 1), dtype=np.float32)
        image /= np.float32(255.0)
        return torch.from_numpy(image), torch.from_numpy(masks[row].astype(np.int64))

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_maps"], state["_pid"] = None, -1
        return state


# ---------------------------------------------------------------------------------------- choosing


@dataclass(frozen=True)
class CacheStatus:
    """``state`` of a cache directory for a dataset: missing, incomplete, stale or fresh."""

    state: str
    problem: str = ""


def cache_status(directory: Path, dataset_dir: Path, img_size: tuple[int, int]) -> CacheStatus:
    """Whether ``directory`` holds a complete cache of ``dataset_dir`` as it is now (one listing)."""
    try:
        manifest = read_manifest(directory)
    except DatasetError as exc:
        return CacheStatus("stale", str(exc))
    if manifest is None:
        return CacheStatus("missing", f"there is no data cache in {directory}")
    if not manifest.complete:
        return CacheStatus("incomplete", f"data cache {directory} is incomplete (prepare not finished)")
    reason = mismatch(manifest, img_size, source_listing(dataset_dir))
    if reason is None and array_shapes(directory) != expected_shapes(manifest):
        reason = f"{IMAGES} or {MASKS} is missing or does not match the manifest"
    if reason is not None:
        return CacheStatus("stale", f"data cache {directory} does not match {dataset_dir}: {reason}")
    return CacheStatus("fresh")


_warned: set[tuple[str, tuple[int, int]]] = set()
_warned_lock = threading.Lock()


def _warn_png_fallback(dataset_dir: Path, img_size: tuple[int, int], status: CacheStatus, fix: str) -> None:
    """Log once per (dataset, size) per process that training decodes PNGs."""
    key = (os.path.abspath(dataset_dir), img_size)
    with _warned_lock:
        if key in _warned:
            return
        _warned.add(key)
    log.warning(
        f"no usable data cache: decoding PNGs in the training process (slow); run `{fix}`",
        extra={"dataset_dir": str(dataset_dir), "img_size": list(img_size), "reason": status.problem},
    )


def open_split(
    root: str | os.PathLike[str],
    split: str,
    img_size: Sequence[int],
    val_fraction: float = 0.02,
    test_fraction: float = 0.10,
    cache: str | os.PathLike[str] | None = "auto",
) -> FaceDataset:
    """One split of the dataset at ``root``, from a data cache when there is one.

    ``cache`` is a cache directory (it must hold a complete cache of ``root`` as it is now, at
    ``img_size``), ``"auto"`` (:func:`default_cache_dir` when complete; refused when stale; else the PNGs,
    with a warning once per dataset and size) or None (the PNGs). Raises DatasetError naming the
    ``facenas data prepare`` command that fixes a missing, incomplete or stale cache.
    """
    dataset_dir, size = Path(root), check_img_size(img_size)
    if cache is None:
        return FaceSyntheticsDataset(dataset_dir, split, size, val_fraction, test_fraction)
    auto = isinstance(cache, str) and cache == "auto"
    directory = default_cache_dir(dataset_dir, size) if auto else Path(cache)
    status = cache_status(directory, dataset_dir, size)
    if status.state == "fresh":
        log.debug("reading data cache", extra={"cache_dir": str(directory), "split": split})
        return CachedFaceDataset(directory, split, size, val_fraction, test_fraction, root=dataset_dir)
    fix = prepare_command(dataset_dir, size, None if auto else directory)
    if not auto or status.state == "stale":
        raise DatasetError(f"{status.problem}; run `{fix}`")
    dataset = FaceSyntheticsDataset(dataset_dir, split, size, val_fraction, test_fraction)
    _warn_png_fallback(dataset_dir, size, status, fix)  # once the PNGs are known to be usable
    return dataset
