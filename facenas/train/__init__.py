"""Partial training (the search objective), evaluation metrics and final training."""

from facenas.train.loop import TrainingConfig, TrainResult, evaluate, partial_train, resolve_device
from facenas.train.metrics import SegmentationMeter, confusion_matrix, miou_archai, miou_global

__all__ = [
    "SegmentationMeter",
    "TrainResult",
    "TrainingConfig",
    "confusion_matrix",
    "evaluate",
    "miou_archai",
    "miou_global",
    "partial_train",
    "resolve_device",
]
