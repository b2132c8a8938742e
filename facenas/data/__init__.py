"""Face Synthetics data: labels, the PNG loader, its decoded cache and a procedural generator."""

from facenas.data.cache import CachedFaceDataset, default_cache_dir, open_split, prepare_cache
from facenas.data.classes import CLASS_NAMES, IGNORE_INDEX, NUM_CLASSES
from facenas.data.facesynth import FaceDataset, FaceSyntheticsDataset, Splits, discover_frames, split_indices
from facenas.data.synth import frame_rng, generate_dataset, render_face

__all__ = [
    "CLASS_NAMES",
    "IGNORE_INDEX",
    "NUM_CLASSES",
    "CachedFaceDataset",
    "FaceDataset",
    "FaceSyntheticsDataset",
    "Splits",
    "default_cache_dir",
    "discover_frames",
    "frame_rng",
    "generate_dataset",
    "open_split",
    "prepare_cache",
    "render_face",
    "split_indices",
]
