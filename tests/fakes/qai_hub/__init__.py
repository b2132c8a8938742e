"""A fake ``qai_hub`` for tests: the subset of Qualcomm AI Hub's client that facenas' bridge uses.

Names, signatures and return types follow qai-hub's documented API (``Device``, ``get_devices``,
``upload_model``, ``submit_quantize_job``/``submit_compile_job``/``submit_profile_job``, ``Job.wait``
returning a ``JobStatus``, ``get_target_model``, ``download_profile``, ``QuantizeDtype``, the ``Error``/
``UserError``/``InternalError`` exceptions). No network: jobs finish at once unless configured otherwise.

Behaviour comes from the JSON file named by ``FACENAS_FAKE_QAIHUB`` (every key optional)::

    {"auth_error": false,            # every API call raises APIException(401)
     "devices": ["Samsung Galaxy S23 (Family)"],
     "quantize_failure": null,       # a message: the quantize job ends FAILED with it
     "compile_failure": null, "profile_failure": null,
     "estimated_us": 1234,           # execution_summary.estimated_inference_time
     "job_seconds": 0,               # each job takes this long; wait(timeout) shorter raises TimeoutError
     "hang": false,                  # upload_model blocks forever (after logging {"call": "hang", "pid"})
     "requests_log": "/tmp/x.jsonl"} # one JSON line per API call, with what it was given
"""

from __future__ import annotations

import enum
import hashlib
import itertools
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__version__ = "0.0.0+fake"

_ids = itertools.count(1)


def _config() -> dict[str, Any]:
    path = os.environ.get("FACENAS_FAKE_QAIHUB")
    return json.loads(Path(path).read_text()) if path else {}


def _log(call: str, **fields: Any) -> None:
    path = _config().get("requests_log")
    if path:
        with open(path, "a") as log:
            log.write(json.dumps({"call": call, **fields}) + "\n")


def _api() -> dict[str, Any]:
    """Every API call authenticates first, as the real client does."""
    config = _config()
    if config.get("auth_error"):
        raise APIException("API authentication failure; please check your API token.", status_code=401)
    return config


# ---------------------------------------------------------------------------------------- exceptions


class Error(Exception):
    """Base class for all exceptions explicitly thrown by the API."""


class UserError(Error):
    """Something in the user input caused a failure."""


class InternalError(Error):
    """Internal API failure."""


class APIException(Exception):  # noqa: N818 - qai-hub's name
    """An HTTP error answered by AI Hub's REST API."""

    def __init__(self, message: str, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code


# ---------------------------------------------------------------------------------------- objects


@dataclass(frozen=True)
class Device:
    """A target device: a name, optionally an os and attributes."""

    name: str = ""
    os: str = ""
    attributes: str | list[str] = field(default_factory=list)


class QuantizeDtype(enum.Enum):
    INT4 = 0
    INT8 = 1
    INT16 = 2


@dataclass
class Model:
    model_id: str
    name: str
    model_type: str = "ONNX"
    producer: Job | None = None


class JobStatus:
    """Status of a job: ``code`` is a State name, ``message`` the reason of a failure."""

    class State(enum.Enum):
        UNSPECIFIED = 0
        CREATED = 1
        SUCCESS = 10
        FAILED = 30
        OPTIMIZING_MODEL = 50
        PROVISIONING_DEVICE = 60
        MEASURING_PERFORMANCE = 70
        QUANTIZING_MODEL = 90

    def __init__(self, state: JobStatus.State, message: str | None = None) -> None:
        self.state = state
        self.code = state.name
        self.message = message

    @property
    def success(self) -> bool:
        return self.state == JobStatus.State.SUCCESS

    @property
    def failure(self) -> bool:
        return self.state == JobStatus.State.FAILED

    @property
    def finished(self) -> bool:
        return self.success or self.failure

    @property
    def running(self) -> bool:
        return not self.finished

    @property
    def pending(self) -> bool:
        return False


class Job:
    """A submitted job; finishes ``job_seconds`` after submission with ``failure`` or success."""

    kind = "job"

    def __init__(self, name: str | None, failure: str | None, seconds: float) -> None:
        self.job_id = f"j{self.kind[0]}{next(_ids):06d}"
        self.name = name or self.kind
        self._failure = failure
        self._done_at = time.monotonic() + seconds

    @property
    def url(self) -> str:
        return f"https://fake.aihub.invalid/jobs/{self.job_id}/"

    def get_status(self) -> JobStatus:
        if time.monotonic() < self._done_at:
            return JobStatus(JobStatus.State.OPTIMIZING_MODEL)
        if self._failure:
            return JobStatus(JobStatus.State.FAILED, self._failure)
        return JobStatus(JobStatus.State.SUCCESS)

    def wait(self, timeout: int | None = None) -> JobStatus:
        remaining = self._done_at - time.monotonic()
        if timeout is not None and remaining > timeout:
            time.sleep(timeout)
            raise TimeoutError(f"job {self.job_id} did not finish in {timeout} s")
        time.sleep(max(0.0, remaining))
        return self.get_status()


class _ProducesModel(Job):
    def get_target_model(self) -> Model | None:
        status = self.wait()
        if not status.success:
            return None
        return Model(model_id=f"m{self.job_id}", name=f"{self.name} output", producer=self)


class QuantizeJob(_ProducesModel):
    kind = "quantize"


class CompileJob(_ProducesModel):
    kind = "compile"


class ProfileJob(Job):
    kind = "profile"

    def __init__(self, name: str | None, failure: str | None, seconds: float, device: Device) -> None:
        super().__init__(name, failure, seconds)
        self.device = device

    def download_profile(self) -> dict[str, Any]:
        if not self.wait().success:
            raise UserError(f"profile job {self.job_id} failed; it has no profile")
        us = _config().get("estimated_us", 1234)
        return {
            "execution_summary": {
                "estimated_inference_time": us,
                "estimated_inference_peak_memory": 4_000_000,
                "all_inference_times": [us, us + 1, us - 1],
            },
            "execution_detail": [],
        }


# ---------------------------------------------------------------------------------------- API


def set_verbose(verbose: bool = True) -> None:
    _log("set_verbose", verbose=verbose)


def get_devices(name: str = "", os: str = "", attributes: str | list[str] | None = None) -> list[Device]:
    config = _api()
    names = config.get("devices", ["Samsung Galaxy S23 (Family)"])
    _log("get_devices", name=name)
    return [
        Device(n, "13", ["chipset:qualcomm-snapdragon-8gen2", "framework:qnn"])
        for n in names
        if not name or n == name
    ]


def upload_model(model: str | Path, name: str | None = None) -> Model:
    config = _api()
    if config.get("hang"):
        _log("hang", pid=os.getpid())
        while True:
            time.sleep(60)
    sys.stdout.write(f"Uploading {Path(model).name}\n")  # like the real client's progress output
    data = Path(model).read_bytes()
    _log("upload_model", sha256=hashlib.sha256(data).hexdigest(), size=len(data), path=str(model))
    return Model(model_id=f"m{next(_ids):06d}", name=name or Path(model).name)


def _check_device(config: dict[str, Any], device: Device) -> None:
    if not isinstance(device, Device):
        raise UserError(f"device must be a Device, got {type(device).__name__}")
    if device.name not in config.get("devices", ["Samsung Galaxy S23 (Family)"]):
        raise UserError(f"Device {device.name!r} is not available")


def submit_quantize_job(
    model: Model | str,
    calibration_data: dict[str, list[Any]],
    weights_dtype: QuantizeDtype = QuantizeDtype.INT8,
    activations_dtype: QuantizeDtype = QuantizeDtype.INT8,
    name: str | None = None,
    options: str = "",
) -> QuantizeJob:
    config = _api()
    if not isinstance(model, Model | str):
        raise UserError(f"model must be a Model or a path, got {type(model).__name__}")
    calibration = {
        key: [{"shape": list(a.shape), "dtype": str(a.dtype)} for a in arrays]
        for key, arrays in calibration_data.items()
    }
    _log(
        "submit_quantize_job",
        model=getattr(model, "model_id", str(model)),
        calibration=calibration,
        weights_dtype=weights_dtype.name,
        activations_dtype=activations_dtype.name,
        name=name,
        options=options,
    )
    return QuantizeJob(name, config.get("quantize_failure"), config.get("job_seconds", 0))


def submit_compile_job(
    model: Model | str,
    device: Device,
    name: str | None = None,
    input_specs: dict[str, Any] | None = None,
    options: str = "",
) -> CompileJob:
    config = _api()
    _check_device(config, device)
    producer = getattr(model, "producer", None)
    _log(
        "submit_compile_job",
        model=getattr(model, "model_id", str(model)),
        model_from=producer.kind if producer else None,
        device=device.name,
        input_specs={k: list(v) for k, v in (input_specs or {}).items()},
        options=options,
        name=name,
    )
    return CompileJob(name, config.get("compile_failure"), config.get("job_seconds", 0))


def submit_profile_job(
    model: Model,
    device: Device,
    name: str | None = None,
    input_shapes: dict[str, Any] | None = None,
    options: str = "",
) -> ProfileJob:
    config = _api()
    _check_device(config, device)
    producer = model.producer
    _log(
        "submit_profile_job",
        model=model.model_id,
        model_from=producer.kind if producer else None,
        device=device.name,
        options=options,
        name=name,
    )
    return ProfileJob(name, config.get("profile_failure"), config.get("job_seconds", 0), device)
