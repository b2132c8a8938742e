"""Metrics, partial training and final training."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch

from facenas.data.cache import CachedFaceDataset, prepare_cache
from facenas.errors import ConfigError, InvalidInput
from facenas.pipeline import DatasetSplits, partial_train_arch
from facenas.space import HgnetSearchSpace, SearchSpaceParams
from facenas.train import TrainingConfig, confusion_matrix, miou_archai, miou_global
from facenas.train.accel import Accel, auto_loader_workers, resolve_accel
from facenas.train.final import train_final
from facenas.train.metrics import SegmentationMeter, class_iou_archai

SMALL = SearchSpaceParams(img_size=(64, 64))


def _config_list(slots: list[dict[str, Any]], repeat: int | None = None) -> dict[str, Any]:
    """Archai's ``config_list`` envelope around ``slots``."""
    return {
        "_config_type": "config_list",
        "_share_arch": False,
        "_repeat_times": len(slots) if repeat is None else repeat,
        "_configs": {str(i): slot for i, slot in enumerate(slots)},
    }


def _layers(count: int) -> dict[str, Any]:
    return {"layers": _config_list([{"op": "conv3x3"}], repeat=count)}


#: A small fixed architecture (3 downsample blocks, one conv each): fast to train on 2 CPU cores.
TINY_ARCH: dict[str, Any] = {
    "stem_stride": 2,
    "base_ch": 16,
    "hourglasses": _config_list(
        [
            {
                "downsample_blocks": _config_list(
                    [{**_layers(1), "ch_expansion_factor": 1.5} for _ in range(3)]
                ),
                "skip_blocks": _config_list([_layers(0) for _ in range(2)]),
                "upsample_blocks": _config_list([_layers(1) for _ in range(2)]),
            }
        ]
    ),
    "post_upsample_layers": _config_list([{"op": "conv3x3"}]),
}


def test_confusion_matrix_ignores_255() -> None:
    target = torch.tensor([[0, 1, 255], [2, 2, 1]])
    pred = torch.tensor([[0, 2, 1], [2, 2, 1]])
    cm = confusion_matrix(pred, target, 3)
    assert cm.tolist() == [[1, 0, 0], [0, 1, 1], [0, 0, 2]]


def test_archai_miou_counts_absent_classes_as_one() -> None:
    cm = torch.zeros(4, 4, dtype=torch.int64)
    cm[0, 0] = 10
    cm[1, 0] = 10  # class 1 always predicted as 0
    iou = class_iou_archai(cm)
    assert iou[0] == pytest.approx(0.5)
    assert iou[1] == pytest.approx(0.0, abs=1e-6)
    assert iou[2] == pytest.approx(1.0) and iou[3] == pytest.approx(1.0)
    assert miou_archai(cm) == pytest.approx(2.5 / 4)
    assert miou_global(cm) == pytest.approx(0.25)  # absent classes do not count


def test_meter_archai_mean_is_over_batches() -> None:
    meter = SegmentationMeter(2)
    perfect = torch.tensor([[[[5.0]], [[0.0]]]])  # predicts class 0
    meter.update(perfect, torch.tensor([[[0]]]))
    meter.update(perfect, torch.tensor([[[1]]]))
    assert meter.batch_mious == [pytest.approx(1.0), pytest.approx(0.0, abs=1e-6)]
    assert meter.archai_miou == pytest.approx(0.5)
    assert meter.global_miou == pytest.approx(0.25)


def test_training_config_validation_lists_every_problem() -> None:
    with pytest.raises(ConfigError) as info:
        TrainingConfig(batch_size=0, learning_rate=-1, device="tpu")
    assert len(info.value.problems) == 3
    assert TrainingConfig(steps=7).total_steps(100) == 7
    assert TrainingConfig(epochs=0.5).total_steps(10) == 5


@pytest.mark.slow
def test_partial_training_lowers_loss_and_raises_miou(synth_dataset: Path) -> None:
    space = HgnetSearchSpace(SMALL)
    arch = space.from_document(TINY_ARCH)
    data = DatasetSplits.open(synth_dataset, (64, 64), val_fraction=0.2)
    untrained = partial_train_arch(
        arch, SMALL, data, TrainingConfig(learning_rate=1e-9, steps=1, batch_size=8)
    )
    trained = partial_train_arch(
        arch, SMALL, data, TrainingConfig(learning_rate=3e-3, steps=60, batch_size=8)
    )
    assert trained.last_loss < 0.7 * trained.first_loss
    assert trained.val_miou_global > untrained.val_miou_global + 0.05
    assert trained.val_miou > untrained.val_miou
    assert trained.steps == 60 and trained.device == "cpu"


def test_partial_training_is_deterministic_per_seed(synth_dataset: Path) -> None:
    arch = HgnetSearchSpace(SMALL).from_document(TINY_ARCH)
    data = DatasetSplits.open(synth_dataset, (64, 64), val_fraction=0.2)
    config = TrainingConfig(steps=3, batch_size=4, max_eval_batches=1)
    torch.manual_seed(1)  # the global RNG state before a run must not matter
    first = partial_train_arch(arch, SMALL, data, config)
    torch.manual_seed(2)
    second = partial_train_arch(arch, SMALL, data, config)
    assert first.losses == second.losses
    assert first.val_miou == second.val_miou


def test_final_training_resumes_and_exports(synth_dataset: Path, tmp_path: Path) -> None:
    space = HgnetSearchSpace(SMALL)
    arch = space.from_document(TINY_ARCH)
    data = DatasetSplits.open(synth_dataset, (64, 64), val_fraction=0.2)
    config = TrainingConfig(batch_size=16, learning_rate=1e-3, max_eval_batches=1)
    out = tmp_path / "final"
    first = train_final(arch, SMALL, data.train, data.val, out, 1, config)
    assert first.resumed_from == 0 and len(first.history) == 1
    second = train_final(arch, SMALL, data.train, data.val, out, 2, config)
    assert second.resumed_from == 1
    assert [r["epoch"] for r in second.history] == [1, 2]
    assert (out / "checkpoints" / "epoch_002.ckpt").exists()
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["archid"] == arch.archid and math.isfinite(metrics["history"][-1]["val_miou"])
    assert (out / "model.onnx").stat().st_size > 0 and (out / "model.ckpt").exists()
    assert space.load(out / "arch.json").archid == arch.archid
    other = space.random_sample()
    with pytest.raises(InvalidInput, match="belongs to architecture"):
        train_final(other, SMALL, data.train, data.val, out, 3, config)


# --- loader workers, precision and the figures partial training reports ------------------------------------


def test_loader_and_precision_config_validation() -> None:
    with pytest.raises(ConfigError) as info:
        TrainingConfig(num_workers=-2, precision="fp8")
    assert info.value.problems == [
        "num_workers: -2 must be -1 (automatic) or in [0, 64]",
        "precision: 'fp8' must be one of auto, fp32, bf16, fp16",
    ]
    assert (TrainingConfig().num_workers, TrainingConfig().precision) == (-1, "auto")
    assert TrainingConfig(num_workers=64, precision="bf16").precision == "bf16"  # checked on the device


def test_cpu_runs_in_fp32_in_process_unless_asked() -> None:
    cpu = torch.device("cpu")
    accel = resolve_accel(cpu, -1, "auto")
    assert accel == Accel(cpu, "fp32", 0)
    assert not accel.pin_memory and accel.grad_scaler() is None
    assert resolve_accel(cpu, 3, "fp32").loader_workers == 3
    for precision in ("bf16", "fp16"):
        with pytest.raises(ConfigError, match=f"precision: {precision} needs a CUDA device"):
            resolve_accel(cpu, 0, precision)
    cuda = torch.device("cuda")
    assert [auto_loader_workers(cuda, cpus) for cpus in (1, 2, 6, 64)] == [1, 1, 3, 4]
    assert auto_loader_workers(cpu, 64) == 0


def test_partial_training_reports_loader_figures(synth_dataset: Path) -> None:
    arch = HgnetSearchSpace(SMALL).from_document(TINY_ARCH)
    data = DatasetSplits.open(synth_dataset, (64, 64), val_fraction=0.2)
    steps: list[tuple[int, int, float]] = []
    result = partial_train_arch(
        arch,
        SMALL,
        data,
        TrainingConfig(steps=3, batch_size=4, max_eval_batches=1),
        lambda *a: steps.append(a),
    )
    assert [(s, t) for s, t, _ in steps] == [(1, 3), (2, 3), (3, 3)]
    assert [loss for *_, loss in steps] == result.losses
    assert result.precision == "fp32" and result.loader_workers == 0
    assert 0 < result.data_wait_seconds < result.train_seconds
    assert result.images_per_second == pytest.approx(12 / result.train_seconds, rel=0.2)
    data_out = json.loads(json.dumps(result.to_dict()))
    assert {"data_wait_seconds", "images_per_second", "precision", "loader_workers"} <= set(data_out)
    assert "losses" not in data_out and data_out["val_miou"] == result.val_miou


def test_cpu_numerics_do_not_depend_on_loader_settings(synth_dataset: Path) -> None:
    arch = HgnetSearchSpace(SMALL).from_document(TINY_ARCH)
    data = DatasetSplits.open(synth_dataset, (64, 64), val_fraction=0.2)
    recipe = {"steps": 4, "batch_size": 4, "max_eval_batches": 2}
    plain = partial_train_arch(arch, SMALL, data, TrainingConfig(**recipe, num_workers=0, precision="fp32"))
    auto = partial_train_arch(arch, SMALL, data, TrainingConfig(**recipe))
    workers = partial_train_arch(arch, SMALL, data, TrainingConfig(**recipe, num_workers=2))
    assert plain.losses == auto.losses == workers.losses
    assert plain.val_miou == auto.val_miou == workers.val_miou
    assert workers.loader_workers == 2


def test_training_on_the_cache_matches_training_on_pngs(synth_dataset: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    prepare_cache(synth_dataset, (64, 64), out=cache, workers=1)
    arch = HgnetSearchSpace(SMALL).from_document(TINY_ARCH)
    config = TrainingConfig(steps=5, batch_size=4, max_eval_batches=2)
    cached = DatasetSplits.open(synth_dataset, (64, 64), val_fraction=0.2, cache=cache)
    assert isinstance(cached.train, CachedFaceDataset)
    pngs = DatasetSplits.open(synth_dataset, (64, 64), val_fraction=0.2, cache=None)
    on_cache = partial_train_arch(arch, SMALL, cached, config)
    on_pngs = partial_train_arch(arch, SMALL, pngs, config)
    # 64x64 frames at 64x64: no resize, so the inputs and the run are identical
    assert on_cache.losses == on_pngs.losses and on_cache.val_miou == on_pngs.val_miou
