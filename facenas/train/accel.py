"""How a training run uses its device: DataLoader workers, pinned memory and, on CUDA only,
``channels_last``, automatic mixed precision and cuDNN autotuning.

On a CPU device nothing changes from plain fp32 training: no autocast, no scaler, plain copies, and the
automatic loader runs in the training process (its threads already use every core). Every CUDA-only
step lives here, behind :attr:`Accel.cuda`.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch import nn

from facenas.cpus import usable_cpus
from facenas.errors import ConfigError

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
AUTO_WORKERS = -1
MAX_AUTO_WORKERS = 4


def auto_loader_workers(device: torch.device, cpus: int | None = None) -> int:
    """Automatic DataLoader workers: 0 on CPU; on CUDA one per two usable CPUs, between 1 and 4."""
    if device.type != "cuda":
        return 0
    cpus = usable_cpus() if cpus is None else cpus
    return max(1, min(MAX_AUTO_WORKERS, cpus // 2))


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto`` -> fp32 on CPU, bf16 on CUDA where supported, else fp16; ConfigError if unusable."""
    if device.type != "cuda":
        if precision in ("bf16", "fp16"):
            raise ConfigError([f"precision: {precision} needs a CUDA device; use auto or fp32 on {device}"])
        return "fp32"
    bf16 = torch.cuda.is_bf16_supported()
    if precision == "auto":
        return "bf16" if bf16 else "fp16"
    if precision == "bf16" and not bf16:
        raise ConfigError(["precision: bf16 is not supported by this GPU; use auto, fp16 or fp32"])
    return precision


@dataclass(frozen=True)
class Accel:
    """A resolved device, precision (fp32, bf16 or fp16) and number of DataLoader workers."""

    device: torch.device
    precision: str = "fp32"
    loader_workers: int = 0

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    @property
    def pin_memory(self) -> bool:
        return self.cuda

    def setup(self, model: nn.Module) -> nn.Module:
        """Move ``model`` to the device (``channels_last`` and cuDNN autotuning on CUDA)."""
        model.to(self.device)
        if self.cuda:
            torch.backends.cudnn.benchmark = True
            model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # not in the stubs
        return model

    def release(self, model: nn.Module) -> nn.Module:
        """Back to the default memory format (for export and checkpoints read elsewhere)."""
        if self.cuda:
            model.to(memory_format=torch.contiguous_format)  # type: ignore[call-overload]  # not in the stubs
        return model

    def batch(self, images: torch.Tensor, masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A batch on the device; asynchronous from pinned memory and ``channels_last`` on CUDA."""
        if not self.cuda:
            return images.to(self.device), masks.to(self.device)
        images = images.to(self.device, non_blocking=True, memory_format=torch.channels_last)
        return images, masks.to(self.device, non_blocking=True)

    def autocast(self) -> contextlib.AbstractContextManager[object]:
        """Mixed precision for the forward pass and the loss (a no-op in fp32)."""
        if self.precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
        return torch.autocast(device_type="cuda", dtype=dtype)

    def grad_scaler(self) -> torch.amp.GradScaler | None:
        """A loss scaler for fp16 (bf16 and fp32 need none)."""
        return torch.amp.GradScaler("cuda") if self.precision == "fp16" else None


def resolve_accel(device: torch.device, num_workers: int, precision: str) -> Accel:
    """The :class:`Accel` of a training config on ``device`` (``num_workers`` -1 = automatic)."""
    workers = auto_loader_workers(device) if num_workers == AUTO_WORKERS else num_workers
    return Accel(device, resolve_precision(precision, device), workers)
