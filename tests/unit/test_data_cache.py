"""The decoded data cache: same items as the PNG loader, parallel and resumable prepare, freshness."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from facenas.data import (
    CachedFaceDataset,
    FaceSyntheticsDataset,
    default_cache_dir,
    discover_frames,
    generate_dataset,
    open_split,
    prepare_cache,
)
from facenas.data.cachefiles import DONE, IMAGES, LOCK, MANIFEST, MASKS, read_done, read_manifest
from facenas.errors import DatasetError, InvalidInput
from facenas.pipeline import DatasetSplits
from tests.timing import scaled

N_FRAMES = 40
SIZE = (48, 32)


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A generated 64x64 dataset; tests that write into it work on a copy (:func:`copy_of`)."""
    root = tmp_path_factory.mktemp("cache-src")
    generate_dataset(root, N_FRAMES, size=64, seed=3)
    return root


@pytest.fixture(scope="module")
def prepared(source: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A complete cache of ``source`` at SIZE, outside the dataset directory."""
    out = tmp_path_factory.mktemp("cache-out") / "c"
    prepare_cache(source, SIZE, out=out, workers=1, chunk_frames=16)
    return out


def copy_of(source: Path, tmp_path: Path) -> Path:
    root = tmp_path / "data"
    shutil.copytree(source, root)  # copy2 keeps mtimes: the listing checksum is the same
    return root


@pytest.fixture
def cache_logs() -> Iterator[list[logging.LogRecord]]:
    """Records of facenas.data.cache (the facenas logger may not propagate to caplog)."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logger = logging.getLogger("facenas.data.cache")
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.INFO)
    yield records
    logger.removeHandler(handler)
    logger.setLevel(level)


def assert_same_items(png: FaceSyntheticsDataset, cached: CachedFaceDataset) -> None:
    assert cached.frame_ids == png.frame_ids and len(cached) == len(png)
    for index in range(len(png)):
        (png_image, png_mask), (image, mask) = png[index], cached[index]
        assert image.dtype == torch.float32 and image.shape == png_image.shape and image.is_contiguous()
        assert mask.dtype == torch.int64 and torch.equal(mask, png_mask)
        assert torch.equal(image, png_image)  # bit-identical: results never depend on the cache


# --- equivalence with the PNG path -------------------------------------------------------------------------


@pytest.mark.parametrize("size", [(48, 32), (64, 64), (96, 80)])
def test_cache_items_equal_png_items(source: Path, tmp_path: Path, size: tuple[int, int]) -> None:
    out = tmp_path / "cache"
    manifest = prepare_cache(source, size, out=out, workers=1, chunk_frames=16)
    assert manifest.complete and manifest.count == N_FRAMES and manifest.img_size == size
    for split in ("train", "val", "test", "all"):
        png = FaceSyntheticsDataset(source, split, size, val_fraction=0.1, test_fraction=0.2)
        cached = CachedFaceDataset(out, split, size, val_fraction=0.1, test_fraction=0.2, root=source)
        assert cached.root == source and cached.split == split and cached.img_size == size
        assert_same_items(png, cached)


def test_full_size_frames_at_training_size(tmp_path: Path) -> None:
    """Face Synthetics' 512x512 frames cached at Archai's 256x256."""
    root = tmp_path / "faces"
    generate_dataset(root, 3, size=512, seed=1)
    prepare_cache(root, (256, 256), workers=1)
    cached = open_split(root, "all", (256, 256))
    assert isinstance(cached, CachedFaceDataset)
    assert cached.cache_dir == default_cache_dir(root, (256, 256)) == root / ".facenas-cache" / "256x256"
    assert_same_items(FaceSyntheticsDataset(root, "all", (256, 256)), cached)


def test_labels_are_mapped_as_the_png_loader_maps_them(tmp_path: Path) -> None:
    from PIL import Image

    root = tmp_path / "d"
    root.mkdir()
    mask = np.array([[0, 5, 17, 18, 200, 255, 1, 2]] * 8, dtype=np.uint8)
    Image.fromarray(np.full((8, 8, 3), 7, np.uint8)).save(root / "000000.png")
    Image.fromarray(mask).save(root / "000000_seg.png")
    prepare_cache(root, (8, 8), workers=1)
    _, got = CachedFaceDataset(default_cache_dir(root, (8, 8)), "all")[0]
    assert got[0].tolist() == [0, 5, 17, 255, 255, 255, 1, 2]


def test_limit_and_split_semantics(prepared: Path, source: Path) -> None:
    cached = CachedFaceDataset(prepared, "train", limit=5)
    assert cached.frame_ids == FaceSyntheticsDataset(source, "train", SIZE, limit=5).frame_ids
    assert len(cached) == 5 and cached[-1][1].shape == (32, 48)
    with pytest.raises(IndexError):
        cached[5]
    with pytest.raises(DatasetError, match="unknown split"):
        CachedFaceDataset(prepared, "validation")
    with pytest.raises(DatasetError, match="limit must be"):
        CachedFaceDataset(prepared, limit=0)
    with pytest.raises(DatasetError, match=r"holds 48x32 frames, not \(64, 64\)"):
        CachedFaceDataset(prepared, img_size=(64, 64))


def test_dataloader_workers_share_the_cache(prepared: Path) -> None:
    dataset = CachedFaceDataset(prepared, "all")
    dataset[0]  # maps opened in this process: workers must open their own
    assert dataset.__getstate__()["_maps"] is None
    serial = [batch for batch in DataLoader(dataset, batch_size=8)]
    parallel = [batch for batch in DataLoader(dataset, batch_size=8, num_workers=2)]
    assert len(serial) == len(parallel) == 5
    for (a_images, a_masks), (b_images, b_masks) in zip(serial, parallel, strict=True):
        assert torch.equal(a_images, b_images) and torch.equal(a_masks, b_masks)


def test_discovery_ignores_the_cache_folder(source: Path, tmp_path: Path) -> None:
    root = copy_of(source, tmp_path)
    prepare_cache(root, SIZE, workers=1)
    assert (root / ".facenas-cache" / "48x32" / MANIFEST).is_file()
    assert discover_frames(root) == discover_frames(source)


# --- prepare: parallel, resumable, atomic ------------------------------------------------------------------


def test_parallel_prepare_writes_the_same_bytes(source: Path, prepared: Path, tmp_path: Path) -> None:
    calls: list[tuple[int, int]] = []
    out = tmp_path / "parallel"
    manifest = prepare_cache(
        source, SIZE, out=out, workers=2, chunk_frames=6, on_progress=lambda *a: calls.append(a)
    )
    assert manifest.chunks == 7 and manifest.chunk_frames == 6
    assert calls[0] == (0, N_FRAMES) and calls[-1] == (N_FRAMES, N_FRAMES) and len(calls) == 8
    assert [done for done, _ in calls] == sorted(done for done, _ in calls)
    for name in (IMAGES, MASKS):
        assert np.array_equal(np.load(out / name), np.load(prepared / name)), name
    on_disk = json.loads((out / MANIFEST).read_text())
    assert on_disk["complete"] is True and on_disk["count"] == N_FRAMES and on_disk["img_size"] == [48, 32]
    assert on_disk["frames"] == discover_frames(source) and on_disk["source_checksum"].startswith("sha256:")


def test_default_chunks_give_every_worker_several(source: Path, tmp_path: Path) -> None:
    manifest = prepare_cache(source, SIZE, out=tmp_path / "c", workers=2)
    assert (manifest.chunk_frames, manifest.chunks) == (5, 8)  # 40 frames, 4 chunks per worker
    with pytest.raises(DatasetError, match="chunk_frames must be"):
        prepare_cache(source, SIZE, out=tmp_path / "c", chunk_frames=0)


def test_complete_cache_is_not_prepared_again(source: Path, prepared: Path) -> None:
    before = (prepared / IMAGES).stat().st_mtime_ns
    calls: list[tuple[int, int]] = []
    prepare_cache(source, SIZE, out=prepared, on_progress=lambda *a: calls.append(a))
    assert calls == [(N_FRAMES, N_FRAMES)]
    assert (prepared / IMAGES).stat().st_mtime_ns == before


_KILLED_PREPARE = """
import sys, time
from facenas.data.cache import prepare_cache

def progress(done, total):
    print(done, flush=True)
    if done >= int(sys.argv[3]):
        time.sleep(600)  # hold with exactly this much recorded until the test kills the process group

prepare_cache(sys.argv[1], (48, 32), out=sys.argv[2], workers=2, chunk_frames=6, on_progress=progress)
"""


def _live_members(pgid: int) -> list[int]:
    """Processes of process group ``pgid`` that are not zombies (Linux /proc)."""
    live = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            live.append(int(stat.parent.name))
    return live


@pytest.mark.integration
def test_killed_prepare_resumes_where_it_stopped(source: Path, prepared: Path, tmp_path: Path) -> None:
    out = tmp_path / "killed"
    proc = subprocess.Popen(
        [sys.executable, "-c", _KILLED_PREPARE, str(source), str(out), "18"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, to find its decoding workers
    )
    seen: list[int] = []
    try:
        assert proc.stdout is not None
        for line in iter(proc.stdout.readline, ""):  # ends early only if the prepare fails
            seen.append(int(line))
            if seen[-1] >= 18:
                break
    finally:
        os.kill(proc.pid, signal.SIGKILL)  # the prepare process only, as `kill -9 PID` would
        proc.wait(timeout=30)
    assert seen[-1:] == [18], proc.stderr.read() if proc.stderr else ""
    deadline = time.monotonic() + scaled(10)
    while _live_members(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    leftover = _live_members(proc.pid)
    if leftover:
        os.killpg(proc.pid, signal.SIGKILL)
    assert not leftover, "decoding workers outlived the killed prepare"
    manifest = read_manifest(out)
    assert manifest is not None and not manifest.complete
    assert len(read_done(out, manifest.chunks)) == 3  # 18 frames in chunks of 6, recorded durably

    calls: list[tuple[int, int]] = []
    resumed = prepare_cache(source, SIZE, out=out, workers=2, on_progress=lambda *a: calls.append(a))
    assert resumed.complete and resumed.chunk_frames == 6  # the interrupted run's chunking is kept
    assert calls[0] == (18, N_FRAMES) and calls[-1] == (N_FRAMES, N_FRAMES)
    assert len(calls) == 1 + 4  # only the 4 chunks that were not recorded are decoded
    for name in (IMAGES, MASKS):
        assert np.array_equal(np.load(out / name), np.load(prepared / name)), name


def test_failed_prepare_resumes_and_is_not_used_until_complete(
    source: Path, tmp_path: Path, cache_logs: list[logging.LogRecord]
) -> None:
    root = copy_of(source, tmp_path)

    def fail_after_two_chunks(done: int, total: int) -> None:
        if done >= 20:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        prepare_cache(root, SIZE, workers=2, chunk_frames=10, on_progress=fail_after_two_chunks)
    cache = default_cache_dir(root, SIZE)
    assert not json.loads((cache / MANIFEST).read_text())["complete"]
    assert len(read_done(cache, 4)) == 2
    with pytest.raises(DatasetError, match=r"is incomplete .*facenas data prepare .* --out"):
        open_split(root, "train", SIZE, cache=cache)
    assert isinstance(open_split(root, "train", SIZE), FaceSyntheticsDataset)  # auto: PNGs meanwhile
    assert "incomplete" in cache_logs[-1].__dict__["reason"]

    calls: list[tuple[int, int]] = []
    prepare_cache(root, SIZE, workers=1, on_progress=lambda *a: calls.append(a))
    assert calls == [(20, N_FRAMES), (30, N_FRAMES), (40, N_FRAMES)]
    assert isinstance(open_split(root, "train", SIZE), CachedFaceDataset)


def test_torn_done_record_line_does_not_count(tmp_path: Path) -> None:
    (tmp_path / DONE).write_text("0\n2\n1")  # the write of "1\n" was cut short
    assert read_done(tmp_path, 4) == {0, 2}


_HOLD_LOCK = """
import fcntl, sys, time
with open(sys.argv[1], "a") as handle:
    fcntl.lockf(handle, fcntl.LOCK_EX)
    print("locked", flush=True)
    time.sleep(600)
"""


@pytest.mark.integration
def test_second_prepare_of_one_cache_is_refused(source: Path, tmp_path: Path) -> None:
    out = tmp_path / "locked"
    out.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD_LOCK, str(out / LOCK)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
        with pytest.raises(DatasetError, match="another `facenas data prepare` is writing"):
            prepare_cache(source, SIZE, out=out)
    finally:
        holder.kill()
        holder.wait(timeout=30)
    assert prepare_cache(source, SIZE, out=out, workers=1).complete  # released when its holder died


def test_prepare_checks_free_space(source: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "disk_usage", lambda _: shutil._ntuple_diskusage(10**9, 10**9 - 100, 100))  # type: ignore[attr-defined]
    with pytest.raises(DatasetError, match=r"needs 0\.00 GB .* only 0\.00 GB are free; .*--out"):
        prepare_cache(source, SIZE, out=tmp_path / "full")


def test_prepare_errors_are_dataset_errors(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="dataset directory not found"):
        prepare_cache(tmp_path / "nope", SIZE)
    with pytest.raises(DatasetError, match="img_size must be"):
        prepare_cache(tmp_path, (0, 4))
    with pytest.raises(DatasetError, match="workers must be"):
        prepare_cache(tmp_path, SIZE, workers=0)
    assert issubclass(DatasetError, InvalidInput)


# --- freshness and the choice between cache and PNGs --------------------------------------------------------


def test_changed_dataset_makes_the_cache_stale(
    source: Path, tmp_path: Path, cache_logs: list[logging.LogRecord]
) -> None:
    root = copy_of(source, tmp_path)
    prepare_cache(root, SIZE, workers=1)
    assert isinstance(open_split(root, "val", SIZE), CachedFaceDataset)
    frame = root / "000003.png"
    os.utime(frame, ns=(frame.stat().st_atime_ns, frame.stat().st_mtime_ns + 1_000_000))
    fix = f"facenas data prepare --dataset-dir {root} --img-size 48x32"
    for cache in ("auto", default_cache_dir(root, SIZE)):
        with pytest.raises(DatasetError, match="changed since it was prepared") as info:
            open_split(root, "train", SIZE, cache=cache)
        assert fix in str(info.value)
    with pytest.raises(DatasetError, match="changed since it was prepared"):
        DatasetSplits.open(root, SIZE)
    assert isinstance(open_split(root, "train", SIZE, cache=None), FaceSyntheticsDataset)

    prepare_cache(root, SIZE, workers=1)  # rebuilt, saying why
    (rebuilt,) = [r for r in cache_logs if r.getMessage().startswith("data cache is out of date")]
    assert "changed since it was prepared" in rebuilt.__dict__["reason"]
    assert isinstance(open_split(root, "train", SIZE), CachedFaceDataset)


def test_added_frame_makes_the_cache_stale(source: Path, tmp_path: Path) -> None:
    root = copy_of(source, tmp_path)
    prepare_cache(root, SIZE, workers=1)
    generate_dataset(root, 1, size=64, seed=3, start=N_FRAMES)
    with pytest.raises(DatasetError, match="changed since it was prepared"):
        open_split(root, "train", SIZE)
    assert prepare_cache(root, SIZE, workers=1).count == N_FRAMES + 1


def test_malformed_manifest_is_refused_and_rebuilt(source: Path, tmp_path: Path) -> None:
    root = copy_of(source, tmp_path)
    prepare_cache(root, SIZE, workers=1)
    manifest = default_cache_dir(root, SIZE) / MANIFEST
    manifest.write_text("{not json")
    with pytest.raises(DatasetError, match=r"is not JSON.*facenas data prepare"):
        open_split(root, "train", SIZE)
    assert prepare_cache(root, SIZE, workers=1).complete
    assert isinstance(open_split(root, "train", SIZE), CachedFaceDataset)


def test_explicit_cache_must_exist_and_match(source: Path, prepared: Path, tmp_path: Path) -> None:
    missing = tmp_path / "none"
    with pytest.raises(DatasetError, match="no data cache in") as info:
        open_split(source, "train", SIZE, cache=missing)
    assert f"--img-size 48x32 --out {missing}" in str(info.value)
    with pytest.raises(DatasetError, match=r"holds 48x32 frames, not 64x64"):
        open_split(source, "train", (64, 64), cache=prepared)
    cached = open_split(source, "train", SIZE, cache=str(prepared))
    assert isinstance(cached, CachedFaceDataset) and cached.root == source


def test_without_cache_auto_falls_back_to_pngs_and_warns_once(
    source: Path, tmp_path: Path, cache_logs: list[logging.LogRecord]
) -> None:
    root = copy_of(source, tmp_path)
    splits = DatasetSplits.open(root, SIZE)
    assert isinstance(splits.train, FaceSyntheticsDataset) and isinstance(splits.val, FaceSyntheticsDataset)
    open_split(root, "test", SIZE)
    warnings = [r for r in cache_logs if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert f"facenas data prepare --dataset-dir {root} --img-size 48x32" in warnings[0].getMessage()
    assert warnings[0].__dict__["img_size"] == [48, 32]
    open_split(root, "train", (64, 64))  # another size of the same dataset warns again, once
    assert len([r for r in cache_logs if r.levelno == logging.WARNING]) == 2
    assert isinstance(open_split(root, "train", SIZE, cache=None), FaceSyntheticsDataset)
    assert len([r for r in cache_logs if r.levelno == logging.WARNING]) == 2  # None is a choice, not a miss
