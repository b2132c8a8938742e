"""The CUDA paths of training (channels_last, AMP, pinned memory, loader workers); skipped without a GPU."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn

from facenas.pipeline import DatasetSplits, partial_train_arch
from facenas.space import HgnetSearchSpace
from facenas.train import TrainingConfig
from facenas.train.accel import auto_loader_workers, resolve_accel
from facenas.train.final import train_final
from tests.unit.test_train import SMALL, TINY_ARCH

CUDA = torch.cuda.is_available()
BF16 = CUDA and torch.cuda.is_bf16_supported()

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")]


def test_accel_moves_models_and_batches_channels_last() -> None:
    accel = resolve_accel(torch.device("cuda"), -1, "auto")
    assert accel.precision == ("bf16" if BF16 else "fp16") and accel.pin_memory
    assert accel.loader_workers == auto_loader_workers(torch.device("cuda")) >= 1
    model = accel.setup(nn.Conv2d(3, 4, 3))
    assert torch.backends.cudnn.benchmark
    assert model.weight.is_cuda and model.weight.is_contiguous(memory_format=torch.channels_last)
    images, masks = accel.batch(torch.rand(2, 3, 8, 8).pin_memory(), torch.zeros(2, 8, 8).long().pin_memory())
    torch.cuda.synchronize()
    assert images.is_cuda and images.is_contiguous(memory_format=torch.channels_last) and masks.is_cuda
    with accel.autocast():
        assert model(images).dtype == (torch.bfloat16 if BF16 else torch.float16)
    accel.release(model)
    assert model.weight.is_contiguous()


@pytest.mark.parametrize("precision", ["auto", "fp32", "fp16", *(["bf16"] if BF16 else [])])
def test_partial_training_on_cuda(synth_dataset: Path, precision: str) -> None:
    arch = HgnetSearchSpace(SMALL).from_document(TINY_ARCH)
    data = DatasetSplits.open(synth_dataset, (64, 64), val_fraction=0.2)
    config = TrainingConfig(steps=40, batch_size=8, learning_rate=3e-3, device="cuda", precision=precision)
    result = partial_train_arch(arch, SMALL, data, config)
    expected = {"auto": "bf16" if BF16 else "fp16"}.get(precision, precision)
    assert result.device.startswith("cuda") and result.precision == expected
    assert result.loader_workers == auto_loader_workers(torch.device("cuda"))
    assert all(math.isfinite(loss) for loss in result.losses) and result.last_loss < result.first_loss
    assert 0 <= result.data_wait_seconds < result.train_seconds and result.images_per_second > 0
    assert math.isfinite(result.val_miou)


def test_final_training_on_cuda_resumes_with_fp16(synth_dataset: Path, tmp_path: Path) -> None:
    space = HgnetSearchSpace(SMALL)
    arch = space.from_document(TINY_ARCH)
    data = DatasetSplits.open(synth_dataset, (64, 64), val_fraction=0.2)
    config = TrainingConfig(
        batch_size=16, learning_rate=1e-3, max_eval_batches=1, device="cuda", precision="fp16"
    )
    train_final(arch, SMALL, data.train, data.val, tmp_path, 1, config)
    second = train_final(arch, SMALL, data.train, data.val, tmp_path, 2, config)
    assert second.resumed_from == 1 and (tmp_path / "model.onnx").stat().st_size > 0
    assert torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)["scaler"] is not None
