"""Face Synthetics loader: splits, tensors, label mapping and every DatasetError."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from facenas.data import IGNORE_INDEX, NUM_CLASSES, FaceSyntheticsDataset, generate_dataset, split_indices
from facenas.errors import DatasetError

N_FRAMES = 20


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synth")
    generate_dataset(root, N_FRAMES, size=64, seed=0)
    return root


def _write_frame(root: Path, frame: str, image: np.ndarray, mask: np.ndarray) -> None:
    root.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(root / f"{frame}.png")
    Image.fromarray(mask).save(root / f"{frame}_seg.png")


def _rgb(h: int, w: int) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)


# --- splits -----------------------------------------------------------------------------------------------


def test_split_indices_full_dataset() -> None:
    splits = split_indices(100_000)
    assert splits.train == range(0, 88_000)
    assert splits.val == range(88_000, 90_000)
    assert splits.test == range(90_000, 100_000)


@pytest.mark.parametrize("n", [*range(0, 30), 99, 1000, 12_345])
def test_split_indices_partition_in_order(n: int) -> None:
    train, val, test = split_indices(n)
    assert [*train, *val, *test] == list(range(n))
    if n >= 3:
        assert min(len(train), len(val), len(test)) >= 1


def test_split_indices_zero_fraction_gives_empty_split() -> None:
    assert len(split_indices(50, val_fraction=0.0).val) == 0


@pytest.mark.parametrize(
    ("val", "test", "message"),
    [(-0.1, 0.1, "val_fraction"), (0.1, 1.0, "test_fraction"), (0.5, 0.5, "must be < 1")],
)
def test_split_indices_rejects_bad_fractions(val: float, test: float, message: str) -> None:
    with pytest.raises(DatasetError, match=message):
        split_indices(100, val, test)


def test_splits_of_generated_set(synth_root: Path) -> None:
    ids = {
        s: FaceSyntheticsDataset(synth_root, s, (32, 32), val_fraction=0.1, test_fraction=0.2).frame_ids
        for s in ("train", "val", "test")
    }
    every = FaceSyntheticsDataset(synth_root, split="all", img_size=(32, 32)).frame_ids
    assert [len(ids[s]) for s in ("train", "val", "test")] == [14, 2, 4]
    assert ids["train"] + ids["val"] + ids["test"] == every == [f"{i:06d}" for i in range(N_FRAMES)]


def test_limit_takes_the_first_frames(synth_root: Path) -> None:
    ds = FaceSyntheticsDataset(synth_root, split="all", img_size=(32, 32), limit=5)
    assert len(ds) == 5 and ds.frame_ids == [f"{i:06d}" for i in range(5)]


# --- tensors ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("size", "shape"), [((128, 128), (128, 128)), ((96, 48), (48, 96))])
def test_item_shapes_dtypes_and_ranges(
    synth_root: Path, size: tuple[int, int], shape: tuple[int, int]
) -> None:
    ds = FaceSyntheticsDataset(synth_root, split="all", img_size=size, limit=3)
    for image, mask in (ds[i] for i in range(len(ds))):
        assert image.shape == (3, *shape) and image.dtype == torch.float32
        assert mask.shape == shape and mask.dtype == torch.int64
        assert float(image.min()) >= 0.0 and float(image.max()) <= 1.0
        assert int(mask.min()) >= 0 and int(mask.max()) < NUM_CLASSES


def test_dataloader_batches(synth_root: Path) -> None:
    ds = FaceSyntheticsDataset(synth_root, split="train", img_size=(48, 32))
    images, masks = next(iter(DataLoader(ds, batch_size=4)))
    assert images.shape == (4, 3, 32, 48) and masks.shape == (4, 32, 48)


def test_native_size_is_plain_division_and_facewear_is_ignored(tmp_path: Path) -> None:
    image = _rgb(8, 8)
    mask = np.array([[0, 5, 17, 18, 255, 1, 2, 3]] * 8, dtype=np.uint8)
    _write_frame(tmp_path, "000000", image, mask)
    got_image, got_mask = FaceSyntheticsDataset(tmp_path, split="all", img_size=(8, 8))[0]
    assert torch.equal(got_image, torch.from_numpy(image).permute(2, 0, 1).float() / 255)
    expected = torch.tensor([[0, 5, 17, IGNORE_INDEX, IGNORE_INDEX, 1, 2, 3]] * 8)
    assert torch.equal(got_mask, expected)


def test_mask_resize_is_nearest(tmp_path: Path) -> None:
    mask = np.random.default_rng(1).choice(np.array([0, 3, 9, 18], dtype=np.uint8), (32, 48))
    _write_frame(tmp_path, "000000", _rgb(32, 48), mask)
    _, got = FaceSyntheticsDataset(tmp_path, split="all", img_size=(20, 13))[0]
    assert set(got.flatten().tolist()) <= {0, 3, 9, IGNORE_INDEX}


def test_discovery_ignores_other_files_and_sorts_numerically(tmp_path: Path) -> None:
    for frame in ("10", "9", "000011"):
        _write_frame(tmp_path, frame, _rgb(4, 4), np.zeros((4, 4), np.uint8))
    (tmp_path / "000009_ldmks.txt").write_text("0 0\n")
    (tmp_path / "notes.png").write_bytes(b"")
    ds = FaceSyntheticsDataset(tmp_path, split="all", img_size=(4, 4))
    assert ds.frame_ids == ["9", "10", "000011"]


# --- errors -----------------------------------------------------------------------------------------------


def test_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="dataset directory not found"):
        FaceSyntheticsDataset(tmp_path / "nope")


def test_no_frames(tmp_path: Path) -> None:
    (tmp_path / "readme.txt").write_text("empty")
    with pytest.raises(DatasetError, match="no frames"):
        FaceSyntheticsDataset(tmp_path)


def test_image_without_mask(tmp_path: Path) -> None:
    _write_frame(tmp_path, "000000", _rgb(4, 4), np.zeros((4, 4), np.uint8))
    Image.fromarray(_rgb(4, 4)).save(tmp_path / "000001.png")
    with pytest.raises(DatasetError, match=r"1 image\(s\) .* have no _seg.png mask: 000001.png"):
        FaceSyntheticsDataset(tmp_path, split="all")


def test_mask_without_image(tmp_path: Path) -> None:
    _write_frame(tmp_path, "000000", _rgb(4, 4), np.zeros((4, 4), np.uint8))
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "000002_seg.png")
    with pytest.raises(DatasetError, match=r"1 mask\(s\) .* have no image: 000002_seg.png"):
        FaceSyntheticsDataset(tmp_path, split="all")


def test_unreadable_file(tmp_path: Path) -> None:
    _write_frame(tmp_path, "000000", _rgb(4, 4), np.zeros((4, 4), np.uint8))
    (tmp_path / "000000.png").write_bytes(b"not a png")
    ds = FaceSyntheticsDataset(tmp_path, split="all", img_size=(4, 4))
    with pytest.raises(DatasetError, match=r"cannot read .*000000\.png"):
        ds[0]


def test_truncated_file(tmp_path: Path) -> None:
    _write_frame(tmp_path, "000000", _rgb(64, 64), np.zeros((64, 64), np.uint8))
    path = tmp_path / "000000.png"
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(DatasetError, match="cannot read"):
        FaceSyntheticsDataset(tmp_path, split="all", img_size=(8, 8))[0]


def test_size_mismatch(tmp_path: Path) -> None:
    _write_frame(tmp_path, "000000", _rgb(8, 8), np.zeros((6, 8), np.uint8))
    with pytest.raises(DatasetError, match=r"size mismatch in frame 000000: image \(8, 8\), mask \(8, 6\)"):
        FaceSyntheticsDataset(tmp_path, split="all", img_size=(8, 8))[0]


def test_mask_must_be_single_channel(tmp_path: Path) -> None:
    _write_frame(tmp_path, "000000", _rgb(8, 8), _rgb(8, 8))
    with pytest.raises(DatasetError, match="8-bit single-channel label map, got mode RGB"):
        FaceSyntheticsDataset(tmp_path, split="all", img_size=(8, 8))[0]


def test_unknown_split(synth_root: Path) -> None:
    with pytest.raises(
        DatasetError, match="unknown split 'validation'; expected one of train, val, test, all"
    ):
        FaceSyntheticsDataset(synth_root, split="validation")


@pytest.mark.parametrize("size", [(0, 10), (10,), (10, 10, 3), (1.5, 2), "ab", 256, (True, 4)])
def test_bad_img_size(synth_root: Path, size: object) -> None:
    with pytest.raises(DatasetError, match="img_size must be"):
        FaceSyntheticsDataset(synth_root, img_size=size)  # type: ignore[arg-type]


@pytest.mark.parametrize("limit", [0, -3, 2.5])
def test_bad_limit(synth_root: Path, limit: object) -> None:
    with pytest.raises(DatasetError, match="limit must be"):
        FaceSyntheticsDataset(synth_root, limit=limit)  # type: ignore[arg-type]


def test_empty_split(tmp_path: Path) -> None:
    _write_frame(tmp_path, "000000", _rgb(4, 4), np.zeros((4, 4), np.uint8))
    with pytest.raises(DatasetError, match=r"split 'val' .* is empty"):
        FaceSyntheticsDataset(tmp_path, split="val")
