"""The fake adb and SNPE SDK tools of tests/fakes follow their contract (tests/fakes/README.md)."""

from __future__ import annotations

import csv
import json
import stat
import subprocess
import sys
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from tests.fakes import snpe_fake
from tests.fakes.fixture import FakeSnpe, fake_snpe_fixture  # noqa: F401

H, W = 24, 32
DIMS = f"1,3,{H},{W}"
VERSION = "2.22.6.240515"
SDK = f"/data/local/tmp/facenas/snpe-{VERSION}"
WORK = "/data/local/tmp/facenas/work/job1"
SERIAL = "SERIAL1"


def run(
    fake: FakeSnpe, *args: str | Path, cwd: Path | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in args],
        env=fake.env(),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@dataclass(frozen=True)
class Artifacts:
    onnx: Path
    params: int
    macs: int
    raw: Path
    input_list: Path
    float_dlc: Path
    quant_dlc: Path
    htp_dlc: Path


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Artifacts:
    """A tiny torch model (conv, grouped conv, transposed conv) exported and taken through the tools."""
    import torch
    from torch import nn

    root = tmp_path_factory.mktemp("fake_snpe_artifacts")
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 4, 3, stride=2, padding=1, groups=4),
        nn.ConvTranspose2d(4, 2, 2, stride=2),
    ).eval()
    onnx_path = root / "m.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=DeprecationWarning)
        torch.onnx.export(
            model,
            (torch.rand(1, 3, H, W),),
            str(onnx_path),
            dynamo=False,
            input_names=["input_0"],
            output_names=["output_0"],
        )
    params = sum(p.numel() for p in model.parameters())
    macs = 8 * H * W * 3 * 9 + 4 * (H // 2) * (W // 2) * 2 * 9 + 4 * (H // 2) * (W // 2) * 2 * 2 * 2
    raw = root / "in0.raw"
    np.random.default_rng(0).random((H, W, 3), dtype=np.float32).tofile(raw)
    input_list = root / "list.txt"
    input_list.write_text(f"# calibration inputs\n%output_0\n{raw}\n\n{raw.name}\n")
    fake = FakeSnpe(root)
    float_dlc, quant_dlc, htp_dlc = root / "m.dlc", root / "m.quant.dlc", root / "m.htp.dlc"
    steps: list[list[str | Path]] = [
        [
            "snpe-onnx-to-dlc",
            "--input_network",
            onnx_path,
            "--output_path",
            float_dlc,
            "--input_dim",
            "input_0",
            DIMS,
            "--out_node",
            "output_0",
        ],
        [
            "snpe-dlc-quantize",
            "--input_dlc",
            float_dlc,
            "--input_list",
            input_list,
            "--output_dlc",
            quant_dlc,
        ],
        ["snpe-dlc-graph-prepare", "--input_dlc", quant_dlc, "--output_dlc", htp_dlc, "--htp_socs", "sm8350"],
    ]
    for step in steps:
        proc = run(fake, *step, cwd=root)
        assert proc.returncode == 0, proc.stderr
    return Artifacts(onnx_path, params, macs, raw, input_list, float_dlc, quant_dlc, htp_dlc)


def load(path: Path) -> dict[str, object]:
    data = json.loads(path.read_text())
    assert isinstance(data, dict)
    return data


# -- host SDK tools ---------------------------------------------------------------------------------


def test_net_run_version_follows_the_state(fake_snpe: FakeSnpe) -> None:
    proc = run(fake_snpe, "snpe-net-run", "--version")
    assert (proc.returncode, proc.stdout) == (0, f"SNPE v{VERSION}\n")
    fake_snpe.set_version("2.10.0.4541")
    assert run(fake_snpe, "snpe-net-run", "--version").stdout.strip() == "SNPE v2.10.0.4541"
    assert run(fake_snpe, "snpe-net-run", "--container", "x.dlc").returncode == 1


@pytest.mark.slow
def test_converter_counts_params_and_macs(fake_snpe: FakeSnpe, artifacts: Artifacts, tmp_path: Path) -> None:
    out = tmp_path / "m.dlc"
    proc = run(
        fake_snpe,
        "snpe-onnx-to-dlc",
        "--input_network",
        artifacts.onnx,
        "--output_path",
        out,
        "--input_dim",
        "input_0",
        DIMS,
        "--out_node",
        "output_0",
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-1].endswith("INFO - Conversion completed successfully")
    dlc = load(out)
    assert dlc["fake_dlc"] == 1 and dlc["quantized"] is False
    assert (dlc["params"], dlc["macs"]) == (artifacts.params, artifacts.macs)
    assert (dlc["input"], dlc["dims"], dlc["output"]) == ("input_0", [1, 3, H, W], "output_0")
    assert dlc["converter_version"] == VERSION and len(str(dlc["onnx_sha256"])) == 64


@pytest.mark.slow
def test_converter_failures(fake_snpe: FakeSnpe, artifacts: Artifacts, tmp_path: Path) -> None:
    out = tmp_path / "m.dlc"
    base: list[str | Path] = [
        "snpe-onnx-to-dlc",
        "--input_network",
        artifacts.onnx,
        "--output_path",
        out,
        "--input_dim",
        "input_0",
    ]
    wrong = run(fake_snpe, *base, "1,3,32,32", "--out_node", "output_0")
    assert wrong.returncode == 1 and "ERROR - Conversion FAILED" in wrong.stderr
    assert run(fake_snpe, *base, DIMS, "--out_node", "nope").returncode == 1
    garbage = tmp_path / "bad.onnx"
    garbage.write_bytes(b"\x00not an onnx model")
    bad = run(fake_snpe, *base[:2], garbage, *base[3:], DIMS)
    assert bad.returncode == 1 and "ERROR" in bad.stderr
    assert run(fake_snpe, "snpe-onnx-to-dlc", "--output_path", out).returncode == 2
    fake_snpe.set_tools(convert_error="Op type not supported: GridSample")
    failed = run(fake_snpe, *base, DIMS, "--out_node", "output_0")
    assert failed.returncode == 1
    assert "ERROR - Conversion FAILED: Op type not supported: GridSample" in failed.stderr
    assert not out.exists()


@pytest.mark.parametrize("tool", ["snpe-dlc-quantize", "snpe-dlc-quant"])
def test_quantizers(fake_snpe: FakeSnpe, artifacts: Artifacts, tmp_path: Path, tool: str) -> None:
    out = tmp_path / "q.dlc"
    args: list[str | Path] = [
        tool,
        "--input_dlc",
        artifacts.float_dlc,
        "--input_list",
        artifacts.input_list,
        "--output_dlc",
        out,
    ]
    proc = run(fake_snpe, *args, "--use_enhanced_quantizer", cwd=artifacts.raw.parent)
    assert proc.returncode == 0, proc.stderr
    assert "INFO - Saving quantized model" in proc.stdout
    dlc = load(out)
    assert (dlc["quantized"], dlc["enhanced"], dlc["calibration_inputs"]) == (True, True, 2)
    assert dlc["macs"] == artifacts.macs

    short = tmp_path / "short.raw"
    np.zeros((H, W, 2), np.float32).tofile(short)
    bad_list = tmp_path / "bad.txt"
    bad_list.write_text(f"{short}\n")
    bad = run(fake_snpe, *args[:4], bad_list, *args[5:])
    assert bad.returncode == 1 and "size mismatch" in bad.stderr and "ERROR - " in bad.stderr
    bad_list.write_text("# nothing\n")
    assert run(fake_snpe, *args[:4], bad_list, *args[5:]).returncode == 1
    fake_snpe.set_tools(quantize_error="calibration diverged")
    failed = run(fake_snpe, *args, cwd=artifacts.raw.parent)
    assert failed.returncode == 1 and "calibration diverged" in failed.stderr


def test_graph_prepare_needs_a_quantized_dlc(
    fake_snpe: FakeSnpe, artifacts: Artifacts, tmp_path: Path
) -> None:
    assert load(artifacts.htp_dlc)["htp_cache"] == ["sm8350"]
    out = tmp_path / "x.dlc"
    proc = run(
        fake_snpe,
        "snpe-dlc-graph-prepare",
        "--input_dlc",
        artifacts.float_dlc,
        "--output_dlc",
        out,
        "--htp_socs",
        "sm8350",
    )
    assert proc.returncode == 1 and not out.exists()


def test_dlc_info(fake_snpe: FakeSnpe, artifacts: Artifacts, tmp_path: Path) -> None:
    proc = run(fake_snpe, "snpe-dlc-info", "-i", artifacts.float_dlc)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert f"DLC info of: {artifacts.float_dlc.resolve()}" in lines
    assert "Model Version: N/A" in lines
    mb = int(artifacts.params * 4 / 1e6)
    assert f"Total parameters: {artifacts.params} ({mb} MB assuming single precision float)" in lines
    assert f"Total MACs per inference: {round(artifacts.macs / 1e3)}K (100%)" in lines
    assert any(line.startswith("Est. Steady-State Memory Needed to Run: ") for line in lines)

    fake_snpe.set_tools(info_malformed=True)
    malformed = run(fake_snpe, "snpe-dlc-info", "-i", artifacts.float_dlc)
    assert malformed.returncode == 0 and "DLC info of:" in malformed.stdout
    assert "Total parameters" not in malformed.stdout and "Total MACs" not in malformed.stdout
    not_dlc = tmp_path / "x.dlc"
    not_dlc.write_text("PK\x03\x04")
    assert run(fake_snpe, "snpe-dlc-info", "-i", not_dlc).returncode == 1
    assert run(fake_snpe, "snpe-dlc-info", "-i", tmp_path / "missing.dlc").returncode == 1


def test_count_formatting() -> None:
    assert snpe_fake._fmt_count(1_234_400_000) == "1234M"
    assert snpe_fake._fmt_count(2_500_000) == "3M"
    assert snpe_fake._fmt_count(1_499) == "1K"
    assert snpe_fake._fmt_count(999) == "999"


def test_diagview_needs_a_log(fake_snpe: FakeSnpe, tmp_path: Path) -> None:
    proc = run(
        fake_snpe, "snpe-diagview", "--input_log", tmp_path / "none.log", "--output", tmp_path / "x.csv"
    )
    assert proc.returncode == 1 and proc.stderr


# -- adb --------------------------------------------------------------------------------------------


def test_adb_devices_and_device_states(fake_snpe: FakeSnpe) -> None:
    assert run(fake_snpe, "adb", "start-server").returncode == 0
    assert run(fake_snpe, "adb", "version").stdout.startswith("Android Debug Bridge version 1.0.41\n")
    assert run(fake_snpe, "adb", "devices").stdout == "List of devices attached\n\n"
    fake_snpe.add_device("A1")
    fake_snpe.add_device("B2", state="offline")
    fake_snpe.add_device("C3", state="unauthorized")
    fake_snpe.add_device("D4", state="gone")
    proc = run(fake_snpe, "adb", "devices")
    assert (proc.returncode, proc.stdout) == (
        0,
        "List of devices attached\nA1\tdevice\nB2\toffline\nC3\tunauthorized\n\n",
    )

    for serial, message in [
        ("B2", "adb: device offline"),
        ("C3", "adb: device unauthorized."),
        ("D4", "adb: device 'D4' not found"),
        ("ZZ", "adb: device 'ZZ' not found"),
    ]:
        failed = run(fake_snpe, "adb", "-s", serial, "shell", "true")
        assert failed.returncode == 1 and failed.stderr.startswith(message), serial
    assert "more than one device" in run(fake_snpe, "adb", "shell", "true").stderr

    props = run(fake_snpe, "adb", "-s", "A1", "shell", "getprop").stdout.splitlines()
    for line in [
        "[ro.product.model]: [HDK 888]",
        "[ro.soc.model]: [SM8350]",
        "[ro.board.platform]: [lahaina]",
        "[ro.build.version.release]: [13]",
    ]:
        assert line in props
    assert run(fake_snpe, "adb", "-s", "A1", "shell", "getprop", "ro.product.model").stdout == "HDK 888\n"
    assert fake_snpe.commands("A1")[-1] == ["-s", "A1", "shell", "getprop", "ro.product.model"]
    assert fake_snpe.commands("B2") == [["-s", "B2", "shell", "true"]]


def test_adb_push_pull_and_shell(fake_snpe: FakeSnpe, tmp_path: Path) -> None:
    fake_snpe.add_device(SERIAL)
    tool = tmp_path / "tool.sh"
    tool.write_text("#!/bin/sh\necho hi\n")
    tool.chmod(0o755)
    proc = run(fake_snpe, "adb", "-s", SERIAL, "push", tool, "/data/local/tmp/a/b/tool.sh")
    assert proc.returncode == 0 and proc.stdout.startswith(f"{tool}: 1 file pushed, 0 skipped. ")
    pushed = fake_snpe.device_path(SERIAL, "/data/local/tmp/a/b/tool.sh")
    assert pushed.read_text() == tool.read_text() and pushed.stat().st_mode & stat.S_IXUSR

    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "x.txt").write_text("x")
    (tree / "sub" / "y.txt").write_text("y")
    assert run(fake_snpe, "adb", "-s", SERIAL, "push", tree, "/data/local/tmp/t").returncode == 0
    assert fake_snpe.device_path(SERIAL, "/data/local/tmp/t/sub/y.txt").read_text() == "y"
    assert run(fake_snpe, "adb", "-s", SERIAL, "push", tree, "/data/local/tmp/t").returncode == 0
    assert fake_snpe.device_path(SERIAL, "/data/local/tmp/t/tree/x.txt").read_text() == "x"

    missing = run(fake_snpe, "adb", "-s", SERIAL, "push", tmp_path / "nope", "/data/local/tmp/nope")
    assert missing.returncode == 1
    assert (
        missing.stderr.strip() == f"adb: error: cannot stat '{tmp_path / 'nope'}': No such file or directory"
    )
    assert run(fake_snpe, "adb", "-s", SERIAL, "push", tool, "/system/bin/tool.sh").returncode == 1

    shell = run(fake_snpe, "adb", "-s", SERIAL, "shell", "/data/local/tmp/a/b/tool.sh", "&&", "exit", "3")
    assert (shell.returncode, shell.stdout) == (3, "hi\n")
    assert run(fake_snpe, "adb", "-s", SERIAL, "shell", "mkdir -p /data/local/tmp/m/n").returncode == 0
    assert fake_snpe.device_path(SERIAL, "/data/local/tmp/m/n").is_dir()

    pulled = tmp_path / "back.sh"
    proc = run(fake_snpe, "adb", "-s", SERIAL, "pull", "/data/local/tmp/a/b/tool.sh", pulled)
    assert proc.returncode == 0 and pulled.read_text() == tool.read_text()
    assert proc.stdout.startswith("/data/local/tmp/a/b/tool.sh: 1 file pulled, 0 skipped. ")
    assert run(fake_snpe, "adb", "-s", SERIAL, "pull", "/data/local/tmp/t", tmp_path / "t2").returncode == 0
    assert (tmp_path / "t2" / "sub" / "y.txt").read_text() == "y"
    gone = run(fake_snpe, "adb", "-s", SERIAL, "pull", "/data/local/tmp/none", tmp_path / "n")
    assert gone.returncode == 1
    assert gone.stderr.strip() == (
        "adb: error: failed to stat remote object '/data/local/tmp/none': No such file or directory"
    )
    assert run(fake_snpe, "adb", "-s", SERIAL, "shell", "rm -rf /data/local/tmp/t").returncode == 0
    assert not fake_snpe.device_path(SERIAL, "/data/local/tmp/t").exists()


@pytest.mark.slow
def test_adb_hang_needs_a_timeout(fake_snpe: FakeSnpe) -> None:
    fake_snpe.add_device(SERIAL, hang=True)
    with pytest.raises(subprocess.TimeoutExpired):
        run(fake_snpe, "adb", "-s", SERIAL, "shell", "getprop", timeout=2)
    assert run(fake_snpe, "adb", "devices").stdout == f"List of devices attached\n{SERIAL}\tdevice\n\n"


# -- profiling on the fake device -------------------------------------------------------------------


def deploy(fake: FakeSnpe, serial: str, dlc: Path, raw: Path, *, skel: str = "v68", inputs: int = 1) -> None:
    """Push the SDK, model and inputs the way the backend does."""
    sdk = fake.sdk_root
    steps: list[list[str | Path]] = [
        ["push", sdk / "lib" / "aarch64-android", f"{SDK}/lib"],
        ["push", sdk / "lib" / f"hexagon-{skel}" / "unsigned", f"{SDK}/dsp"],
        ["push", sdk / "bin" / "aarch64-android" / "snpe-net-run", f"{SDK}/bin/snpe-net-run"],
        ["shell", f"mkdir -p {WORK}/inputs"],
        ["push", dlc, f"{WORK}/model.dlc"],
    ]
    steps += [["push", raw, f"{WORK}/inputs/{i}.raw"] for i in range(inputs)]
    listing = raw.parent / f"input_list_{serial}.txt"
    listing.write_text("".join(f"{WORK}/inputs/{i}.raw\n" for i in range(inputs)))
    steps.append(["push", listing, f"{WORK}/input_list.txt"])
    for step in steps:
        proc = run(fake, "adb", "-s", serial, *step)
        assert proc.returncode == 0, proc.stderr


def profile_command(runtime: str = "--use_dsp") -> str:
    return (
        f"cd {WORK} && export LD_LIBRARY_PATH={SDK}/lib && "
        f'export ADSP_LIBRARY_PATH="{SDK}/dsp;/system/lib/rfsa/adsp;/system/vendor/lib/rfsa/adsp;/dsp" && '
        f"{SDK}/bin/snpe-net-run --container model.dlc --input_list input_list.txt --output_dir output "
        f"{runtime} --perf_profile high_performance --profiling_level basic"
    ).replace("  ", " ")


def net_run(fake: FakeSnpe, serial: str, runtime: str = "--use_dsp") -> subprocess.CompletedProcess[str]:
    return run(fake, "adb", "-s", serial, "shell", profile_command(runtime))


def diag_rows(fake: FakeSnpe, serial: str, tmp_path: Path) -> list[list[str]]:
    log = tmp_path / "SNPEDiag_0.log"
    pulled = run(fake, "adb", "-s", serial, "pull", f"{WORK}/output/SNPEDiag_0.log", log)
    assert pulled.returncode == 0, pulled.stderr
    out = tmp_path / "diag.csv"
    proc = run(fake, "snpe-diagview", "--input_log", log, "--output", out)
    assert proc.returncode == 0, proc.stderr
    with open(out, newline="") as fh:
        return list(csv.reader(fh))


def avg_us(rows: list[list[str]]) -> int:
    (value,) = [r[3] for r in rows if len(r) > 3 and r[1] == "avg_total_inference_time"]
    return int(value)


def expected_us(macs: int, factor: float, noise: float = 1.0, base: float = 500.0, k: float = 0.02) -> int:
    return round((base + k * macs / 1e6) * factor * noise)


def test_profile_end_to_end(fake_snpe: FakeSnpe, artifacts: Artifacts, tmp_path: Path) -> None:
    fake_snpe.add_device(SERIAL, base_us=300.0, us_per_mmac=100.0)
    deploy(fake_snpe, SERIAL, artifacts.quant_dlc, artifacts.raw, inputs=2)
    proc = net_run(fake_snpe, SERIAL)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(
        f"{'-' * 79}\nModel String: N/A\nSNPE v{VERSION}\n{'-' * 79}\nProcessing DNN input(s):\n"
    )
    assert f"{WORK}/inputs/1.raw" in proc.stdout
    assert fake_snpe.runs(SERIAL) == 1

    out_dir = tmp_path / "output"
    assert run(fake_snpe, "adb", "-s", SERIAL, "pull", f"{WORK}/output", out_dir).returncode == 0
    assert sorted(p.name for p in out_dir.iterdir()) == ["Result_0", "Result_1", "SNPEDiag_0.log"]
    assert (out_dir / "Result_1" / "output_0.raw").is_file()

    rows = diag_rows(fake_snpe, SERIAL, tmp_path)
    assert rows[0] == ["Log Id", "Message Name", "Time", "Message Value", "Unit"]
    names = [r[1] for r in rows[1:]]
    assert names[:4] == ["Init", "De-Init", "avg_total_inference_time", "avg_forward_propagate_time"]
    assert len(names) > 4 and all(r[4] == "USEC" for r in rows[1:])
    assert avg_us(rows) == expected_us(artifacts.macs, 1.0, base=300.0, k=100.0)
    assert ["-s", SERIAL, "shell", profile_command()] in fake_snpe.commands(SERIAL)


@pytest.mark.slow
def test_runtimes_and_htp_cache(fake_snpe: FakeSnpe, artifacts: Artifacts, tmp_path: Path) -> None:
    fake_snpe.add_device(SERIAL, us_per_mmac=1000.0)
    deploy(fake_snpe, SERIAL, artifacts.quant_dlc, artifacts.raw)
    for flag, factor in [("--use_gpu", 2.5), ("", 8.0), ("--use_dsp", 1.0)]:
        assert net_run(fake_snpe, SERIAL, flag).returncode == 0
        assert avg_us(diag_rows(fake_snpe, SERIAL, tmp_path)) == expected_us(artifacts.macs, factor, k=1000.0)
    aip = net_run(fake_snpe, SERIAL, "--use_aip")
    assert aip.returncode == 1 and "not supported on this SoC" in aip.stderr

    assert run(fake_snpe, "adb", "-s", SERIAL, "push", artifacts.htp_dlc, f"{WORK}/model.dlc").returncode == 0
    assert net_run(fake_snpe, SERIAL).returncode == 0
    assert avg_us(diag_rows(fake_snpe, SERIAL, tmp_path)) == expected_us(artifacts.macs, 0.8, k=1000.0)

    assert (
        run(fake_snpe, "adb", "-s", SERIAL, "push", artifacts.float_dlc, f"{WORK}/model.dlc").returncode == 0
    )
    float_on_dsp = net_run(fake_snpe, SERIAL)
    assert float_on_dsp.returncode == 1 and "quantized" in float_on_dsp.stderr
    assert net_run(fake_snpe, SERIAL, "--use_gpu").returncode == 0
    assert fake_snpe.runs(SERIAL) == 7


def test_missing_libraries(fake_snpe: FakeSnpe, artifacts: Artifacts) -> None:
    fake_snpe.add_device(SERIAL)
    deploy(fake_snpe, SERIAL, artifacts.quant_dlc, artifacts.raw, skel="v73")  # wrong HTP for SM8350
    no_skel = net_run(fake_snpe, SERIAL)
    assert no_skel.returncode == 1 and "error_code=1002" in no_skel.stderr
    assert net_run(fake_snpe, SERIAL, "--use_gpu").returncode == 0
    assert run(fake_snpe, "adb", "-s", SERIAL, "shell", f"rm {SDK}/lib/libSNPE.so").returncode == 0
    no_lib = net_run(fake_snpe, SERIAL, "--use_gpu")
    assert no_lib.returncode == 1 and "error while loading shared libraries: libSNPE.so" in no_lib.stderr


@pytest.mark.slow
def test_noise_multipliers_apply_in_order(fake_snpe: FakeSnpe, artifacts: Artifacts, tmp_path: Path) -> None:
    noise = [1.0, 2.0, 0.5]
    fake_snpe.add_device(SERIAL, us_per_mmac=1000.0, noise=noise)
    deploy(fake_snpe, SERIAL, artifacts.quant_dlc, artifacts.raw)
    seen: list[int] = []
    for _ in range(len(noise) + 1):
        assert net_run(fake_snpe, SERIAL).returncode == 0
        seen.append(avg_us(diag_rows(fake_snpe, SERIAL, tmp_path)))
    assert seen == [expected_us(artifacts.macs, 1.0, n, k=1000.0) for n in [*noise, 1.0]]


def test_unplug_mid_run(fake_snpe: FakeSnpe, artifacts: Artifacts) -> None:
    fake_snpe.add_device(SERIAL, unplug_after_runs=1)
    deploy(fake_snpe, SERIAL, artifacts.quant_dlc, artifacts.raw)
    assert net_run(fake_snpe, SERIAL).returncode == 0
    assert run(fake_snpe, "adb", "-s", SERIAL, "shell", f"rm -rf {WORK}/output").returncode == 0
    unplugged = net_run(fake_snpe, SERIAL)
    assert unplugged.returncode == 255 and "error: closed" in unplugged.stderr
    assert not fake_snpe.device_path(SERIAL, f"{WORK}/output").exists()
    assert fake_snpe.device(SERIAL)["state"] == "gone"
    assert run(fake_snpe, "adb", "devices").stdout == "List of devices attached\n\n"
    after = run(fake_snpe, "adb", "-s", SERIAL, "shell", "true")
    assert after.returncode == 1 and f"adb: device '{SERIAL}' not found" in after.stderr
    assert fake_snpe.runs(SERIAL) == 2


def test_malformed_and_missing_diag(fake_snpe: FakeSnpe, artifacts: Artifacts, tmp_path: Path) -> None:
    fake_snpe.add_device(SERIAL, diag="malformed")
    deploy(fake_snpe, SERIAL, artifacts.quant_dlc, artifacts.raw)
    assert net_run(fake_snpe, SERIAL).returncode == 0
    rows = diag_rows(fake_snpe, SERIAL, tmp_path)
    assert not any(len(r) > 3 and r[1] == "avg_total_inference_time" for r in rows)
    assert any(len(r) != 5 for r in rows)

    fake_snpe.update_device(SERIAL, diag="missing")
    assert run(fake_snpe, "adb", "-s", SERIAL, "shell", f"rm -rf {WORK}/output").returncode == 0
    assert net_run(fake_snpe, SERIAL).returncode == 0
    assert fake_snpe.device_path(SERIAL, f"{WORK}/output/Result_0/output_0.raw").is_file()
    assert not fake_snpe.device_path(SERIAL, f"{WORK}/output/SNPEDiag_0.log").exists()
    pulled = run(fake_snpe, "adb", "-s", SERIAL, "pull", f"{WORK}/output/SNPEDiag_0.log", tmp_path / "x.log")
    assert pulled.returncode == 1


def test_concurrent_runs_are_all_counted(fake_snpe: FakeSnpe, artifacts: Artifacts) -> None:
    fake_snpe.add_device(SERIAL)
    deploy(fake_snpe, SERIAL, artifacts.quant_dlc, artifacts.raw)
    with ThreadPoolExecutor(4) as pool:
        codes = list(pool.map(lambda _: net_run(fake_snpe, SERIAL).returncode, range(4)))
    assert codes == [0, 0, 0, 0]
    assert fake_snpe.runs(SERIAL) == 4
    assert sorted(h["run"] for h in fake_snpe.run_history(SERIAL)) == [1, 2, 3, 4]


@pytest.mark.integration
def test_fixture_environment(fake_snpe: FakeSnpe) -> None:
    env = fake_snpe.env()
    path = env["PATH"].split(":")
    assert path[:2] == [str(fake_snpe.bin_dir), str(Path(sys.executable).parent)]
    assert env[snpe_fake.STATE_ENV] == str(fake_snpe.state_dir)
    assert (fake_snpe.sdk_root / "lib" / "aarch64-android" / "libSNPE.so").is_file()
    with pytest.raises(TypeError):
        fake_snpe.add_device("X", colour="red")
    assert fake_snpe.state()["tools"]["info_malformed"] is False
