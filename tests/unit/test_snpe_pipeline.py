"""The SNPE backend end to end against the fake adb and SNPE tools (tests/fakes): conversion,
quantization, DLC facts, pushing, profiling runs, diag parsing, re-runs on noise, board loss.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from facenas.domain import Budget, EvalKey, EvalSpace, FailureKind, JobState
from facenas.errors import ArchNotEvaluable, Cancelled, MeasurementError, Unavailable
from facenas.jobs import JobManager, JobSpec
from facenas.snp.adb import Adb
from facenas.snp.boards import BoardPool, hexagon_arch_for
from facenas.snp.process import ToolError, ToolTimeout
from facenas.snp.profiler import ProfilePlan
from facenas.snp.sdk import ConversionError, SnpeSdk, ToolTimeouts
from facenas.space import HgnetSearchSpace, ParamRange, SearchSpaceParams
from facenas.space.hgnet import Arch
from facenas.workers.base import DetachedWork
from facenas.workers.snpe import SnpeBackend
from tests.fakes.fixture import FakeSnpe, fake_snpe_fixture  # noqa: F401 - registers "fake_snpe"

SPACE = EvalSpace(img_size=(64, 64))
VERSION = "2.22.6.240515"


def alive() -> None:
    """A caller that never goes away."""


WORK = DetachedWork(check=alive)


@pytest.fixture(scope="module")
def arch() -> Arch:
    params = SearchSpaceParams(img_size=(64, 64))
    return HgnetSearchSpace(params, seed=3).sample_valid(ParamRange(1e5, 6e5))


def backend_for(
    fake: FakeSnpe,
    dataset: Path,
    plan: ProfilePlan | None = None,
    adb_timeout: float = 20.0,
    **pool_args: object,
) -> SnpeBackend:
    pool = BoardPool(Adb("adb", adb_timeout), **pool_args)  # type: ignore[arg-type]
    pool.discover()
    return SnpeBackend(SnpeSdk(fake.sdk_root), pool, dataset, plan or ProfilePlan(), calibration_images=4)


def net_runs(fake: FakeSnpe, serial: str) -> list[str]:
    """The snpe-net-run shell commands a board received."""
    return [
        c[-1] for c in fake.commands(serial) if c[:3] == ["-s", serial, "shell"] and "--container" in c[-1]
    ]


@pytest.mark.slow
def test_measures_on_a_board_and_names_everything(
    fake_snpe: FakeSnpe, synth_dataset: Path, arch: Arch
) -> None:
    fake_snpe.add_device("HDK1", model="HDK 888", soc="SM8350", base_us=500.0, us_per_mmac=0.02)
    backend = backend_for(fake_snpe, synth_dataset)
    target = backend.target("SNP Quantized Latency (s)", SPACE)
    assert target.key == f"snpe/sm8350/dsp/snpe-{VERSION}/64x64"
    assert not target.emulated and "HDK 888" in target.description

    result = backend.evaluate(arch, "SNP Quantized Latency (s)", SPACE, Budget(), WORK)
    d = result.details
    assert result.unit == "s"
    assert d["backend"] == "snpe" and d["emulated"] is False
    assert d["device"] == {"serial": "HDK1", "model": "HDK 888", "soc": "SM8350", "android": "13"}
    assert (d["runtime"], d["sdk_version"], d["perf_profile"]) == ("dsp", VERSION, "high_performance")
    assert d["params"] > 0 and d["macs"] > 0
    expected_us = 500.0 + 0.02 * d["macs"] / 1e6  # the fake board's model of time
    assert result.value == pytest.approx(expected_us / 1e6, rel=0.02)
    assert d["stable"] is True and len(d["rounds"]) == 1 and len(d["rounds"][0]) == 5

    runs = net_runs(fake_snpe, "HDK1")
    assert len(runs) == 5 and fake_snpe.runs("HDK1") == 5
    for flag in (
        "--container model.dlc",
        "--use_dsp",
        "--perf_profile high_performance",
        "--profiling_level basic",
    ):
        assert flag in runs[0]
    assert "ADSP_LIBRARY_PATH" in runs[0]
    pushed = [c[-1] for c in fake_snpe.commands("HDK1") if "push" in c]
    assert any(p.endswith("/bin/snpe-net-run") for p in pushed)
    assert any(p.endswith("/dsp/libSnpeHtpV68Skel.so") for p in pushed)
    assert any(p.endswith("/inputs/input_0003.raw") for p in pushed)

    backend.evaluate(arch, "SNP Quantized Latency (s)", SPACE, Budget(), WORK)
    pushed_again = [c[-1] for c in fake_snpe.commands("HDK1") if "push" in c]
    assert sum(p.endswith("/bin/snpe-net-run") for p in pushed_again) == 1  # SDK pushed once per board
    work_dirs = fake_snpe.device_path("HDK1", "/data/local/tmp/facenas/work")
    assert not any(work_dirs.iterdir()), "job files are removed from the board"


@pytest.mark.parametrize(
    ("runtime", "flag", "dsp_libs"),
    [("gpu", "--use_gpu", False), ("cpu", None, False), ("htp", "--use_dsp", True)],
)
@pytest.mark.slow
def test_runtimes(
    fake_snpe: FakeSnpe, synth_dataset: Path, arch: Arch, runtime: str, flag: str | None, dsp_libs: bool
) -> None:
    fake_snpe.add_device("B1", soc="SM8350")
    backend = backend_for(fake_snpe, synth_dataset, ProfilePlan(runtime=runtime))
    result = backend.evaluate(arch, "SNP Quantized Latency (s)", SPACE, Budget(), WORK)
    assert result.details["runtime"] == runtime
    command = net_runs(fake_snpe, "B1")[0]
    for other in ("--use_dsp", "--use_gpu"):
        assert (other in command) == (other == flag)
    assert ("ADSP_LIBRARY_PATH" in command) == dsp_libs
    assert backend.target("SNP Quantized Latency (s)", SPACE).key.startswith(f"snpe/sm8350/{runtime}/")


def test_conversion_error_is_reported_and_no_board_is_used(
    fake_snpe: FakeSnpe, synth_dataset: Path, arch: Arch
) -> None:
    fake_snpe.add_device("B1")
    fake_snpe.set_tools(convert_error="Op type not supported: GridSample")
    backend = backend_for(fake_snpe, synth_dataset)
    with pytest.raises(ConversionError, match="GridSample") as info:
        backend.evaluate(arch, "SNP Quantized Latency (s)", SPACE, Budget(), WORK)
    assert isinstance(info.value, ArchNotEvaluable) and not isinstance(info.value, MeasurementError)
    assert fake_snpe.runs("B1") == 0
    assert backend.pool.healthy(), "a model the converter rejects says nothing about the board"


def test_a_model_the_converter_rejects_fails_its_job_as_not_evaluable(
    fake_snpe: FakeSnpe, synth_dataset: Path, arch: Arch
) -> None:
    fake_snpe.add_device("B1")
    fake_snpe.set_tools(convert_error="Op type not supported: GridSample")
    backend = backend_for(fake_snpe, synth_dataset)
    manager = JobManager(backend, "latency_snp")
    try:
        target = backend.target("SNP Quantized Latency (s)", SPACE)
        key = EvalKey(arch.archid, "SNP Quantized Latency (s)", "b", target.key)
        job = manager.submit(JobSpec(key, arch, SPACE, Budget(), target), "s")[0]
        done = next(
            v for v in manager.follow(job.job_id, heartbeat_s=0.05, min_interval_s=0) if v.state.finished
        )
    finally:
        manager.close()
    assert (done.state, done.failure) == (JobState.FAILED, FailureKind.NOT_EVALUABLE)
    assert "GridSample" in done.error
    assert [b.serial for b in backend.pool.healthy()] == ["B1"]


@pytest.mark.slow
def test_quantization_error(fake_snpe: FakeSnpe, synth_dataset: Path, arch: Arch) -> None:
    """The quantizer rejecting the model is the model's fault."""
    fake_snpe.add_device("B1")
    fake_snpe.set_tools(quantize_error="encodings out of range")
    with pytest.raises(ConversionError, match=r"quantization failed.*encodings out of range"):
        backend_for(fake_snpe, synth_dataset).evaluate(
            arch, "SNP Quantized Latency (s)", SPACE, Budget(), WORK
        )


@pytest.mark.parametrize(
    ("tool", "script"),
    [
        ("snpe-onnx-to-dlc", "kill -9 $$"),  # killed (the OOM killer, an operator)
        ("snpe-onnx-to-dlc", "echo \"ModuleNotFoundError: No module named 'qti'\" >&2; exit 1"),
        ("snpe-onnx-to-dlc", "exit 127"),  # a wrapper that cannot find what it runs
        ("snpe-dlc-quantize", "echo 'error while loading shared libraries: libQnnHtp.so' >&2; exit 1"),
    ],
)
@pytest.mark.slow
def test_a_tool_that_cannot_run_is_not_the_models_fault(
    fake_snpe: FakeSnpe,
    synth_dataset: Path,
    arch: Arch,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    tool: str,
    script: str,
) -> None:
    fake_snpe.add_device("B1")
    broken = tmp_path / "broken-bin"
    broken.mkdir()
    (broken / tool).write_text(f"#!/bin/sh\n{script}\n")
    (broken / tool).chmod(0o755)
    monkeypatch.setenv("PATH", f"{broken}{os.pathsep}{os.environ['PATH']}")
    with pytest.raises(ToolError) as info:
        backend_for(fake_snpe, synth_dataset).evaluate(
            arch, "SNP Quantized Latency (s)", SPACE, Budget(), WORK
        )
    assert not isinstance(info.value, ArchNotEvaluable)


def test_a_tool_gone_since_start_up_is_unavailable_not_the_models_fault(
    fake_snpe: FakeSnpe, synth_dataset: Path, arch: Arch, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_snpe.add_device("B1")
    backend = backend_for(fake_snpe, synth_dataset)
    backend.sdk.check()
    monkeypatch.setenv("PATH", str(tmp_path))  # the SDK's host tools are gone
    with pytest.raises(Unavailable, match="snpe-onnx-to-dlc"):
        backend.evaluate(arch, "SNP Quantized Latency (s)", SPACE, Budget(), WORK)
    assert backend.pool.healthy()


def test_a_converter_past_its_time_limit_is_not_the_models_fault(
    fake_snpe: FakeSnpe, synth_dataset: Path, arch: Arch, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_snpe.add_device("B1")
    slow = tmp_path / "slow-bin"
    slow.mkdir()
    (slow / "snpe-onnx-to-dlc").write_text("#!/bin/sh\nexec sleep 60\n")
    (slow / "snpe-onnx-to-dlc").chmod(0o755)
    monkeypatch.setenv("PATH", f"{slow}{os.pathsep}{os.environ['PATH']}")
    backend = backend_for(fake_snpe, synth_dataset)
    backend.sdk.timeouts = ToolTimeouts(convert=0.5)
    with pytest.raises(ToolTimeout) as info:
        backend.evaluate(arch, "SNP Quantized Latency (s)", SPACE, Budget(), WORK)
    assert not isinstance(info.value, ArchNotEvaluable)


@pytest.mark.slow
def test_noisy_round_is_run_again(fake_snpe: FakeSnpe, synth_dataset: Path, arch: Arch) -> None:
    fake_snpe.add_device("B1", base_us=1000.0, us_per_mmac=0.0, noise=[1.0, 1.6, 0.6, 1.3, 0.7])
    result = backend_for(fake_snpe, synth_dataset).evaluate(
        arch, "SNP Quantized Latency (s)", SPACE, Budget(), WORK
    )
    d = result.details
    assert len(d["rounds"]) == 2 and d["stable"] is True
    assert d["rounds"][0][1] == pytest.approx(1600.0) and d["cv"] < 0.01
    assert result.value == pytest.approx(1000e-6)
    assert fake_snpe.runs("B1") == 10


@pytest.mark.slow
def test_never_settling_is_bounded_and_flagged(fake_snpe: FakeSnpe, synth_dataset: Path, arch: Arch) -> None:
    fake_snpe.add_device("B1", base_us=1000.0, us_per_mmac=0.0, noise=[1.0, 2.0] * 20)
    plan = ProfilePlan(runs=6, max_rounds=3)
    result = backend_for(fake_snpe, synth_dataset, plan).evaluate(
        arch, "SNP Quantized Latency (s)", SPACE, Budget(), WORK
    )
    assert result.details["stable"] is False and len(result.details["rounds"]) == 3
    assert result.details["cv"] > 0.1
    assert fake_snpe.runs("B1") == 18


@pytest.mark.slow
def test_board_unplugged_mid_run_moves_the_job(fake_snpe: FakeSnpe, synth_dataset: Path, arch: Arch) -> None:
    fake_snpe.add_device("A", unplug_after_runs=2)
    fake_snpe.add_device("B")
    backend = backend_for(fake_snpe, synth_dataset)
    assert backend.capacity == 2
    result = backend.evaluate(arch, "SNP Quantized Latency (s)", SPACE, Budget(), WORK)
    assert result.details["device"]["serial"] == "B"
    assert [b.serial for b in backend.pool.healthy()] == ["B"]
    assert "A" in backend.pool.no_board_message()
    assert (
        REGISTRY.get_sample_value(
            "facenas_snp_board_up", {"serial": "A", "model": "HDK 888", "soc": "SM8350"}
        )
        == 0
    )
    assert (
        REGISTRY.get_sample_value("facenas_snp_board_jobs_total", {"serial": "A", "outcome": "lost"}) or 0
    ) >= 1


@pytest.mark.slow
def test_last_board_lost_fails_unavailable_without_hanging(
    fake_snpe: FakeSnpe, synth_dataset: Path, arch: Arch
) -> None:
    fake_snpe.add_device("ONLY", unplug_after_runs=1)
    backend = backend_for(fake_snpe, synth_dataset)
    began = time.monotonic()
    with pytest.raises(Unavailable, match=r"no healthy Snapdragon board.*ONLY"):
        backend.evaluate(arch, "SNP Quantized Latency (s)", SPACE, Budget(), WORK)
    assert time.monotonic() - began < 60


@pytest.mark.slow
def test_hanging_board_times_out_and_job_moves(fake_snpe: FakeSnpe, synth_dataset: Path, arch: Arch) -> None:
    fake_snpe.add_device("A")
    fake_snpe.add_device("B")
    backend = backend_for(fake_snpe, synth_dataset, adb_timeout=2.0)
    fake_snpe.update_device("A", hang=True)  # after discovery: the board stops answering
    began = time.monotonic()
    result = backend.evaluate(arch, "SNP Quantized Latency (s)", SPACE, Budget(), WORK)
    assert result.details["device"]["serial"] == "B"
    assert time.monotonic() - began < 60


@pytest.mark.parametrize(
    ("diag", "message"), [("malformed", "malformed"), ("missing", "left no diagnostic log")]
)
@pytest.mark.slow
def test_bad_diagnostic_output(
    fake_snpe: FakeSnpe, synth_dataset: Path, arch: Arch, diag: str, message: str
) -> None:
    fake_snpe.add_device("B1", diag=diag)
    backend = backend_for(fake_snpe, synth_dataset)
    with pytest.raises(MeasurementError, match=message):
        backend.evaluate(arch, "SNP Quantized Latency (s)", SPACE, Budget(), WORK)
    assert backend.pool.healthy(), "bad output is not a lost board"


@pytest.mark.slow
def test_no_board_attached(fake_snpe: FakeSnpe, synth_dataset: Path, arch: Arch) -> None:
    fake_snpe.add_device("OFF", state="offline")
    backend = backend_for(fake_snpe, synth_dataset)
    with pytest.raises(Unavailable, match="OFF: adb reports it offline"):
        backend.target("SNP Quantized Latency (s)", SPACE)
    pinned = backend_for(fake_snpe, synth_dataset, soc="SM8350")
    assert pinned.target("SNP Quantized Latency (s)", SPACE).key.startswith("snpe/sm8350/")
    with pytest.raises(Unavailable, match="no healthy Snapdragon board with SoC SM8350"):
        pinned.evaluate(arch, "SNP Quantized Latency (s)", SPACE, Budget(), WORK)


def test_other_socs_are_left_out(fake_snpe: FakeSnpe) -> None:
    fake_snpe.add_device("S888", soc="SM8350")
    fake_snpe.add_device("S8G2", soc="SM8550", model="QRD 8550")
    pool = BoardPool(Adb(), soc="sm8550")
    assert [b.serial for b in pool.discover()] == ["S8G2"]
    assert "SM8350" in pool.ignored["S888"] and hexagon_arch_for(pool.soc or "") == "v73"


def test_board_that_comes_back_is_used_again(fake_snpe: FakeSnpe) -> None:
    fake_snpe.add_device("B1")
    pool = BoardPool(Adb())
    pool.discover()
    fake_snpe.update_device("B1", state="gone")
    assert pool.discover() == []
    fake_snpe.update_device("B1", state="device")
    assert [b.serial for b in pool.discover()] == ["B1"]


def test_one_job_per_board(fake_snpe: FakeSnpe) -> None:
    fake_snpe.add_device("B1")
    pool = BoardPool(Adb())
    pool.discover()
    order: list[str] = []

    def job(name: str) -> None:
        with pool.lease(alive):
            order.append(f"{name} start")
            time.sleep(0.3)
            order.append(f"{name} end")

    threads = [threading.Thread(target=job, args=(n,)) for n in ("x", "y")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert order in (["x start", "x end", "y start", "y end"], ["y start", "y end", "x start", "x end"])


def test_waiting_for_a_board_honours_cancellation(fake_snpe: FakeSnpe) -> None:
    fake_snpe.add_device("B1")
    pool = BoardPool(Adb())
    pool.discover()

    def gone() -> None:
        raise Cancelled("caller went away")

    with pool.lease(alive), pytest.raises(Cancelled), pool.lease(gone):
        pass
    assert REGISTRY.get_sample_value("facenas_snp_board_queue") == 0
