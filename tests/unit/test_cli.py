"""The ``facenas`` CLI: JSON contracts and error handling."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from facenas.cli.main import app
from tests.conftest import SMALLEST_SNP
from tests.unit.test_train import TINY_ARCH

runner = CliRunner()


def _json(args: list[str]) -> dict[str, object]:
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    assert len(lines) == 1, result.stdout
    data: dict[str, object] = json.loads(lines[0])
    return data


def test_arch_info_json() -> None:
    info = _json(["arch", "info", str(SMALLEST_SNP), "--json"])
    assert info["archid"] == SMALLEST_SNP.stem
    assert info["params"] == 666_049
    assert info["in_search_space"] is True
    assert isinstance(info["macs"], int) and info["macs"] > 0


def test_arch_info_human_readable() -> None:
    result = runner.invoke(app, ["arch", "info", str(SMALLEST_SNP)])
    assert result.exit_code == 0
    assert "666,049" in result.stdout and "hourglass 0" in result.stdout


def test_arch_info_bad_file_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(SMALLEST_SNP.read_text().replace('"conv3x3"', '"conv4x4"', 1))
    result = runner.invoke(app, ["arch", "info", str(bad)])
    assert result.exit_code == 2
    assert "unknown op 'conv4x4'" in result.stderr
    assert "layers._configs.0.op" in result.stderr
    assert "Traceback" not in result.output


def test_arch_sample_writes_distinct_files(tmp_path: Path) -> None:
    data = _json(["arch", "sample", "--n", "4", "--out", str(tmp_path), "--seed", "3", "--json"])
    archs = data["archs"]
    assert isinstance(archs, list) and len(archs) == 4
    files = sorted(p.stem for p in tmp_path.glob("*.json"))
    assert files == sorted(a["archid"] for a in archs)


def test_data_synth_and_train(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    result = runner.invoke(app, ["data", "synth", "--out", str(data_dir), "--count", "12", "--size", "64"])
    assert result.exit_code == 0, result.output
    assert len(list(data_dir.glob("*_seg.png"))) == 12
    arch = tmp_path / "arch.json"
    arch.write_text(json.dumps(TINY_ARCH))
    out = _json(
        [
            "train", str(arch), "--dataset-dir", str(data_dir), "--output-dir", str(tmp_path / "out"),
            "--epochs", "1", "--img-size", "64", "--batch-size", "4", "--val-fraction", "0.2", "--json",
        ]
    )  # fmt: skip
    assert out["epochs_done"] == 1
    assert (tmp_path / "out" / "model.onnx").exists()


def test_latency_json(tmp_path: Path) -> None:
    arch = tmp_path / "arch.json"
    arch.write_text(json.dumps(TINY_ARCH))
    data = _json(["latency", str(arch), "--img-size", "64", "--rounds", "3", "--json"])
    assert data["archid"] == json.loads(json.dumps(data))["archid"]
    median, cv = data["median_s"], data["cv"]
    assert isinstance(median, float) and median > 0
    assert isinstance(cv, float) and cv >= 0
    assert data["intra_op_threads"] == 1


def test_latency_rejects_incompatible_size() -> None:
    result = runner.invoke(app, ["latency", str(SMALLEST_SNP), "--img-size", "100"])
    assert result.exit_code == 2
    assert "multiples of 32" in result.stderr


def test_module_entry_point_runs() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "facenas", "arch", "info", str(SMALLEST_SNP), "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert json.loads(proc.stdout)["archid"] == SMALLEST_SNP.stem
