"""Segmentation metrics: Archai's per-batch mIOU and the sounder global-confusion mIOU."""

from __future__ import annotations

import torch

from facenas.data.classes import IGNORE_INDEX

EPS = 1e-7


def confusion_matrix(
    pred: torch.Tensor, target: torch.Tensor, num_classes: int, ignore_index: int = IGNORE_INDEX
) -> torch.Tensor:
    """``cm[t, p]`` = number of non-ignored pixels of true class ``t`` predicted as ``p`` (int64)."""
    valid = target != ignore_index
    t = target[valid].to(torch.int64)
    p = pred[valid].to(torch.int64)
    index = t * num_classes + p
    counts = torch.bincount(index, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes).cpu()


def class_iou_archai(cm: torch.Tensor) -> torch.Tensor:
    """Archai's class IoU ``(tp + 1e-7) / (tp + fp + fn + 1e-7)``: a class absent everywhere scores 1."""
    cm = cm.to(torch.float64)
    tp = cm.diag()
    fp = cm.sum(dim=0) - tp
    fn = cm.sum(dim=1) - tp
    return (tp + EPS) / (tp + fp + fn + EPS)


def miou_archai(cm: torch.Tensor) -> float:
    """Mean of Archai's class IoU over all classes (background included)."""
    return float(class_iou_archai(cm).mean())


def miou_global(cm: torch.Tensor) -> float:
    """Mean IoU over the classes that occur in the targets or predictions of ``cm``.

    Computed on a confusion matrix accumulated over the whole split, so it does not depend on batch
    size and does not reward classes that never occur; NaN when ``cm`` is empty.
    """
    cm = cm.to(torch.float64)
    tp = cm.diag()
    union = cm.sum(dim=0) + cm.sum(dim=1) - tp
    present = union > 0
    if not bool(present.any()):
        return float("nan")
    return float((tp[present] / union[present]).mean())


class SegmentationMeter:
    """Accumulates per-batch (Archai) and global mIOU for logits/target batches."""

    def __init__(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.total = torch.zeros(num_classes, num_classes, dtype=torch.int64)
        self.batch_mious: list[float] = []

    def update(self, logits: torch.Tensor, target: torch.Tensor) -> None:
        cm = confusion_matrix(logits.argmax(dim=1), target, self.num_classes)
        self.total += cm
        self.batch_mious.append(miou_archai(cm))

    @property
    def archai_miou(self) -> float:
        """Archai's reported value: the mean of per-batch mIOUs."""
        if not self.batch_mious:
            return float("nan")
        return sum(self.batch_mious) / len(self.batch_mious)

    @property
    def global_miou(self) -> float:
        return miou_global(self.total)

    def pixel_accuracy(self) -> float:
        total = int(self.total.sum())
        return float(self.total.diag().sum()) / total if total else float("nan")
