"""Steps shared by the CLI, the demo, the benches and the services: arch -> model -> ONNX -> figures."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from facenas.data.facesynth import FaceSyntheticsDataset
from facenas.latency import LatencyProtocol, LatencyResult, measure_onnx_latency
from facenas.model import OnnxExport, build_model, export_onnx
from facenas.model.hgnet import check_input_size
from facenas.space.hgnet import Arch
from facenas.space.params import SearchSpaceParams
from facenas.train.loop import StepCallback, TrainingConfig, TrainResult, partial_train


def arch_to_onnx(
    arch: Arch, params: SearchSpaceParams, img_size: tuple[int, int] | None = None
) -> OnnxExport:
    """Build ``arch`` with fresh weights and export it for a (1, C, h, w) input."""
    size = img_size or params.img_size
    check_input_size(arch.spec, size)
    model = build_model(arch.spec, params.num_classes, params.in_channels)
    return export_onnx(model, size, params.in_channels)


def measure_arch_latency(
    arch: Arch,
    params: SearchSpaceParams,
    protocol: LatencyProtocol | None = None,
    img_size: tuple[int, int] | None = None,
) -> LatencyResult:
    """CPU ONNX Runtime latency of ``arch`` at ``img_size`` (default: the space's image size)."""
    export = arch_to_onnx(arch, params, img_size)
    return measure_onnx_latency(export.model_bytes, protocol=protocol or LatencyProtocol())


@dataclass(frozen=True)
class DatasetSplits:
    """Train and validation splits of one dataset directory at one image size."""

    train: FaceSyntheticsDataset
    val: FaceSyntheticsDataset

    @classmethod
    def open(
        cls,
        root: str | Path,
        img_size: tuple[int, int],
        val_fraction: float = 0.02,
        test_fraction: float = 0.10,
    ) -> DatasetSplits:
        def split(name: str) -> FaceSyntheticsDataset:
            return FaceSyntheticsDataset(root, name, img_size, val_fraction, test_fraction)

        return cls(split("train"), split("val"))


def partial_train_arch(
    arch: Arch,
    params: SearchSpaceParams,
    data: DatasetSplits,
    config: TrainingConfig,
    on_step: StepCallback | None = None,
) -> TrainResult:
    """Archai's partial-training objective for ``arch`` on ``data``."""
    return partial_train_model(arch, params, data, config, on_step)[1]


def partial_train_model(
    arch: Arch,
    params: SearchSpaceParams,
    data: DatasetSplits,
    config: TrainingConfig,
    on_step: StepCallback | None = None,
) -> tuple[torch.nn.Module, TrainResult]:
    """:func:`partial_train_arch`, also returning the trained model (e.g. to export it)."""
    check_input_size(arch.spec, data.train.img_size)
    torch.manual_seed(config.seed)  # weight initialisation is part of the seeded recipe
    model = build_model(arch.spec, params.num_classes, params.in_channels)
    return model, partial_train(model, data.train, data.val, config, params.num_classes, on_step)
