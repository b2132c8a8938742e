"""Steps shared by the CLI, the demo, the benches and the services: arch -> model -> ONNX -> figures."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from facenas.data.cache import open_split
from facenas.data.facesynth import FaceDataset
from facenas.errors import ArchNotEvaluable, FacenasError
from facenas.latency import LatencyProtocol, LatencyResult, measure_onnx_latency
from facenas.model import OnnxExport, build_model, export_onnx
from facenas.space.hgnet import Arch
from facenas.space.params import SearchSpaceParams
from facenas.space.spec import check_input_size
from facenas.train.loop import StepCallback, TrainingConfig, TrainResult, partial_train


def arch_to_onnx(
    arch: Arch, params: SearchSpaceParams, img_size: tuple[int, int] | None = None
) -> OnnxExport:
    """Build ``arch`` with fresh weights and export it for a (1, C, h, w) input."""
    size = img_size or params.img_size
    check_input_size(arch.spec, size)
    model = build_model(arch.spec, params.num_classes, params.in_channels)
    return export_onnx(model, size, params.in_channels)


def check_model_shapes(arch: Arch, params: SearchSpaceParams, img_size: tuple[int, int]) -> None:
    """ArchNotEvaluable unless ``arch`` builds and maps a (1, C, h, w) input to (1, classes, h, w) logits.

    Shapes only: the model runs on torch's meta device (no memory, no compute, no device of this host), so
    what fails here is the architecture's fault, found before any training step.
    """
    w, h = img_size
    expected = (1, params.num_classes, h, w)
    try:
        with torch.device("meta"):  # thread-local: other jobs' models are unaffected
            model = build_model(arch.spec, params.num_classes, params.in_channels)
            shape = tuple(model.eval()(torch.empty(1, params.in_channels, h, w)).shape)
    except FacenasError:
        raise
    except Exception as err:  # torch raises many types for a shape it cannot compute
        raise ArchNotEvaluable(
            f"architecture {arch.archid} cannot run on {w}x{h} inputs: {type(err).__name__}: {err}"
        ) from err
    if shape != expected:
        raise ArchNotEvaluable(
            f"architecture {arch.archid} outputs {shape} for {w}x{h} inputs, not {expected}"
        )


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

    train: FaceDataset
    val: FaceDataset

    @classmethod
    def open(
        cls,
        root: str | Path,
        img_size: tuple[int, int],
        val_fraction: float = 0.02,
        test_fraction: float = 0.10,
        cache: str | os.PathLike[str] | None = "auto",
    ) -> DatasetSplits:
        """Both splits through :func:`facenas.data.cache.open_split` (``cache``: a path, "auto" or None)."""

        def split(name: str) -> FaceDataset:
            return open_split(root, name, img_size, val_fraction, test_fraction, cache)

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
    check_model_shapes(arch, params, data.train.img_size)
    torch.manual_seed(config.seed)  # weight initialisation is part of the seeded recipe
    model = build_model(arch.spec, params.num_classes, params.in_channels)
    return model, partial_train(model, data.train, data.val, config, params.num_classes, on_step)
