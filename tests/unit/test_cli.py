"""The ``facenas`` CLI: JSON contracts and error handling."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from facenas.cli.main import app
from facenas.latency import contention
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


@pytest.mark.slow
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


def test_data_prepare_json_then_nothing_to_do(synth_dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "cache"
    args = ["data", "prepare", "--dataset-dir", str(synth_dataset), "--img-size", "48x32", "--out", str(out)]
    first = _json([*args, "--workers", "2", "--json"])
    assert first["frames"] == first["decoded"] == 60 and first["complete"] is True
    assert first["img_size"] == [48, 32] and first["cache_dir"] == str(out)
    assert first["bytes"] == (out / "images.npy").stat().st_size + (out / "masks.npy").stat().st_size
    again = _json([*args, "--json"])
    assert again["decoded"] == 0 and again["frames"] == 60
    result = runner.invoke(app, args)
    assert result.exit_code == 0 and "nothing to do" in " ".join(result.stdout.split())


def test_data_prepare_default_location_and_square_size(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    assert (
        runner.invoke(
            app, ["data", "synth", "--out", str(data_dir), "--count", "4", "--size", "64"]
        ).exit_code
        == 0
    )
    result = runner.invoke(app, ["data", "prepare", "--dataset-dir", str(data_dir), "--img-size", "32"])
    assert result.exit_code == 0, result.output
    printed = " ".join(result.stdout.split())  # rich wraps long lines
    assert "4 frames at 32x32" in printed and "decoded 4 in" in printed
    assert (data_dir / ".facenas-cache" / "32x32" / "manifest.json").is_file()


def test_data_prepare_errors_are_one_line(tmp_path: Path) -> None:
    missing = runner.invoke(
        app, ["data", "prepare", "--dataset-dir", str(tmp_path / "no"), "--img-size", "256"]
    )
    assert missing.exit_code == 2 and "dataset directory not found" in " ".join(missing.stderr.split())
    assert "Traceback" not in missing.output
    bad_size = runner.invoke(app, ["data", "prepare", "--dataset-dir", str(tmp_path), "--img-size", "big"])
    assert bad_size.exit_code == 2
    assert "--img-size: 'big' must be S or WxH" in " ".join(bad_size.stderr.split())


def test_latency_json(tmp_path: Path) -> None:
    arch = tmp_path / "arch.json"
    arch.write_text(json.dumps(TINY_ARCH))
    data = _json(["latency", str(arch), "--img-size", "64", "--rounds", "3", "--json"])
    assert data["archid"] == json.loads(json.dumps(data))["archid"]
    median, cv = data["median_s"], data["cv"]
    assert isinstance(median, float) and median > 0
    assert isinstance(cv, float) and cv >= 0
    assert data["intra_op_threads"] == 1


@pytest.mark.slow
def test_latency_prints_host_facts() -> None:
    result = runner.invoke(app, ["latency", str(SMALLEST_SNP), "--img-size", "64", "--rounds", "3"])
    assert result.exit_code == 0, result.output
    facts = " ".join(result.stdout.split())  # rich wraps long lines
    assert "host: cpu_fraction" in facts and "load" in facts
    assert ": stable" in facts or "UNSTABLE: " in facts


@pytest.mark.slow
def test_latency_require_stable_refuses_a_busy_host(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(contention, "_thread_cpu_ns", lambda: 0)  # the measuring thread never got a CPU
    args = ["latency", str(SMALLEST_SNP), "--img-size", "64", "--rounds", "2"]
    result = runner.invoke(app, [*args, "--require-stable", "--json"])
    assert result.exit_code == 2 and result.stdout == ""
    assert "host busy: cpu_fraction 0.00 < 0.90" in " ".join(result.stderr.split())
    shown = runner.invoke(app, args)  # without the flag the figure is shown, marked unstable
    assert shown.exit_code == 0 and "UNSTABLE: cpu_fraction 0.00 < 0.90" in " ".join(shown.stdout.split())


def test_latency_rejects_incompatible_size() -> None:
    result = runner.invoke(app, ["latency", str(SMALLEST_SNP), "--img-size", "100"])
    assert result.exit_code == 2
    assert "multiples of 32" in result.stderr


@pytest.mark.integration
def test_module_entry_point_runs() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "facenas", "arch", "info", str(SMALLEST_SNP), "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert json.loads(proc.stdout)["archid"] == SMALLEST_SNP.stem


def test_watch_shows_one_bar_per_running_evaluation() -> None:
    from rich.console import Console
    from rich.progress import Progress

    from facenas.cli.search import RunningBars

    progress = Progress(console=Console(file=io.StringIO()))
    bars = RunningBars(progress)
    training = {
        "archid": "ab" * 20,
        "objective": "Partial Training Val. IOU",
        "replica": "10.0.0.7:50061",
        "state": "running",
        "phase": "train",
        "step": 2750,
        "total": 5500,
        "loss": 0.8123,
        "eta_s": 185.0,
        "attached": True,
    }
    queued = {
        "archid": "cd" * 20,
        "objective": "CPU ONNX Latency (s)",
        "state": "queued",
        "queue_position": 2,
    }
    bars.show([training, queued])
    shown = {task.description: task for task in progress.tasks}
    task = shown["  abababab training @ 10.0.0.7:50061"]
    assert (task.completed, task.total) == (2750, 5500)
    assert task.fields["note"] == "train loss 0.812 ETA 3m05s (joined)"
    assert shown["  cdcdcdcd cpu latency @ "].fields["note"] == "queued (#2)"
    bars.show([queued])  # the training finished
    assert [t.description for t in progress.tasks] == ["  cdcdcdcd cpu latency @ "]


def test_watch_counts_cached_evaluations_and_the_summary_shows_them() -> None:
    from rich.console import Console
    from rich.progress import Progress

    from facenas.cli.search import _advance, _print_summary
    from facenas.v1 import searcher_pb2, store_pb2

    progress = Progress(console=Console(file=io.StringIO()))
    tasks = tuple(progress.add_task(name, total=10, note="") for name in ("it", "cand", "eval"))
    payload = {"archid": "ab" * 20, "objective": "CPU ONNX Latency (s)", "value": 0.0123, "cache_hits": 2}
    _advance(progress, tasks, "evaluation_cached", payload)
    evaluations = progress.tasks[2]
    assert evaluations.completed == 1
    assert evaluations.fields["note"] == "CPU ONNX Latency (s) = 0.0123 (cached; 2 cache hits)"

    text = io.StringIO()
    shown = Console(file=text, width=200)
    summary = searcher_pb2.SearchSummary(
        search=store_pb2.SearchRecord(search_id="s1", name="n", status=store_pb2.SEARCH_STATUS_COMPLETED),
        evaluations_done=4,
        candidates=4,
        cache_hits=6,
    )
    _print_summary(summary, json_out=False, display=shown)
    assert "4/4 candidates evaluated (6 evaluations from the store's cache)" in text.getvalue()


def _demo_config(tmp_path: Path, *typos: tuple[str, str]) -> Path:
    from facenas.space.params import default_config_text

    text = default_config_text("demo")
    for old, new in typos:
        assert old in text
        text = text.replace(old, new)
    path = tmp_path / "search.yaml"
    path.write_text(text)
    return path


def test_search_validate_says_what_will_run(tmp_path: Path) -> None:
    config = _demo_config(tmp_path)
    data = _json(["search", "validate", str(config), "--json"])
    assert data["valid"] is True and data["algorithm"] == "async_evolution_pareto"
    assert data["candidates"] == 38 and data["evaluations"] == 76
    assert data["budget"]["steps"] == 30  # type: ignore[index]
    result = runner.invoke(app, ["search", "validate", str(config)])
    assert result.exit_code == 0, result.output
    text = " ".join(result.stdout.split())
    for part in (
        "async_evolution_pareto",
        "8 initial models",
        "6 per iteration",
        "30 steps",
        "38 candidates",
    ):
        assert part in text, part


def test_search_validate_lists_every_problem(tmp_path: Path) -> None:
    config = _demo_config(
        tmp_path,
        ("  algorithm:", "  algoritm:"),
        ("    name: cpu", "    nmae: snp"),
        ("steps: 30", "steps: -1"),
    )
    result = runner.invoke(app, ["search", "validate", str(config), "--json"])
    assert result.exit_code == 2
    problems = json.loads(result.stdout)["problems"]
    assert [p.split(":")[0] for p in problems] == ["search.algoritm", "search.target.nmae", "training.steps"]
    result = runner.invoke(app, ["search", "validate", str(config)])
    assert result.exit_code == 2
    errors = " ".join(result.stderr.split())
    assert "search.algoritm: unknown key (known: algorithm, search_space, target)" in errors
    assert "search.target.nmae" in errors and "training.steps" in errors


@pytest.mark.integration
def test_search_validate_needs_no_searcher_and_no_torch(tmp_path: Path) -> None:
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "from typer.testing import CliRunner\n"
        "from facenas.cli.search import app\n"
        f"result = CliRunner().invoke(app, ['validate', {str(_demo_config(tmp_path))!r}])\n"
        "print(result.output); sys.exit(result.exit_code)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "FACENAS_SEARCHER"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "38 candidates" in " ".join(done.stdout.split())


def _synth(tmp_path: Path, size: int) -> Path:
    data_dir = tmp_path / f"data{size}"
    result = runner.invoke(
        app, ["data", "synth", "--out", str(data_dir), "--count", "8", "--size", str(size)]
    )
    assert result.exit_code == 0, result.output
    return data_dir


def test_train_defaults_to_the_size_of_smaller_frames(tmp_path: Path) -> None:
    """64 px data and the space's 256 px: training runs at 64 px, not on upsampled frames."""
    import onnx

    arch = tmp_path / "arch.json"
    arch.write_text(json.dumps(TINY_ARCH))
    args = [
        "train",
        str(arch),
        "--dataset-dir",
        str(_synth(tmp_path, 64)),
        "--output-dir",
        str(tmp_path / "out"),
    ]
    result = runner.invoke(
        app, [*args, "--epochs", "1", "--batch-size", "4", "--val-fraction", "0.25", "--json"]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["img_size"] == [64, 64]
    assert "training at the dataset's 64x64" in " ".join(result.stderr.split())
    model = onnx.load(str(tmp_path / "out" / "model.onnx"))
    dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims[-2:] == [64, 64]


def test_train_refuses_frames_too_small_for_the_space(tmp_path: Path) -> None:
    arch = tmp_path / "arch.json"
    arch.write_text(json.dumps(TINY_ARCH))
    args = [
        "train",
        str(arch),
        "--dataset-dir",
        str(_synth(tmp_path, 32)),
        "--output-dir",
        str(tmp_path / "out"),
    ]
    result = runner.invoke(app, [*args, "--epochs", "1"])
    assert result.exit_code == 2
    error = " ".join(result.stderr.split())
    assert "holds 32x32 images, smaller than the space's img_size 256x256" in error
    assert "divisible by" in error and "--img-size" in error
    assert not (tmp_path / "out").exists()
