"""Tests of facenas.snp.aihub: the AI Hub backend and its bridge, against the fake ``qai_hub``.

The bridge runs for real, in a subprocess of this interpreter with ``tests/fakes`` on its PYTHONPATH, so
``import qai_hub`` finds the fake; the fake logs every API call it gets, and the tests read that log.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from facenas.data.synth import generate_dataset
from facenas.domain import Budget, EvalSpace
from facenas.errors import ArchNotEvaluable, Cancelled, InvalidInput, MeasurementError, Unavailable
from facenas.model.export import OnnxExport
from facenas.pipeline import arch_to_onnx
from facenas.snp import aihub
from facenas.snp.aihub import BRIDGE, OBJECTIVE, AiHubBackend, BridgeRun
from facenas.space import Arch, HgnetSearchSpace, ParamRange, SearchSpaceParams
from facenas.workers.base import DetachedWork
from tests.timing import scaled

FAKES = Path(__file__).resolve().parents[1] / "fakes"
DEVICE = "Samsung Galaxy S23 (Family)"
SPACE = EvalSpace(img_size=(64, 64))


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("aihub-data")
    generate_dataset(root, 8, size=64, seed=0)
    return root


@pytest.fixture(scope="module")
def arch() -> Arch:
    return HgnetSearchSpace(SearchSpaceParams(img_size=(64, 64)), seed=0).sample_valid(ParamRange(1e4, 3e5))


class Fake:
    """Configures the fake qai_hub (through a JSON file) and reads what it was asked."""

    def __init__(self, root: Path) -> None:
        self.config_path = root / "fake_qaihub.json"
        self.log_path = root / "requests.jsonl"

    def env(self, **config: Any) -> dict[str, str]:
        self.config_path.write_text(json.dumps({"requests_log": str(self.log_path), **config}))
        return {**os.environ, "PYTHONPATH": str(FAKES), "FACENAS_FAKE_QAIHUB": str(self.config_path)}

    def calls(self, name: str | None = None) -> list[dict[str, Any]]:
        if not self.log_path.exists():
            return []
        calls = [json.loads(line) for line in self.log_path.read_text().splitlines()]
        return [c for c in calls if name is None or c["call"] == name]


@pytest.fixture
def fake(tmp_path: Path) -> Fake:
    return Fake(tmp_path)


def _backend(dataset_dir: Path, env: dict[str, str], **kwargs: Any) -> AiHubBackend:
    kwargs.setdefault("timeout_s", 60)
    return AiHubBackend(sys.executable, DEVICE, dataset_dir, calibration_images=4, env=env, **kwargs)


def _evaluate(backend: AiHubBackend, arch: Arch, check_alive: Callable[[], None] = lambda: None) -> Any:
    return backend.evaluate(arch, OBJECTIVE, SPACE, Budget(), DetachedWork(check=check_alive))


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


# ---------------------------------------------------------------------------------------- success


@pytest.mark.slow
def test_success_reports_seconds_and_sends_the_model_calibration_and_device(
    dataset_dir: Path, arch: Arch, fake: Fake, monkeypatch: pytest.MonkeyPatch
) -> None:
    exports: list[OnnxExport] = []

    def spy(*args: Any) -> OnnxExport:
        exports.append(arch_to_onnx(*args))
        return exports[-1]

    monkeypatch.setattr(aihub, "arch_to_onnx", spy)
    backend = _backend(dataset_dir, fake.env(estimated_us=2500))
    result = _evaluate(backend, arch)

    assert result.value == pytest.approx(2500e-6) and result.unit == "s"
    details = result.details
    assert details["estimated_inference_time_us"] == 2500
    assert details["backend"] == "qai-hub" and details["emulated"] is False
    assert details["runtime"] == "qnn_dlc" and details["qai_hub_version"] == "0.0.0+fake"
    assert details["device"]["name"] == DEVICE and details["device"]["profiled_on"] == DEVICE
    assert "chipset:qualcomm-snapdragon-8gen2" in details["device"]["attributes"]
    ids = [details[f"{stage}_job_id"] for stage in ("quantize", "compile", "profile")]
    assert all(ids) and len(set(ids)) == 3
    assert details["calibration_images"] == 4
    json.dumps(details)  # stored as JSON

    (upload,) = fake.calls("upload_model")
    assert upload["sha256"] == hashlib.sha256(exports[0].model_bytes).hexdigest()
    (quantize,) = fake.calls("submit_quantize_job")
    assert quantize["calibration"] == {"input_0": [{"shape": [1, 3, 64, 64], "dtype": "float32"}] * 4}
    assert quantize["weights_dtype"] == quantize["activations_dtype"] == "INT8"
    (compile_,) = fake.calls("submit_compile_job")
    assert compile_["model_from"] == "quantize" and compile_["device"] == DEVICE
    assert compile_["input_specs"] == {"input_0": [1, 3, 64, 64]}
    assert compile_["options"] == "--target_runtime qnn_dlc"
    (profile,) = fake.calls("submit_profile_job")
    assert profile["model_from"] == "compile" and profile["device"] == DEVICE


def test_target_and_check(dataset_dir: Path, fake: Fake) -> None:
    backend = _backend(dataset_dir, fake.env())
    target = backend.target(OBJECTIVE, SPACE)
    assert target.key == "aihub/samsung-galaxy-s23-family/qnn_dlc/64x64" and target.emulated is False
    assert DEVICE in target.description and "AI Hub" in target.description
    tuned = _backend(dataset_dir, fake.env(), compile_options="--compute_unit npu")
    assert tuned.target(OBJECTIVE, SPACE).key.startswith(target.key + "/o")
    assert backend.check()["name"] == DEVICE
    assert backend.capacity == 4


# ---------------------------------------------------------------------------------------- failures


@pytest.mark.parametrize(
    ("stage", "error"),
    [("quantize", ArchNotEvaluable), ("compile", ArchNotEvaluable), ("profile", MeasurementError)],
)
def test_failed_job_says_whose_fault_with_its_reason(
    dataset_dir: Path, arch: Arch, fake: Fake, stage: str, error: type[Exception]
) -> None:
    """A model AI Hub will not quantize or compile cannot be evaluated on this target; a failed profile
    job may be the hosted device's."""
    backend = _backend(dataset_dir, fake.env(**{f"{stage}_failure": "Op 'Foo' is not supported"}))
    with pytest.raises(error, match=rf"{stage} job \S+ ended FAILED: Op 'Foo' is not supported") as info:
        _evaluate(backend, arch)
    assert isinstance(info.value, ArchNotEvaluable) == (stage != "profile")
    later = {"quantize": ["compile", "profile"], "compile": ["profile"], "profile": []}[stage]
    assert not any(fake.calls(f"submit_{s}_job") for s in later)


def test_rejected_token_is_unavailable_with_the_fix(dataset_dir: Path, arch: Arch, fake: Fake) -> None:
    backend = _backend(dataset_dir, fake.env(auth_error=True))
    with pytest.raises(Unavailable, match=r"qai-hub configure --api_token"):
        backend.check()
    with pytest.raises(Unavailable, match=r"rejected the API token"):
        _evaluate(backend, arch)


def test_unknown_device_is_invalid_input_at_check(dataset_dir: Path, fake: Fake) -> None:
    backend = _backend(dataset_dir, fake.env(devices=["Snapdragon X Elite CRD"]))
    with pytest.raises(InvalidInput, match=r"not one of AI Hub's devices.*qai-hub list-devices"):
        backend.check()


@pytest.mark.slow
def test_hung_bridge_is_killed_at_the_timeout(dataset_dir: Path, arch: Arch, fake: Fake) -> None:
    backend = _backend(dataset_dir, fake.env(hang=True), timeout_s=3)
    start = time.monotonic()
    with pytest.raises(Unavailable, match=r"did not finish within 3 s"):
        _evaluate(backend, arch)
    assert time.monotonic() - start < 3 + scaled(3)  # killed at the timeout, not when it would end
    (hang,) = fake.calls("hang")
    assert _gone(hang["pid"])


@pytest.mark.slow
def test_cancellation_kills_the_bridge(dataset_dir: Path, arch: Arch, fake: Fake) -> None:
    backend = _backend(dataset_dir, fake.env(hang=True), timeout_s=30)

    def check_alive() -> None:
        if fake.calls("hang"):
            raise Cancelled("caller went away")

    start = time.monotonic()
    with pytest.raises(Cancelled):
        _evaluate(backend, arch, check_alive)
    assert time.monotonic() - start < scaled(15)
    (hang,) = fake.calls("hang")
    assert _gone(hang["pid"])


@pytest.mark.slow
def test_slow_jobs_time_out_in_the_bridge(tmp_path: Path, fake: Fake) -> None:
    """The bridge stops waiting at its own deadline (a little before the backend's) and says which job."""
    model = tmp_path / "model.onnx"
    model.write_bytes(b"not really onnx")
    calibration = tmp_path / "c.npy"
    np.save(calibration, np.zeros((1, 3, 64, 64), np.float32))
    request = {
        "action": "profile",
        "device": DEVICE,
        "model_path": str(model),
        "input_name": "input_0",
        "input_shape": [1, 3, 64, 64],
        "calibration_paths": [str(calibration)],
        "runtime": "qnn_dlc",
        "timeout_s": 1.5,
    }
    response = _run_bridge(request, fake.env(job_seconds=60))
    assert response["ok"] is False and response["kind"] == "timeout"
    assert "quantize job" in response["message"] and response["quantize_job_id"]


@pytest.mark.integration
def test_bridge_rejects_malformed_requests(fake: Fake) -> None:
    response = _run_bridge({"action": "profile", "device": DEVICE}, fake.env())
    assert response["ok"] is False and response["kind"] == "invalid"
    assert "model_path" in response["message"]


def _run_bridge(request: dict[str, Any], env: dict[str, str]) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, str(BRIDGE)], input=json.dumps(request), env=env, capture_output=True, text=True
    )
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1, done.stdout + done.stderr  # the protocol: exactly one line on stdout
    response: dict[str, Any] = json.loads(lines[0])
    return response


@pytest.mark.integration
def test_missing_qai_hub_says_how_to_install(dataset_dir: Path) -> None:
    if importlib.util.find_spec("qai_hub") is not None:
        pytest.skip("qai-hub is installed in this interpreter")
    backend = AiHubBackend(sys.executable, DEVICE, dataset_dir)  # default env: no PYTHONPATH, no fake
    with pytest.raises(Unavailable, match=r"qai-hub is not installed in .*pip install qai-hub"):
        backend.check()


def test_missing_interpreter_is_unavailable(dataset_dir: Path, tmp_path: Path) -> None:
    backend = AiHubBackend(str(tmp_path / "no-venv" / "python"), DEVICE, dataset_dir)
    with pytest.raises(Unavailable, match=r"cannot run the qai-hub interpreter"):
        backend.check()


@pytest.mark.parametrize(
    "stdout",
    [
        "",
        "Traceback (most recent call last):\n  boom\n",
        "[1, 2]\n",
        '{"ok": "yes"}\n',
        '{"ok": true}\n',
        '{"ok": true, "estimated_inference_time_us": -3}\n',
        '{"ok": false, "kind": "weird", "message": "?"}\n',
    ],
)
@pytest.mark.integration
def test_malformed_bridge_output_is_a_measurement_error(dataset_dir: Path, arch: Arch, stdout: str) -> None:
    def runner(argv: Any, stdin: str, **_: Any) -> BridgeRun:
        assert json.loads(stdin)["action"] == "profile"
        return BridgeRun(1, stdout, "some stderr")

    backend = AiHubBackend(sys.executable, DEVICE, dataset_dir, calibration_images=2, runner=runner)
    with pytest.raises(MeasurementError):
        _evaluate(backend, arch)


@pytest.mark.integration
def test_configuration_is_validated(dataset_dir: Path, arch: Arch) -> None:
    with pytest.raises(InvalidInput, match=r"device.*capacity.*runtime"):
        AiHubBackend(sys.executable, " ", dataset_dir, capacity=0, runtime="qnn dlc; rm")
    backend = AiHubBackend(sys.executable, DEVICE, dataset_dir)
    with pytest.raises(InvalidInput, match=r"not served here"):
        backend.evaluate(arch, "CPU ONNX Latency (s)", SPACE, Budget(), DetachedWork())
