"""Archai's partial-training recipe (SPEC section 3) with a budget in epochs or steps, seeded."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from facenas.data.classes import IGNORE_INDEX
from facenas.errors import ConfigError
from facenas.train.accel import AUTO_WORKERS, PRECISIONS, Accel, resolve_accel
from facenas.train.metrics import SegmentationMeter

StepCallback = Callable[[int, int, float], None]
Batch = tuple[torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class TrainingConfig:
    """Archai's recipe: Adam lr 2e-4, no schedule, batch 16, 1 epoch, CE(ignore 255), no augmentation.

    Exactly one budget applies: ``steps`` when given, otherwise ``epochs`` (fractions allowed).
    ``num_workers``: DataLoader worker processes, -1 = automatic (0 on CPU, a few on CUDA).
    ``precision``: ``auto`` (fp32 on CPU; bf16 on CUDA where supported, else fp16), fp32, bf16 or fp16.
    """

    batch_size: int = 16
    learning_rate: float = 2e-4
    epochs: float = 1.0
    steps: int | None = None
    eval_batch_size: int = 16
    max_eval_batches: int | None = None
    seed: int = 0
    device: str = "auto"
    num_workers: int = AUTO_WORKERS
    precision: str = "auto"

    def __post_init__(self) -> None:
        problems = []
        if not 1 <= self.batch_size <= 4096:
            problems.append(f"batch_size: {self.batch_size} must be in [1, 4096]")
        if not 1 <= self.eval_batch_size <= 4096:
            problems.append(f"eval_batch_size: {self.eval_batch_size} must be in [1, 4096]")
        if not (math.isfinite(self.learning_rate) and 0 < self.learning_rate <= 1):
            problems.append(f"learning_rate: {self.learning_rate} must be in (0, 1]")
        if self.steps is None and not (math.isfinite(self.epochs) and 0 < self.epochs <= 10_000):
            problems.append(f"epochs: {self.epochs} must be in (0, 10000]")
        if self.steps is not None and not 1 <= self.steps <= 10_000_000:
            problems.append(f"steps: {self.steps} must be in [1, 10000000]")
        if self.max_eval_batches is not None and self.max_eval_batches < 1:
            problems.append(f"max_eval_batches: {self.max_eval_batches} must be >= 1")
        if self.device not in {"auto", "cpu", "cuda"} and not self.device.startswith("cuda:"):
            problems.append(f"device: {self.device!r} must be auto, cpu, cuda or cuda:N")
        if not AUTO_WORKERS <= self.num_workers <= 64:
            problems.append(f"num_workers: {self.num_workers} must be -1 (automatic) or in [0, 64]")
        if self.precision not in PRECISIONS:
            problems.append(f"precision: {self.precision!r} must be one of {', '.join(PRECISIONS)}")
        if problems:
            raise ConfigError(problems)

    def total_steps(self, batches_per_epoch: int) -> int:
        if self.steps is not None:
            return self.steps
        return max(1, math.ceil(self.epochs * batches_per_epoch))


@dataclass(frozen=True)
class TrainResult:
    """What partial training measured; mIOUs are on the validation split."""

    val_miou: float  # Archai's mean of per-batch mIOUs
    val_miou_global: float  # mIOU of the global confusion matrix
    first_loss: float
    last_loss: float
    steps: int
    epochs: float
    train_seconds: float
    eval_seconds: float
    device: str
    data_wait_seconds: float = 0.0  # of train_seconds, spent waiting for the next batch
    images_per_second: float = 0.0  # training images per second of the step loop
    precision: str = "fp32"
    loader_workers: int = 0
    losses: list[float] = field(repr=False, default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("losses")
        return out


def resolve_device(name: str = "auto") -> torch.device:
    """CUDA when present (for ``auto``), else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def make_loader(
    dataset: Dataset[Batch], batch_size: int, shuffle: bool, seed: int, workers: int, pin_memory: bool = False
) -> DataLoader[Batch]:
    """Seeded batches; ``workers`` processes stay up across passes."""
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        generator=generator,
        num_workers=workers,
        pin_memory=pin_memory,
        persistent_workers=workers > 0,
    )


def cycle(loader: DataLoader[Batch]) -> Iterator[Batch]:
    """Batches forever, reshuffling each pass."""
    while True:
        yield from loader


@dataclass(frozen=True)
class StepLog:
    """What :func:`train_steps` did: per-step losses, images seen, time waiting for data and in all."""

    losses: list[float]
    images: int
    data_wait_seconds: float
    seconds: float


def train_steps(
    model: nn.Module,
    loader: DataLoader[Batch],
    optimizer: torch.optim.Optimizer,
    steps: int,
    device: torch.device,
    on_step: StepCallback | None = None,
    accel: Accel | None = None,
    scaler: torch.amp.GradScaler | None = None,
) -> StepLog:
    """Run ``steps`` optimisation steps (``accel``: precision and copies; ``scaler`` for fp16)."""
    accel = accel or Accel(device)
    criterion = nn.CrossEntropyLoss(ignore_index=IGNORE_INDEX)
    model.train()
    losses: list[float] = []
    images_seen, waited = 0, 0.0
    batches = cycle(loader)
    began = time.perf_counter()
    for step in range(steps):
        fetch = time.perf_counter()
        images, masks = next(batches)
        waited += time.perf_counter() - fetch
        images, masks = accel.batch(images, masks)
        images_seen += images.shape[0]
        optimizer.zero_grad(set_to_none=True)
        with accel.autocast():
            loss = criterion(model(images), masks)
        if scaler is None:
            loss.backward()
            optimizer.step()
        else:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        losses.append(float(loss.detach()))
        if on_step is not None:
            on_step(step + 1, steps, losses[-1])
    return StepLog(losses, images_seen, waited, time.perf_counter() - began)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: DataLoader[Batch],
    num_classes: int,
    device: torch.device,
    max_batches: int | None = None,
    accel: Accel | None = None,
) -> SegmentationMeter:
    """Per-batch and global mIOU of ``model`` over ``loader``."""
    accel = accel or Accel(device)
    model.eval()
    meter = SegmentationMeter(num_classes)
    for index, batch in enumerate(loader):
        if max_batches is not None and index >= max_batches:
            break
        images, masks = accel.batch(*batch)
        with accel.autocast():
            logits = model(images)
        meter.update(logits, masks)
    return meter


def partial_train(
    model: nn.Module,
    train_set: Dataset[Batch],
    val_set: Dataset[Batch],
    config: TrainingConfig,
    num_classes: int,
    on_step: StepCallback | None = None,
) -> TrainResult:
    """Train ``model`` for the configured budget from a fixed seed, then evaluate on ``val_set``."""
    torch.manual_seed(config.seed)
    accel = resolve_accel(resolve_device(config.device), config.num_workers, config.precision)
    accel.setup(model)
    workers, pin = accel.loader_workers, accel.pin_memory
    loader = make_loader(train_set, config.batch_size, True, config.seed, workers, pin)
    if len(loader) == 0:
        raise ConfigError(["training split is empty"])
    steps = config.total_steps(len(loader))
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    start = time.perf_counter()
    log = train_steps(model, loader, optimizer, steps, accel.device, on_step, accel, accel.grad_scaler())
    trained = time.perf_counter()
    val_loader = make_loader(val_set, config.eval_batch_size, False, config.seed, workers, pin)
    meter = evaluate(model, val_loader, num_classes, accel.device, config.max_eval_batches, accel)
    accel.release(model)
    losses = log.losses
    window = max(1, min(10, len(losses) // 5))
    return TrainResult(
        val_miou=meter.archai_miou,
        val_miou_global=meter.global_miou,
        first_loss=sum(losses[:window]) / window,
        last_loss=sum(losses[-window:]) / window,
        steps=steps,
        epochs=steps / len(loader),
        train_seconds=trained - start,
        eval_seconds=time.perf_counter() - trained,
        device=str(accel.device),
        data_wait_seconds=log.data_wait_seconds,
        images_per_second=log.images / log.seconds if log.seconds > 0 else 0.0,
        precision=accel.precision,
        loader_workers=workers,
        losses=losses,
    )
