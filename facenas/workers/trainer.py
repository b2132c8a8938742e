"""Partial training as an objective: Archai's ``Partial Training Val. IOU``."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from facenas.domain import Budget, EvalSpace
from facenas.errors import InvalidInput
from facenas.pipeline import DatasetSplits, partial_train_arch
from facenas.space.hgnet import Arch
from facenas.train.final import FinalTrainingResult, train_final
from facenas.train.loop import TrainingConfig, resolve_device
from facenas.workers.base import (
    CheckAlive,
    EvaluationBackend,
    Measurement,
    TargetInfo,
    dataset_key,
    space_params_for,
    split_key,
)

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
        self.dataset_key = dataset_key(self.dataset_dir)  # fails early on a bad directory
        self.device = device
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction
        self.capacity = capacity
        self._splits: dict[tuple[int, int], DatasetSplits] = {}

    def target(self, objective: str, space: EvalSpace) -> TargetInfo:
        split = split_key(self.val_fraction, self.test_fraction)
        return TargetInfo(
            key=f"train/{self.dataset_key}/{split}",
            description=f"partial training on {self.dataset_dir} ({resolve_device(self.device)})",
        )

    def evaluate(
        self, arch: Arch, objective: str, space: EvalSpace, budget: Budget, check_alive: CheckAlive
    ) -> Measurement:
        data = self._data(space.img_size)
        config = self.training_config(budget)
        result = partial_train_arch(
            arch, space_params_for(space), data, config, on_step=lambda *_: check_alive()
        )
        return Measurement(result.val_miou, "miou", result.to_dict())

    def training_config(self, budget: Budget) -> TrainingConfig:
        """The training recipe of ``budget`` on this backend's device."""
        return training_config(budget, self.device)

    def _data(self, img_size: tuple[int, int]) -> DatasetSplits:
        if img_size not in self._splits:
            self._splits[img_size] = DatasetSplits.open(
                self.dataset_dir, img_size, self.val_fraction, self.test_fraction
            )
        return self._splits[img_size]


def training_config(budget: Budget, device: str) -> TrainingConfig:
    """Partial training's recipe for ``budget`` on ``device`` (shared by every backend that trains)."""
    return TrainingConfig(
        batch_size=budget.batch_size,
        learning_rate=budget.learning_rate,
        epochs=budget.epochs,
        steps=budget.steps or None,
        max_eval_batches=budget.max_eval_batches or None,
        seed=budget.seed,
        device=device,
    )


_OUTPUT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def full_train(
    backend: TrainerBackend,
    arch: Arch,
    space: EvalSpace,
    budget: Budget,
    output_dir: Path,
    on_epoch: Callable[[dict[str, Any]], None],
    check_alive: CheckAlive,
) -> FinalTrainingResult:
    """Final training of ``arch`` on the backend's dataset into ``output_dir`` (resumable)."""
    epochs = int(budget.epochs)
    if budget.steps or epochs != budget.epochs or not 1 <= epochs <= 10_000:
        raise InvalidInput(f"budget: full training takes whole epochs in [1, 10000], got {budget}")
    data = backend._data(space.img_size)
    config = backend.training_config(budget)
    params = space_params_for(space)
    return train_final(
        arch, params, data.train, data.val, output_dir, epochs, config, on_epoch, lambda *_: check_alive()
    )


def output_path(root: Path, name: str) -> Path:
    """``root/name``, refusing names that could escape ``root``."""
    if not _OUTPUT_NAME.match(name) or name in {".", ".."}:
        raise InvalidInput(
            f"output_name: {name!r} must be 1-128 characters of letters, digits, '.', '_', '-'"
        )
    return root / name
