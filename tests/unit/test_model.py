"""Model builder and ONNX export."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
import torch

from facenas.errors import ExportError, InvalidInput
from facenas.model import build_model, export_onnx, verify_onnx
from facenas.space import HgnetSearchSpace
from facenas.space.spec import check_input_size
from tests.conftest import SMALLEST_SNP


@pytest.fixture(scope="module")
def space() -> HgnetSearchSpace:
    return HgnetSearchSpace(seed=0)


def _trainable(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def test_built_model_has_the_published_parameter_count(space: HgnetSearchSpace) -> None:
    model = build_model(space.load(SMALLEST_SNP).spec)
    assert _trainable(model) == 666_049


def test_analytic_count_matches_torch_for_every_published_arch(
    space: HgnetSearchSpace, snp_arch_files: list[Path]
) -> None:
    for path in snp_arch_files:
        arch = space.load(path)
        assert _trainable(build_model(arch.spec)) == space.num_parameters(arch), path.stem


def test_output_is_logits_at_input_resolution(space: HgnetSearchSpace) -> None:
    for _ in range(3):
        arch = space.random_sample()
        model = build_model(arch.spec, num_classes=18).eval()
        with torch.no_grad():
            out = model(torch.rand(2, 3, 64, 96))
        assert out.shape == (2, 18, 64, 96)


def test_state_dict_keys_follow_archai_module_names(space: HgnetSearchSpace) -> None:
    keys = build_model(space.load(SMALLEST_SNP).spec).state_dict().keys()
    assert "stem_conv.conv.weight" in keys
    assert "hgs.0.down_blocks.0.0.bn.running_mean" in keys
    assert "hgs.0.final_conv.bias" in keys and "classifier.weight" in keys


def test_input_size_must_match_downsampling(space: HgnetSearchSpace) -> None:
    spec = space.load(SMALLEST_SNP).spec
    check_input_size(spec, (64, 64))
    with pytest.raises(InvalidInput, match="multiples of 32"):
        check_input_size(spec, (100, 64))


def _randomise_batchnorm(model: torch.nn.Module) -> None:
    generator = torch.Generator().manual_seed(0)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.copy_(torch.rand(module.running_mean.shape, generator=generator) - 0.5)
            module.running_var.copy_(torch.rand(module.running_var.shape, generator=generator) + 0.5)


def test_onnx_export_matches_torch(space: HgnetSearchSpace) -> None:
    for arch in (space.load(SMALLEST_SNP), space.random_sample()):
        model = build_model(arch.spec)
        _randomise_batchnorm(model)
        export = export_onnx(model, (128, 96))
        proto = onnx.load_from_string(export.model_bytes)
        assert [i.name for i in proto.graph.input] == ["input_0"]
        assert {o.domain: o.version for o in proto.opset_import}[""] == 17
        assert export.input_shape == (1, 3, 96, 128)
        assert verify_onnx(model, export) < 1e-4


def test_old_opsets_are_refused(space: HgnetSearchSpace) -> None:
    model = build_model(space.load(SMALLEST_SNP).spec)
    with pytest.raises(ExportError, match="opset 11"):
        export_onnx(model, (64, 64), opset=11)


def test_verify_detects_a_diverging_graph(space: HgnetSearchSpace) -> None:
    model = build_model(space.load(SMALLEST_SNP).spec)
    export = export_onnx(model, (64, 64))
    with torch.no_grad():
        model.classifier.bias.add_(1.0)
    with pytest.raises(ExportError, match="differs"):
        verify_onnx(model, export)
