"""The SNPE/adb layer's parsers, plan validation and the bounded tool runner (no fakes needed)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import pytest

from facenas.errors import Cancelled, InvalidInput, MeasurementError
from facenas.snp.adb import parse_devices, parse_getprop
from facenas.snp.boards import soc_of
from facenas.snp.process import ToolTimeout, run_tool
from facenas.snp.profiler import ProfilePlan, summarize
from facenas.snp.sdk import parse_diag_csv, parse_dlc_info, write_raw_inputs

DLC_INFO = """\
DLC info of: /tmp/model.quant.dlc
Model Version: N/A
Model Copyright:N/A
----------------------------------------------------------------------------------
| Id | Name | Type | Inputs | Outputs | Out Dims | Runtimes | Parameters |
----------------------------------------------------------------------------------
Note: The supported runtimes column assumes a processor target of Snapdragon 835 (8998)
Total parameters: 666,049 (2 MB assuming single precision float)
Total MACs per inference: 1234M (100%)
Est. Steady-State Memory Needed to Run: 13.2 MiB
"""


def test_dlc_info_reads_params_and_macs() -> None:
    info = parse_dlc_info(DLC_INFO)
    assert info.params == 666_049
    assert info.macs == 1_234_000_000


@pytest.mark.parametrize(("text", "macs"), [("512K", 512_000), ("1.5G", 1_500_000_000), ("987", 987)])
def test_dlc_info_mac_suffixes(text: str, macs: int) -> None:
    info = parse_dlc_info(f"Total parameters: 10 (0 MB)\nTotal MACs per inference: {text} (100%)\n")
    assert info.macs == macs


def test_dlc_info_without_totals_names_what_is_missing() -> None:
    with pytest.raises(MeasurementError, match="Total parameters and Total MACs"):
        parse_dlc_info("DLC info of: x\n| garbage |\n")


def test_diag_csv_reads_average_total_inference_time() -> None:
    csv_text = (
        "Log Id,Message Name,Time,Message Value,Unit\n"
        "0,Init,0,120345,USEC\n"
        "1,Layer 3 (conv),0,99,USEC\n"
        "2,avg_total_inference_time,0,4321.5,USEC\n"
        "3,AVG_TOTAL_INFERENCE_TIME,0,1,USEC\n"
    )
    assert parse_diag_csv(csv_text) == 4321.5


@pytest.mark.parametrize(
    "csv_text",
    [
        "Log Id,Message Name,Time,Message Value,Unit\n0,Init,0,120345,USEC\n",
        "\x00\x01garbage without commas\n",
        "0,avg_total_inference_time,0,not-a-number,USEC\n",
        "0,avg_total_inference_time,0,-5,USEC\n",
        "0,avg_total_inference_time,0,nan,USEC\n",
    ],
)
def test_malformed_diag_csv_is_a_measurement_error(csv_text: str) -> None:
    with pytest.raises(MeasurementError, match="malformed diagnostic log"):
        parse_diag_csv(csv_text)


def test_adb_devices_and_getprop() -> None:
    devices = parse_devices(
        "* daemon started successfully\nList of devices attached\n"
        "a1b2c3\tdevice\nd4e5f6\toffline\n10.0.0.7:5555\tunauthorized\n\n"
    )
    assert [(d.serial, d.state) for d in devices] == [
        ("a1b2c3", "device"),
        ("d4e5f6", "offline"),
        ("10.0.0.7:5555", "unauthorized"),
    ]
    props = parse_getprop("[ro.product.model]: [HDK 888]\n[ro.soc.model]: [SM8350]\nnoise\n[empty]: []\n")
    assert props == {"ro.product.model": "HDK 888", "ro.soc.model": "SM8350", "empty": ""}
    assert soc_of(props) == "SM8350"
    assert soc_of({"ro.board.platform": "lahaina"}) == "LAHAINA"


def test_raw_inputs_are_nhwc_float32_with_a_list(tmp_path: Path) -> None:
    array = np.arange(2 * 3 * 4, dtype=np.float32).reshape(1, 3, 2, 4)
    listing = write_raw_inputs([array, array + 1], tmp_path / "in", device_dir="inputs")
    assert listing.read_text().split() == ["inputs/input_0000.raw", "inputs/input_0001.raw"]
    raw = np.fromfile(tmp_path / "in" / "input_0000.raw", dtype=np.float32).reshape(2, 4, 3)
    np.testing.assert_array_equal(raw, array[0].transpose(1, 2, 0))
    local = write_raw_inputs([array], tmp_path / "cal")
    assert local.read_text().strip() == str(tmp_path / "cal" / "input_0000.raw")
    with pytest.raises(InvalidInput, match="expected shape"):
        write_raw_inputs([array[0]], tmp_path / "bad")


def test_profile_plan_validation_reports_every_problem() -> None:
    assert ProfilePlan().runtime == "dsp"
    assert ProfilePlan(runtime="htp").uses_dsp and not ProfilePlan(runtime="gpu").uses_dsp
    with pytest.raises(InvalidInput) as err:
        ProfilePlan(runtime="npu", runs=1, max_rounds=0, max_cv=1.5, perf_profile="turbo")
    for field in ("runtime", "runs", "max_rounds", "max_cv", "perf_profile"):
        assert f"{field}:" in str(err.value)


def test_summarize() -> None:
    mean, stdev, cv = summarize((90.0, 100.0, 110.0))
    assert mean == pytest.approx(100.0)
    assert stdev == pytest.approx(10.0)
    assert cv == pytest.approx(0.1)


@pytest.mark.integration
def test_run_tool_returns_output_and_status() -> None:
    result = run_tool([sys.executable, "-c", "import sys; print('out'); sys.exit(3)"], 30)
    assert (result.returncode, result.stdout.strip()) == (3, "out")


@pytest.mark.integration
def test_run_tool_kills_a_hanging_tool_and_its_children() -> None:
    # the child starts a grandchild that keeps stdout open: a plain subprocess.run would wait for it
    script = (
        "import subprocess, sys, time; "
        "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); time.sleep(60)"
    )
    began = time.monotonic()
    with pytest.raises(ToolTimeout, match="did not finish within 1 s"):
        run_tool([sys.executable, "-c", script], 1)
    assert time.monotonic() - began < 10


@pytest.mark.integration
def test_run_tool_stops_when_the_caller_cancels() -> None:
    calls = 0

    def check_alive() -> None:
        nonlocal calls
        calls += 1
        if calls >= 2:
            raise Cancelled("caller went away")

    began = time.monotonic()
    with pytest.raises(Cancelled):
        run_tool([sys.executable, "-c", "import time; time.sleep(60)"], 60, check_alive)
    assert time.monotonic() - began < 10


def test_run_tool_missing_executable() -> None:
    with pytest.raises(MeasurementError, match="cannot run"):
        run_tool(["/nonexistent/snpe-onnx-to-dlc"], 5)
