"""``SNP Quantized Val. IOU``: its budget key, the opt-in config key and the emulation backend serving it."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from facenas.cli.main import app
from facenas.data.synth import generate_dataset
from facenas.domain import OBJECTIVES, Budget, Direction, EvalSpace, budget_key
from facenas.errors import Cancelled, ConfigError, DatasetError, InvalidInput
from facenas.latency import LatencyProtocol
from facenas.search.config import CPU_LATENCY, IOU, QUANTIZED_IOU, SNP_LATENCY, parse_search_config
from facenas.space.hgnet import Arch
from facenas.space.params import default_config_text
from facenas.workers.base import DetachedWork, parse_arch
from facenas.workers.snp_emulation import IOU_OBJECTIVE, OBJECTIVE, SnpEmulationBackend
from tests.unit.test_train import TINY_ARCH

SPACE = EvalSpace(18, 3, (64, 64))
BUDGET = Budget(steps=3, batch_size=4, learning_rate=1e-3, max_eval_batches=1)
ARCHID = "cd" * 20
# what these tests check does not depend on a quiet host: any CPU share and spread are accepted, so
# that they pass on a loaded machine (tests/unit/test_latency_contention.py tests the refusals)
FAST = LatencyProtocol(
    warmup_runs=2,
    warmup_min_seconds=0.0,
    rounds=3,
    runs_per_round=3,
    min_round_seconds=0.0,
    max_attempts=1,
    min_cpu_fraction=0.0,
    max_cv=10.0,
)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("snp-iou-data")
    generate_dataset(root, 24, size=64, seed=0)
    return root


@pytest.fixture(autouse=True)
def one_torch_thread() -> Iterator[None]:
    """Training is several times faster on a busy 2-core host with one thread (as latency_snp runs it)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def backend(dataset: Path) -> SnpEmulationBackend:
    return SnpEmulationBackend(dataset, FAST, calibration_images=4, val_fraction=0.2)


def _arch() -> Arch:
    return parse_arch(json.dumps(TINY_ARCH), ARCHID, SPACE)


# --- domain --------------------------------------------------------------------------------------


def test_quantized_iou_is_keyed_by_the_whole_training_budget() -> None:
    spec = OBJECTIVES[QUANTIZED_IOU]
    assert (spec.direction, spec.unit, spec.service, spec.trained) == (
        Direction.MAXIMIZE,
        "miou",
        "latency_snp",
        True,
    )
    assert (
        budget_key(QUANTIZED_IOU, BUDGET, (64, 64))
        == BUDGET.key((64, 64))
        == budget_key(IOU, BUDGET, (64, 64))
    )
    assert budget_key(QUANTIZED_IOU, Budget(steps=4), (64, 64)) != budget_key(QUANTIZED_IOU, BUDGET, (64, 64))
    assert budget_key(SNP_LATENCY, BUDGET, (64, 64)) == "img=64x64"
    assert [name for name, s in OBJECTIVES.items() if s.trained] == [IOU, QUANTIZED_IOU]


# --- config --------------------------------------------------------------------------------------


def _snp_config(target_block: str) -> str:
    text = default_config_text("snp")
    assert "    name: snp\n" in text
    return text.replace("    name: snp\n", target_block, 1)


def test_quantized_iou_is_opt_in_and_last() -> None:
    assert not parse_search_config(default_config_text("snp")).quantized_iou
    config = parse_search_config(_snp_config("    name: snp\n    quantized_iou: true\n"))
    assert config.quantized_iou
    assert [o.name for o in config.objectives] == [SNP_LATENCY, CPU_LATENCY, IOU, QUANTIZED_IOU]
    info = config.objectives[-1]
    assert info.direction == Direction.MAXIMIZE and info.unit == "miou" and info.constraint is None
    off = parse_search_config(_snp_config("    name: snp\n    quantized_iou: false\n"))
    assert [o.name for o in off.objectives] == [SNP_LATENCY, CPU_LATENCY, IOU]


def test_quantized_iou_on_the_cpu_target_is_a_config_problem() -> None:
    text = default_config_text("cpu").replace("    name: cpu", "    name: cpu\n    quantized_iou: true")
    with pytest.raises(ConfigError) as info:
        parse_search_config(text)
    assert any("search.target.quantized_iou" in p and "snp" in p for p in info.value.problems)
    with pytest.raises(ConfigError) as info:
        parse_search_config(_snp_config("    name: snp\n    quantized_iou: 'yes'\n"))
    assert any("must be true or false" in p for p in info.value.problems)


def test_embedded_demo_configs() -> None:
    snp = parse_search_config(default_config_text("demo_snp"))
    assert snp.target == "snp" and snp.quantized_iou and len(snp.objectives) == 4
    assert snp.img_size == (64, 64) and snp.budget.max_eval_batches == 4
    cpu = parse_search_config(default_config_text("demo"))
    assert cpu.target == "cpu" and [o.name for o in cpu.objectives] == [CPU_LATENCY, IOU]


def test_demo_rejects_config_with_target(tmp_path: Path) -> None:
    both = CliRunner().invoke(
        app, ["demo", "--workdir", str(tmp_path), "--config", "x.yaml", "--target", "snp"]
    )
    assert both.exit_code == 2 and "--config and --target" in both.output
    unknown = CliRunner().invoke(app, ["demo", "--workdir", str(tmp_path), "--target", "gpu"])
    assert unknown.exit_code == 2 and "cpu, snp" in unknown.output
    assert not (tmp_path / "data").exists()


# --- the emulation backend -----------------------------------------------------------------------


def test_targets_keep_latency_and_key_iou_by_dataset_split_and_quantization(
    backend: SnpEmulationBackend, dataset: Path, tmp_path: Path
) -> None:
    assert backend.objectives == (OBJECTIVE, IOU_OBJECTIVE)
    latency = backend.target(OBJECTIVE, SPACE)
    assert re.fullmatch(r"snp-emulation/[0-9a-f]+/t1/64x64", latency.key) and latency.emulated
    iou = backend.target(IOU_OBJECTIVE, SPACE)
    assert iou.emulated and "not a Snapdragon measurement" in iou.description
    assert iou.key.startswith(
        f"snp-emulation-iou/{backend.dataset_key}/val0.2-test0.1/qdq-quint8-qint8-minmax-"
    )
    assert backend.dataset_key.startswith(f"{dataset.name}-24-")
    assert "-cal4-" in iou.key
    other = tmp_path / "other"
    generate_dataset(other, 24, size=64, seed=1)
    keys = {
        SnpEmulationBackend(dataset, FAST, 4, val_fraction=0.1).target(IOU_OBJECTIVE, SPACE).key,
        SnpEmulationBackend(dataset, FAST, 8, val_fraction=0.2).target(IOU_OBJECTIVE, SPACE).key,
        SnpEmulationBackend(other, FAST, 4, val_fraction=0.2).target(IOU_OBJECTIVE, SPACE).key,
        iou.key,
    }
    assert len(keys) == 4
    assert SnpEmulationBackend(other, FAST, 4).target(OBJECTIVE, SPACE).key == latency.key


def test_bad_dataset_or_split_fails_at_construction(tmp_path: Path, dataset: Path) -> None:
    with pytest.raises(DatasetError):
        SnpEmulationBackend(tmp_path / "missing")
    with pytest.raises(DatasetError):
        SnpEmulationBackend(dataset, val_fraction=0.6, test_fraction=0.5)


def test_quantized_iou_of_the_partially_trained_model(backend: SnpEmulationBackend) -> None:
    result = backend.evaluate(_arch(), IOU_OBJECTIVE, SPACE, BUDGET, DetachedWork())
    d = result.details
    assert result.unit == "miou" and 0.0 <= result.value <= 1.0 and result.value == d["int8_miou"]
    assert d["emulated"] is True and d["backend"] == "onnxruntime-qdq-emulation"
    trained = d["partial_training"]
    assert trained["steps"] == 3 and trained["device"] == "cpu"
    # the fp32 ONNX export scores what partial training scored in torch, on the same images
    assert d["fp32_miou"] == pytest.approx(trained["val_miou"], abs=1e-3)
    assert d["fp32_miou_global"] == pytest.approx(trained["val_miou_global"], abs=1e-3)
    assert d["miou_drop"] == pytest.approx(d["fp32_miou"] - d["int8_miou"])
    assert 0.0 <= d["int8_miou_global"] <= 1.0
    assert d["eval_images"] == 5 and d["eval_batch_size"] == 16  # val0.2 of 24 frames, max 1 batch
    assert d["calibration_images"] == 4 and d["method"] == "minmax" and d["per_channel"] is False
    assert re.fullmatch(r"[0-9a-f]{64}", d["int8_sha256"])


def test_quantized_iou_is_deterministic(backend: SnpEmulationBackend, dataset: Path) -> None:
    first = backend.evaluate(_arch(), IOU_OBJECTIVE, SPACE, BUDGET, DetachedWork())
    fresh = SnpEmulationBackend(dataset, FAST, calibration_images=4, val_fraction=0.2)
    again = fresh.evaluate(_arch(), IOU_OBJECTIVE, SPACE, BUDGET, DetachedWork())
    assert again.value == first.value
    assert again.details["int8_sha256"] == first.details["int8_sha256"]
    assert again.details["fp32_miou"] == first.details["fp32_miou"]


def test_cancellation_stops_training(backend: SnpEmulationBackend) -> None:
    calls = 0

    def check_alive() -> None:
        nonlocal calls
        calls += 1
        if calls == 3:  # once before training, then after each step: cancelled after step 2
            raise Cancelled("caller went away")

    with pytest.raises(Cancelled):
        work = DetachedWork(check=check_alive)
        backend.evaluate(_arch(), IOU_OBJECTIVE, SPACE, Budget(steps=500, batch_size=4), work)
    assert calls == 3


def test_latency_objective_still_served(backend: SnpEmulationBackend) -> None:
    result = backend.evaluate(_arch(), OBJECTIVE, SPACE, BUDGET, DetachedWork())
    assert result.unit == "s" and result.value > 0 and result.details["emulated"] is True
    with pytest.raises(InvalidInput):
        backend.evaluate(_arch(), IOU, SPACE, BUDGET, DetachedWork())


def test_service_flags(monkeypatch: pytest.MonkeyPatch, dataset: Path) -> None:
    from services.latency_snp.server import parser

    args = parser().parse_args(["--dataset-dir", str(dataset)])
    assert (args.val_fraction, args.test_fraction) == (0.02, 0.10)
    monkeypatch.setenv("FACENAS_VAL_FRACTION", "0.2")
    args = parser().parse_args(["--dataset-dir", str(dataset), "--test-fraction", "0.05"])
    assert (args.val_fraction, args.test_fraction) == (0.2, 0.05)
