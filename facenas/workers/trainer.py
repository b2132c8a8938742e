"""Partial training as an objective: Archai's ``Partial Training Val. IOU``."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from facenas.data.cache import cache_for
from facenas.domain import Budget, EvalSpace
from facenas.errors import ConfigError, InvalidInput
from facenas.hostgate import quiet_gate
from facenas.pipeline import DatasetSplits, partial_train_arch
from facenas.space.hgnet import Arch
from facenas.train.final import FinalTrainingResult, train_final
from facenas.train.loop import TrainingConfig
from facenas.workers.base import (
    CheckAlive,
    EvaluationBackend,
    Measurement,
    TargetInfo,
    Work,
    dataset_key,
    space_params_for,
    split_key,
    step_reporter,
)

OBJECTIVE = "Partial Training Val. IOU"


class TrainerBackend(EvaluationBackend):
    """Trains on the dataset at ``dataset_dir`` and reports validation mIOU; each evaluation trains on
    the device of its job slot (``training_devices`` lists the devices ``device`` names)."""

    objectives = (OBJECTIVE,)

    def __init__(
        self,
        dataset_dir: Path,
        device: str = "auto",
        val_fraction: float = 0.02,
        test_fraction: float = 0.10,
        capacity: int = 1,
        data_cache: str = "auto",
        loader_workers: int = -1,
        precision: str = "auto",
    ) -> None:
        self.dataset_dir = Path(dataset_dir)
        self.dataset_key = dataset_key(self.dataset_dir)  # fails early on a bad directory
        self.device = device
        self.devices = training_devices(device)
        self.data_cache = data_cache
        self.loader_workers = loader_workers
        self.precision = precision
        for each in self.devices:  # a precision this host cannot train with fails at start-up
            training_config(Budget(), each, loader_workers, precision)
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction
        self.capacity = capacity
        self._splits: dict[tuple[int, int], DatasetSplits] = {}
        self._splits_lock = threading.Lock()

    def target(self, objective: str, space: EvalSpace) -> TargetInfo:
        split = split_key(self.val_fraction, self.test_fraction)
        return TargetInfo(
            key=f"train/{self.dataset_key}/{split}",
            description=f"partial training on {self.dataset_dir} ({', '.join(self.devices)})",
        )

    def evaluate(
        self, arch: Arch, objective: str, space: EvalSpace, budget: Budget, work: Work
    ) -> Measurement:
        work.report("load")
        data = self._data(space.img_size)
        config = training_config(budget, work.device, self.loader_workers, self.precision)
        # CPU latency on this host is never measured while a step runs: each step may pause for one
        with quiet_gate().working() as gate:
            on_step = step_reporter(work, between_steps=gate.yield_point)
            result = partial_train_arch(arch, space_params_for(space), data, config, on_step)
        return Measurement(result.val_miou, "miou", result.to_dict())

    def training_config(self, budget: Budget) -> TrainingConfig:
        """The training recipe of ``budget`` on this backend's first device (final training)."""
        return training_config(budget, self.devices[0], self.loader_workers, self.precision)

    def _data(self, img_size: tuple[int, int]) -> DatasetSplits:
        with self._splits_lock:
            if img_size not in self._splits:
                cache = cache_for(self.data_cache, self.dataset_dir, img_size)
                self._splits[img_size] = DatasetSplits.open(
                    self.dataset_dir, img_size, self.val_fraction, self.test_fraction, cache
                )
            return self._splits[img_size]


def training_devices(device: str) -> list[str]:
    """The devices ``device`` names: ``auto`` is every CUDA GPU (else the CPU), ``cuda`` every GPU,
    ``cuda:0,cuda:1`` those, ``cpu`` the CPU. ConfigError for what this host cannot do."""
    import torch

    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if device == "auto":
        return [f"cuda:{i}" for i in range(gpus)] or ["cpu"]
    if device == "cuda":
        if not gpus:
            raise ConfigError(["--device cuda: no CUDA GPU is visible on this host"])
        return [f"cuda:{i}" for i in range(gpus)]
    names = [d.strip() for d in device.split(",") if d.strip()]
    problems = []
    for name in names:
        index = name.removeprefix("cuda:")
        if name == "cpu":
            continue
        if not (name.startswith("cuda:") and index.isdigit()):
            problems.append(f"--device: {name!r} must be auto, cpu, cuda or cuda:N[,cuda:M...]")
        elif int(index) >= gpus:
            problems.append(f"--device: {name} is not visible on this host ({gpus} CUDA GPU(s))")
    if problems or not names:
        raise ConfigError(problems or ["--device: empty"])
    return list(dict.fromkeys(names))


def training_config(
    budget: Budget, device: str, loader_workers: int = -1, precision: str = "auto"
) -> TrainingConfig:
    """Partial training's recipe for ``budget`` on ``device`` (shared by every backend that trains); the
    loader workers (-1: automatic) and the precision (``auto``: fp32 on CPU, bf16/fp16 AMP on CUDA) are the
    host's, not the recipe's."""
    return TrainingConfig(
        batch_size=budget.batch_size,
        learning_rate=budget.learning_rate,
        epochs=budget.epochs,
        steps=budget.steps or None,
        max_eval_batches=budget.max_eval_batches or None,
        seed=budget.seed,
        device=device,
        num_workers=loader_workers,
        precision=precision,
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
