"""Procedural Face Synthetics generator: layout, determinism, class coverage."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facenas.data import NUM_CLASSES, frame_rng, generate_dataset, render_face
from facenas.errors import DatasetError

SIZE = 64


def _files(directory: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(directory.iterdir())}


@pytest.fixture(scope="module")
def coverage_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("coverage")
    generate_dataset(out, 50, size=96, seed=0)
    return out


def test_render_face_shapes_and_dtypes() -> None:
    image, labels = render_face(frame_rng(0, 0), SIZE)
    assert image.shape == (SIZE, SIZE, 3) and image.dtype == np.uint8
    assert labels.shape == (SIZE, SIZE) and labels.dtype == np.uint8
    assert int(labels.max()) < NUM_CLASSES


def test_render_face_rejects_tiny_size() -> None:
    with pytest.raises(DatasetError, match="size must be >= 32"):
        render_face(frame_rng(0, 0), 16)


def test_layout_and_returned_paths(tmp_path: Path) -> None:
    paths = generate_dataset(tmp_path, 3, size=SIZE, seed=1, start=7)
    assert paths == [tmp_path / f"{i:06d}.png" for i in (7, 8, 9)]
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [
        "000007.png",
        "000007_seg.png",
        "000008.png",
        "000008_seg.png",
        "000009.png",
        "000009_seg.png",
    ]
    with Image.open(paths[0]) as image, Image.open(tmp_path / "000007_seg.png") as mask:
        assert (image.mode, image.size) == ("RGB", (SIZE, SIZE))
        assert (mask.mode, mask.size) == ("L", (SIZE, SIZE))


def test_same_seed_is_byte_identical_and_seeds_differ(tmp_path: Path) -> None:
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    generate_dataset(a, 4, size=SIZE, seed=5)
    generate_dataset(b, 4, size=SIZE, seed=5)
    generate_dataset(c, 4, size=SIZE, seed=6)
    assert _files(a) == _files(b)
    files_a, files_c = _files(a), _files(c)
    assert all(files_a[name] != files_c[name] for name in files_a if not name.endswith("_seg.png"))


def test_frames_differ_within_a_dataset(tmp_path: Path) -> None:
    generate_dataset(tmp_path, 2, size=SIZE, seed=0)
    assert (tmp_path / "000000.png").read_bytes() != (tmp_path / "000001.png").read_bytes()


def test_split_runs_and_workers_match_one_run(tmp_path: Path) -> None:
    whole, parts, pooled = tmp_path / "whole", tmp_path / "parts", tmp_path / "pooled"
    generate_dataset(whole, 10, size=SIZE, seed=3)
    generate_dataset(parts, 6, size=SIZE, seed=3, start=0)
    generate_dataset(parts, 4, size=SIZE, seed=3, start=6)
    generate_dataset(pooled, 10, size=SIZE, seed=3, workers=2)
    assert _files(whole) == _files(parts) == _files(pooled)


def test_every_class_appears_and_only_valid_labels(coverage_set: Path) -> None:
    seen: set[int] = set()
    for path in sorted(coverage_set.glob("*_seg.png")):
        with Image.open(path) as mask:
            seen |= set(np.unique(np.asarray(mask)).tolist())
    assert seen == set(range(NUM_CLASSES))


def test_optional_parts_are_not_everywhere(coverage_set: Path) -> None:
    present = {14: 0, 16: 0, 17: 0}  # beard, glasses, headwear
    masks = sorted(coverage_set.glob("*_seg.png"))
    for path in masks:
        with Image.open(path) as mask:
            labels = set(np.unique(np.asarray(mask)).tolist())
        for label in present:
            present[label] += label in labels
    assert all(0 < count < len(masks) for count in present.values()), present


def _nearest_mean_accuracy(image_path: Path, mask_path: Path) -> float:
    """Pixel accuracy of classifying each pixel by the closest per-class mean colour of its own image."""
    with Image.open(image_path) as image, Image.open(mask_path) as mask:
        rgb = np.asarray(image, dtype=np.float32).reshape(-1, 3)
        labels = np.asarray(mask).ravel()
    classes = np.unique(labels)
    means = np.stack([rgb[labels == c].mean(0) for c in classes])
    predicted = classes[np.argmin(((rgb[:, None] - means[None]) ** 2).sum(-1), axis=1)]
    return float((predicted == labels).mean())


def test_colours_correlate_with_labels_but_not_trivially(coverage_set: Path) -> None:
    accuracies = [
        _nearest_mean_accuracy(path, path.with_name(path.stem + "_seg.png"))
        for path in sorted(coverage_set.glob("[0-9]*[0-9].png"))[:20]
    ]
    assert 0.35 < float(np.median(accuracies)) < 0.95


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"count": -1}, "count must be >= 0"),
        ({"size": 8}, "size must be >= 32"),
        ({"seed": -2}, "seed must be >= 0"),
        ({"start": -1}, "start must be >= 0"),
        ({"workers": 0}, "workers >= 1"),
    ],
)
def test_generate_rejects_bad_arguments(tmp_path: Path, kwargs: dict[str, int], message: str) -> None:
    args = {"count": 1, "size": SIZE, **kwargs}
    with pytest.raises(DatasetError, match=message):
        generate_dataset(tmp_path, **args)
