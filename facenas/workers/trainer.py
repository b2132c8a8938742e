"""Partial training as an objective: Archai's ``Partial Training Val. IOU``."""

from __future__ import annotations

import hashlib
from pathlib import Path

from facenas.data.facesynth import discover_frames
from facenas.domain import Budget, EvalSpace
from facenas.errors import DatasetError
from facenas.pipeline import DatasetSplits, partial_train_arch
from facenas.space.hgnet import Arch
from facenas.train.loop import TrainingConfig, resolve_device
from facenas.workers.base import CheckAlive, EvaluationBackend, Measurement, TargetInfo, space_params_for

OBJECTIVE = "Partial Training Val. IOU"


class TrainerBackend(EvaluationBackend):
    """Trains on the dataset at ``dataset_dir`` (GPU when present) and reports validation mIOU."""

    objectives = (OBJECTIVE,)

    def __init__(
        self,
        dataset_dir: Path,
        device: str = "auto",
        val_fraction: float = 0.02,
        test_fraction: float = 0.10,
        capacity: int = 1,
    ) -> None:
        self.dataset_dir = Path(dataset_dir)
        frames = discover_frames(self.dataset_dir)  # fails early on a bad directory
        if len(frames) < 3:
            raise DatasetError(f"{self.dataset_dir} has {len(frames)} frames; at least 3 are needed")
        digest = hashlib.sha1("\n".join(frames).encode()).hexdigest()[:10]
        self.dataset_key = f"{self.dataset_dir.name}-{len(frames)}-{digest}"
        self.device = device
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction
        self.capacity = capacity
        self._splits: dict[tuple[int, int], DatasetSplits] = {}

    def target(self, objective: str, space: EvalSpace) -> TargetInfo:
        split = f"val{self.val_fraction:g}-test{self.test_fraction:g}"
        return TargetInfo(
            key=f"train/{self.dataset_key}/{split}",
            description=f"partial training on {self.dataset_dir} ({resolve_device(self.device)})",
        )

    def evaluate(
        self, arch: Arch, objective: str, space: EvalSpace, budget: Budget, check_alive: CheckAlive
    ) -> Measurement:
        data = self._data(space.img_size)
        config = TrainingConfig(
            batch_size=budget.batch_size,
            learning_rate=budget.learning_rate,
            epochs=budget.epochs,
            steps=budget.steps or None,
            max_eval_batches=budget.max_eval_batches or None,
            seed=budget.seed,
            device=self.device,
        )
        result = partial_train_arch(
            arch, space_params_for(space), data, config, on_step=lambda *_: check_alive()
        )
        return Measurement(result.val_miou, "miou", result.to_dict())

    def _data(self, img_size: tuple[int, int]) -> DatasetSplits:
        if img_size not in self._splits:
            self._splits[img_size] = DatasetSplits.open(
                self.dataset_dir, img_size, self.val_fraction, self.test_fraction
            )
        return self._splits[img_size]
