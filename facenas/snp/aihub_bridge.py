"""Qualcomm AI Hub bridge: runs in a separate interpreter that has ``qai-hub`` installed.

qai-hub pins an older protobuf than facenas' generated gRPC code needs, so it is never imported in the
service process. :mod:`facenas.snp.aihub` runs this file with the qai-hub venv's Python
(``/opt/qaihub/bin/python aihub_bridge.py``): it imports only the standard library, ``qai_hub`` and
``numpy`` (a dependency of qai-hub), reads one JSON request on stdin and writes one JSON response line on
stdout. Anything qai-hub prints goes to stderr.

Requests::

    {"action": "check", "device": "Samsung Galaxy S23 (Family)"}
    {"action": "profile", "device": ..., "model_path": "/tmp/x/model.onnx", "input_name": "input_0",
     "input_shape": [1, 3, 256, 256], "calibration_paths": ["/tmp/x/calib_000.npy", ...],
     "runtime": "qnn_dlc", "compile_options": "", "profile_options": "", "timeout_s": 3540, "name": "..."}

Responses: ``{"ok": true, ...}`` (for profile: ``estimated_inference_time_us``, the three job ids,
``device``, ``qai_hub_version``) or ``{"ok": false, "kind": KIND, "message": ...}`` where KIND is one of
``auth`` (no or rejected API token), ``device`` (unknown device name), ``job_failed`` (an AI Hub job
failed; ``message`` is AI Hub's reason, ``failed_stage`` which job: quantize, compile or profile),
``timeout`` (the jobs did not finish within ``timeout_s``), ``invalid`` (a malformed request, or AI Hub
rejected the input), ``not_installed`` (no qai-hub in this interpreter) and ``internal`` (AI Hub or
network failure, or a bug here).

Int8: the float ONNX model is quantized by an AI Hub **quantize job** (``submit_quantize_job``, weights
and activations INT8, i.e. w8a8 like SNPE's 8-bit DLCs), calibrated with the dataset images sent in the
request (float32 NCHW ``(1, 3, h, w)`` arrays, the model's own input layout). AI Hub's quantization guide
documents this flow: a quantize job turns an unquantized ONNX model into a quantized (QDQ) ONNX model,
which a compile job then compiles for the target runtime. It replaced the compile job's own quantization
options, and it keeps the calibration data explicit. The quantized model is compiled with
``--target_runtime <runtime>`` (default ``qnn_dlc``: a QAIRT DLC, the SNPE/QNN container format) plus
``compile_options``; a profile job then runs it on the hosted device, and the result is the profile's
``execution_summary.estimated_inference_time`` (microseconds).

For a manual check of the installation: ``/opt/qaihub/bin/python aihub_bridge.py --check "DEVICE"``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

KINDS = ("auth", "device", "job_failed", "timeout", "invalid", "not_installed", "internal")
_AUTH_WORDS = ("api token", "api_token", "authenticat", "unauthori", "credential", "configure", "client.ini")


class BridgeError(Exception):
    """A failure reported to the caller as ``{"ok": false, "kind": kind, "message": ...}``."""

    def __init__(self, kind: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.kind = kind
        self.extra = extra


# ---------------------------------------------------------------------------------------- qai-hub


def _import_hub() -> Any:
    """``qai_hub``, or BridgeError(not_installed)."""
    try:
        import qai_hub  # type: ignore[import-not-found]
    except ImportError as exc:
        raise BridgeError(
            "not_installed", f"qai-hub is not installed in {sys.executable} ({exc})", python=sys.executable
        ) from exc
    if hasattr(qai_hub, "set_verbose"):
        qai_hub.set_verbose(False)
    return qai_hub


def _version(hub: Any) -> str:
    version = getattr(hub, "__version__", None)
    if version:
        return str(version)
    try:
        from importlib.metadata import version as dist_version

        return dist_version("qai-hub")
    except Exception:
        return "unknown"


def _classify(hub: Any, exc: BaseException, stage: str) -> BridgeError:
    """Map an exception raised by qai-hub during ``stage`` to a BridgeError kind."""
    message = f"{stage}: {type(exc).__name__}: {exc}"
    lowered = str(exc).lower()
    status = getattr(exc, "status_code", None)
    user_error = getattr(hub, "UserError", None)
    internal_error = getattr(hub, "InternalError", None)
    if isinstance(exc, TimeoutError):
        return BridgeError("timeout", message)
    if status in (401, 403) or any(word in lowered for word in _AUTH_WORDS):
        return BridgeError("auth", message)
    if isinstance(status, int) and 400 <= status < 500 and status != 429:
        return BridgeError("invalid", message)
    if isinstance(user_error, type) and isinstance(exc, user_error):
        return BridgeError("invalid", message)
    if isinstance(internal_error, type) and isinstance(exc, internal_error):
        return BridgeError("internal", message)
    return BridgeError("internal", message)  # 5xx, 429, network errors, anything unexpected


@contextlib.contextmanager
def _hub_call(hub: Any, stage: str) -> Iterator[None]:
    """Convert exceptions of the enclosed qai-hub calls into BridgeErrors."""
    try:
        yield
    except BridgeError:
        raise
    except Exception as exc:
        raise _classify(hub, exc, stage) from exc


def _device_info(hub: Any, name: str) -> dict[str, Any]:
    """The device named exactly ``name`` (its name, os and attributes); BridgeError(device) if unknown."""
    with _hub_call(hub, "get_devices"):
        devices = list(hub.get_devices(name=name))
    if not devices:
        raise BridgeError(
            "device", f"device {name!r} is not one of AI Hub's devices (`qai-hub list-devices` lists them)"
        )
    return _describe_device(devices[0])


def _describe_device(device: Any) -> dict[str, Any]:
    attributes = getattr(device, "attributes", [])
    if isinstance(attributes, str):
        attributes = [attributes]
    return {
        "name": str(getattr(device, "name", "")),
        "os": str(getattr(device, "os", "")),
        "attributes": [str(a) for a in attributes],
    }


def _wait(hub: Any, job: Any, stage: str, deadline: float) -> None:
    """Block until ``job`` finishes; BridgeError(timeout) past ``deadline``, (job_failed) if it failed."""
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise BridgeError("timeout", f"no time left to wait for {stage} job {job.job_id}")
    try:
        status = job.wait(timeout=max(1, int(remaining)))
    except TimeoutError as exc:
        raise BridgeError(
            "timeout",
            f"{stage} job {job.job_id} did not finish in time; it may still be running: {_url(job)}",
        ) from exc
    except Exception as exc:
        raise _classify(hub, exc, f"waiting for {stage} job {job.job_id}") from exc
    if not hasattr(status, "success"):  # documented as a JobStatus, but be lenient
        with _hub_call(hub, f"status of {stage} job {job.job_id}"):
            status = job.get_status()
    if not getattr(status, "success", False):
        code = getattr(status, "code", "?")
        reason = getattr(status, "message", None) or "no reason given"
        raise BridgeError(
            "job_failed", f"{stage} job {job.job_id} ended {code}: {reason} ({_url(job)})", failed_stage=stage
        )


def _url(job: Any) -> str:
    try:
        return str(job.url)
    except Exception:
        return "(no url)"


# ---------------------------------------------------------------------------------------- actions


def _check(request: dict[str, Any]) -> dict[str, Any]:
    device = _string(request, "device")
    hub = _import_hub()
    return {"ok": True, "device": _device_info(hub, device), "qai_hub_version": _version(hub)}


def _profile(request: dict[str, Any]) -> dict[str, Any]:
    device_name = _string(request, "device")
    model_path = Path(_string(request, "model_path"))
    input_name = _string(request, "input_name")
    shape = request.get("input_shape")
    if not isinstance(shape, list) or not shape or not all(isinstance(d, int) and d > 0 for d in shape):
        raise BridgeError("invalid", f"input_shape must be a list of positive ints, got {shape!r}")
    paths = request.get("calibration_paths")
    if not isinstance(paths, list) or not paths or not all(isinstance(p, str) for p in paths):
        raise BridgeError("invalid", "calibration_paths must be a non-empty list of .npy paths")
    timeout_s = request.get("timeout_s")
    if not isinstance(timeout_s, int | float) or timeout_s <= 0:
        raise BridgeError("invalid", f"timeout_s must be a positive number, got {timeout_s!r}")
    runtime = _string(request, "runtime")
    compile_options = " ".join([f"--target_runtime {runtime}", str(request.get("compile_options", ""))])
    compile_options = compile_options.strip()
    profile_options = str(request.get("profile_options", "")).strip()
    name = str(request.get("name", "facenas"))
    deadline = time.monotonic() + float(timeout_s)

    hub = _import_hub()
    import numpy as np

    try:
        arrays = [np.load(p, allow_pickle=False) for p in paths]
    except (OSError, ValueError) as exc:
        raise BridgeError("invalid", f"cannot read calibration data: {exc}") from exc
    info = _device_info(hub, device_name)
    ids: dict[str, Any] = {}
    try:
        with _hub_call(hub, "upload_model"):
            device = hub.Device(device_name)
            model = hub.upload_model(str(model_path))
        with _hub_call(hub, "submit_quantize_job"):
            quantize_job = hub.submit_quantize_job(
                model=model,
                calibration_data={input_name: arrays},
                weights_dtype=hub.QuantizeDtype.INT8,
                activations_dtype=hub.QuantizeDtype.INT8,
                name=f"{name} quantize",
            )
        ids["quantize_job_id"] = quantize_job.job_id
        _wait(hub, quantize_job, "quantize", deadline)
        with _hub_call(hub, "quantize get_target_model"):
            quantized = quantize_job.get_target_model()
        if quantized is None:
            raise BridgeError("job_failed", f"quantize job {quantize_job.job_id} produced no model")
        with _hub_call(hub, "submit_compile_job"):
            compile_job = hub.submit_compile_job(
                model=quantized,
                device=device,
                input_specs={input_name: tuple(shape)},
                options=compile_options,
                name=f"{name} compile",
            )
        ids["compile_job_id"] = compile_job.job_id
        _wait(hub, compile_job, "compile", deadline)
        with _hub_call(hub, "compile get_target_model"):
            target_model = compile_job.get_target_model()
        if target_model is None:
            raise BridgeError("job_failed", f"compile job {compile_job.job_id} produced no model")
        with _hub_call(hub, "submit_profile_job"):
            profile_job = hub.submit_profile_job(
                model=target_model, device=device, options=profile_options, name=f"{name} profile"
            )
        ids["profile_job_id"] = profile_job.job_id
        _wait(hub, profile_job, "profile", deadline)
        with _hub_call(hub, "download_profile"):
            profile = profile_job.download_profile()
    except BridgeError as exc:
        exc.extra.update(ids)
        raise
    summary = profile.get("execution_summary") if isinstance(profile, dict) else None
    estimate = summary.get("estimated_inference_time") if isinstance(summary, dict) else None
    if isinstance(estimate, bool) or not isinstance(estimate, int | float) or not estimate > 0:
        raise BridgeError(
            "job_failed",
            f"profile job {profile_job.job_id} has no usable execution_summary.estimated_inference_time "
            f"({estimate!r})",
            **ids,
        )
    profiled = getattr(profile_job, "device", None)
    if profiled is not None:
        info["profiled_on"] = _describe_device(profiled)["name"]
    peak = summary.get("estimated_inference_peak_memory") if isinstance(summary, dict) else None
    return {
        "ok": True,
        "estimated_inference_time_us": float(estimate),
        "estimated_inference_peak_memory": peak if isinstance(peak, int | float) else None,
        **ids,
        "job_urls": {
            "quantize": _url(quantize_job),
            "compile": _url(compile_job),
            "profile": _url(profile_job),
        },
        "device": info,
        "runtime": runtime,
        "compile_options": compile_options,
        "profile_options": profile_options,
        "calibration_images": len(arrays),
        "qai_hub_version": _version(hub),
    }


def _string(request: dict[str, Any], key: str) -> str:
    value = request.get(key)
    if not isinstance(value, str) or not value:
        raise BridgeError("invalid", f"{key} must be a non-empty string, got {value!r}")
    return value


ACTIONS = {"check": _check, "profile": _profile}


def handle(request: Any) -> dict[str, Any]:
    """Serve one request; failures come back as ``{"ok": false, ...}``, never as exceptions."""
    try:
        if not isinstance(request, dict) or request.get("action") not in ACTIONS:
            raise BridgeError("invalid", f"request must be an object with action in {sorted(ACTIONS)}")
        return ACTIONS[request["action"]](request)
    except BridgeError as exc:
        return {"ok": False, "kind": exc.kind, "message": str(exc), **exc.extra}
    except Exception as exc:
        traceback.print_exc(file=sys.stderr)
        return {"ok": False, "kind": "internal", "message": f"bridge failure: {type(exc).__name__}: {exc}"}


def _read_request(check_device: str | None) -> Any:
    if check_device:
        return {"action": "check", "device": check_device}
    try:
        return json.loads(sys.stdin.read())
    except ValueError:
        return None  # handle() answers "invalid"


def main(argv: list[str] | None = None) -> int:
    """Read a request (stdin, or ``--check DEVICE``), write the response line to stdout."""
    parser = argparse.ArgumentParser(description="Qualcomm AI Hub bridge of facenas (JSON on stdin/stdout)")
    parser.add_argument("--check", metavar="DEVICE", help="check the credentials and the device name")
    args = parser.parse_args(argv)
    out = sys.stdout
    with contextlib.redirect_stdout(sys.stderr):  # qai-hub's progress output must not corrupt ours
        response = handle(_read_request(args.check))
    out.write(json.dumps(response, default=str) + "\n")
    out.flush()
    return 0 if response.get("ok") else 1


if __name__ == "__main__":
    # Running as a script puts this file's directory first on sys.path; facenas modules there must not
    # shadow anything qai-hub imports.
    if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
        del sys.path[0]
    sys.exit(main())
