"""Face Synthetics data: the label set, the real-dataset loader and a procedural generator in its layout."""

from facenas.data.classes import CLASS_NAMES, IGNORE_INDEX, NUM_CLASSES
from facenas.data.facesynth import FaceSyntheticsDataset, Splits, discover_frames, split_indices
from facenas.data.synth import frame_rng, generate_dataset, render_face

__all__ = [
    "CLASS_NAMES",
    "IGNORE_INDEX",
    "NUM_CLASSES",
    "FaceSyntheticsDataset",
    "Splits",
    "discover_frames",
    "frame_rng",
    "generate_dataset",
    "render_face",
    "split_indices",
]
