"""``SNP Quantized Latency (s)`` on Qualcomm AI Hub's hosted Snapdragon devices.

Each evaluation exports the architecture to ONNX, quantizes it to int8 with an AI Hub quantize job
(calibrated on dataset images), compiles it for the target runtime and profiles it on the named device;
the value is AI Hub's estimated inference time, in seconds. The jobs run remotely, so several
evaluations can be in flight at once (``capacity``).

qai-hub needs an older protobuf than facenas, so it lives in its own virtual environment and is never
imported here: :mod:`facenas.snp.aihub_bridge` (stdlib only) runs in that environment's interpreter, one
subprocess per request, speaking JSON over stdin/stdout. See ``docs/aihub.md``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from facenas.domain import Budget, EvalSpace
from facenas.errors import ArchNotEvaluable, InvalidInput, MeasurementError, Unavailable
from facenas.latency.quantized import CalibrationCache, FloatArray
from facenas.model.export import OnnxExport
from facenas.pipeline import arch_to_onnx
from facenas.snp.process import ToolTimeout, run_tool
from facenas.space.hgnet import Arch
from facenas.workers.base import (
    CheckAlive,
    EvaluationBackend,
    Measurement,
    TargetInfo,
    Work,
    space_params_for,
)

OBJECTIVE = "SNP Quantized Latency (s)"
BACKEND = "qai-hub"
BRIDGE = Path(__file__).with_name("aihub_bridge.py")
DEFAULT_RUNTIME = "qnn_dlc"
INSTALL_HINT = "pip install qai-hub into a separate venv (see docs/aihub.md)"
#: AI Hub jobs whose failure is the model's: it will not quantize or compile for this target, on any
#: replica. A failed profile job may be the hosted device's, and stays a MeasurementError.
MODEL_STAGES = ("quantize", "compile")

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BridgeRun:
    """What a bridge process left behind."""

    returncode: int
    stdout: str
    stderr: str


class Runner(Protocol):
    """Runs the bridge command with ``stdin`` as its input; raises Unavailable past ``timeout_s``."""

    def __call__(
        self,
        argv: Sequence[str],
        stdin: str,
        *,
        timeout_s: float,
        check_alive: CheckAlive,
        env: Mapping[str, str] | None,
    ) -> BridgeRun: ...


def run_bridge(
    argv: Sequence[str],
    stdin: str,
    *,
    timeout_s: float,
    check_alive: CheckAlive,
    env: Mapping[str, str] | None,
) -> BridgeRun:
    """Run the bridge (its process group is killed when ``check_alive`` raises, which is re-raised).

    Unavailable when the interpreter cannot be started or the bridge runs past ``timeout_s``.
    """
    try:
        result = run_tool(argv, timeout_s, check_alive, env=env, stdin=stdin)
    except ToolTimeout as exc:
        raise Unavailable(f"the AI Hub bridge did not finish within {timeout_s:g} s and was killed") from exc
    except MeasurementError as exc:  # the interpreter could not be started
        raise Unavailable(f"cannot run the qai-hub interpreter {argv[0]!r}: {exc}; {INSTALL_HINT}") from exc
    return BridgeRun(result.returncode, result.stdout, result.stderr)


def bridge_env() -> dict[str, str]:
    """This process's environment without PYTHONPATH/PYTHONHOME: the qai-hub venv must not see ours."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "device"


def _tail(text: str, limit: int = 2000) -> str:
    text = text.strip()
    return text if len(text) <= limit else "..." + text[-limit:]


class AiHubBackend(EvaluationBackend):
    """int8 latency estimated by Qualcomm AI Hub on one hosted device; ``capacity`` jobs at once."""

    objectives = (OBJECTIVE,)

    def __init__(
        self,
        python: str,
        device: str,
        dataset_dir: Path,
        calibration_images: int = 16,
        timeout_s: float = 3600,
        capacity: int = 4,
        runtime: str = DEFAULT_RUNTIME,
        compile_options: str = "",
        profile_options: str = "",
        runner: Runner = run_bridge,
        env: Mapping[str, str] | None = None,
        data_cache: str = "auto",
    ):
        """``python``: interpreter of the qai-hub venv; ``device``: an AI Hub device name;
        ``timeout_s``: limit of one evaluation (quantize, compile and profile jobs together);
        ``compile_options``/``profile_options``: extra AI Hub job options (they change the target key);
        ``env``: the bridge's environment (default :func:`bridge_env`)."""
        problems = []
        if not python:
            problems.append("python: the qai-hub interpreter is required")
        if not device.strip():
            problems.append("device: an AI Hub device name is required")
        if isinstance(calibration_images, bool) or calibration_images < 1:
            problems.append(f"calibration_images: {calibration_images} must be >= 1")
        if not timeout_s > 0:
            problems.append(f"timeout_s: {timeout_s} must be > 0")
        if isinstance(capacity, bool) or capacity < 1:
            problems.append(f"capacity: {capacity} must be >= 1")
        if not re.fullmatch(r"[a-z0-9_]+", runtime):
            problems.append(f"runtime: {runtime!r} is not an AI Hub target runtime name")
        if problems:
            raise InvalidInput("; ".join(problems))
        self.python = python
        self.device = device
        self.dataset_dir = Path(dataset_dir)
        self.calibration_images = calibration_images
        self.timeout_s = float(timeout_s)
        self.capacity = capacity
        self.runtime = runtime
        self.compile_options = compile_options.strip()
        self.profile_options = profile_options.strip()
        self.runner = runner
        self.env = dict(env) if env is not None else bridge_env()
        self._calibration = CalibrationCache(self.dataset_dir, calibration_images, data_cache)

    # ------------------------------------------------------------------------------------ contract

    def target(self, objective: str, space: EvalSpace) -> TargetInfo:
        w, h = space.img_size
        key = f"aihub/{_slug(self.device)}/{self.runtime}/{w}x{h}"
        if self.compile_options or self.profile_options:
            options = f"{self.compile_options}\n{self.profile_options}".encode()
            key += f"/o{hashlib.sha256(options).hexdigest()[:8]}"
        return TargetInfo(
            key=key,
            description=(
                f"{self.device}, a Qualcomm AI Hub hosted device: AI Hub's estimated inference time of the "
                f"int8 (w8a8, AI Hub quantize job) model compiled for {self.runtime}"
            ),
            emulated=False,
        )

    def evaluate(
        self, arch: Arch, objective: str, space: EvalSpace, budget: Budget, work: Work
    ) -> Measurement:
        self.check_objective(objective)
        work.report("export")
        calibration = self._calibration.get(space.img_size)
        export = arch_to_onnx(arch, space_params_for(space), space.img_size)
        work.report("aihub")
        check_alive = work.check_alive
        started = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="facenas-aihub-") as tmp:
            request = self._profile_request(Path(tmp), export, calibration, f"facenas {arch.archid[:12]}")
            log = {"archid": arch.archid, "device": self.device, "runtime": self.runtime}
            logger.info("AI Hub evaluation started", extra=log)
            response = self._call(request, check_alive, self.timeout_s)
        us = response.get("estimated_inference_time_us")
        if isinstance(us, bool) or not isinstance(us, int | float) or not 0 < us < float("inf"):
            raise MeasurementError(f"AI Hub bridge returned no usable estimated_inference_time_us: {us!r}")
        seconds = time.monotonic() - started
        logger.info(
            "AI Hub evaluation done",
            extra={
                **log,
                "estimated_us": us,
                "seconds": round(seconds, 1),
                "profile_job_id": response.get("profile_job_id"),
            },
        )
        details = {
            "estimated_inference_time_us": float(us),
            "estimated_inference_peak_memory": response.get("estimated_inference_peak_memory"),
            "quantize_job_id": response.get("quantize_job_id"),
            "compile_job_id": response.get("compile_job_id"),
            "profile_job_id": response.get("profile_job_id"),
            "job_urls": response.get("job_urls", {}),
            "device": response.get("device", {"name": self.device}),
            "qai_hub_version": response.get("qai_hub_version"),
            "runtime": self.runtime,
            "compile_options": response.get("compile_options"),
            "profile_options": response.get("profile_options"),
            "quantization": "int8 weights and activations (AI Hub quantize job)",
            "calibration_images": len(calibration),
            "backend": BACKEND,
            "emulated": False,
            "seconds": round(seconds, 3),
        }
        return Measurement(float(us) / 1e6, "s", details)

    def check(self, timeout_s: float = 180) -> dict[str, Any]:
        """Check once, at start-up, that qai-hub runs, the API token works and the device exists.

        Returns the device's description; raises Unavailable or InvalidInput with what to do.
        """
        request = {"action": "check", "device": self.device}
        response = self._call(request, lambda: None, min(timeout_s, self.timeout_s))
        device = response.get("device")
        logger.info(
            "AI Hub ready",
            extra={
                "device": device,
                "qai_hub_version": response.get("qai_hub_version"),
                "python": self.python,
            },
        )
        return dict(device) if isinstance(device, Mapping) else {"name": self.device}

    # ------------------------------------------------------------------------------------ internals

    def _profile_request(
        self, workdir: Path, export: OnnxExport, calibration: Sequence[FloatArray], name: str
    ) -> dict[str, Any]:
        """Write the model and the calibration arrays (float32 NCHW) under ``workdir``; the request."""
        model_path = export.save(workdir / "model.onnx")
        paths = []
        for index, array in enumerate(calibration):
            path = workdir / f"calibration_{index:03d}.npy"
            np.save(path, np.ascontiguousarray(array, dtype=np.float32), allow_pickle=False)
            paths.append(str(path))
        margin = min(30.0, 0.1 * self.timeout_s)  # the bridge gives up first and can still say why
        return {
            "action": "profile",
            "device": self.device,
            "model_path": str(model_path),
            "input_name": export.input_name,
            "input_shape": list(export.input_shape),
            "calibration_paths": paths,
            "runtime": self.runtime,
            "compile_options": self.compile_options,
            "profile_options": self.profile_options,
            "timeout_s": self.timeout_s - margin,
            "name": name,
        }

    def _call(self, request: Mapping[str, Any], check_alive: CheckAlive, timeout_s: float) -> dict[str, Any]:
        """Run the bridge on ``request``; the ok response, or the error its failure kind maps to."""
        argv = [self.python, str(BRIDGE)]
        run = self.runner(
            argv, json.dumps(request), timeout_s=timeout_s, check_alive=check_alive, env=self.env
        )
        response = self._parse(run)
        if response["ok"] is True:
            return response
        raise self._error(response, run)

    def _parse(self, run: BridgeRun) -> dict[str, Any]:
        lines = [line for line in run.stdout.splitlines() if line.strip()]
        try:
            response = json.loads(lines[-1]) if lines else None
        except ValueError:
            response = None
        if not isinstance(response, dict) or not isinstance(response.get("ok"), bool):
            raise MeasurementError(
                f"malformed output from the AI Hub bridge ({self.python}, exit {run.returncode}): "
                f"stdout {_tail(run.stdout, 500)!r}; stderr {_tail(run.stderr)!r}"
            )
        return response

    def _error(self, response: Mapping[str, Any], run: BridgeRun) -> Exception:
        kind = response.get("kind")
        message = str(response.get("message", "no message"))
        where = f"AI Hub ({self.device})"
        if kind == "not_installed":
            return Unavailable(f"qai-hub is not installed in {self.python}: {INSTALL_HINT}. ({message})")
        if kind == "auth":
            return Unavailable(
                f"{where} rejected the API token or none is configured: run "
                f"`{Path(self.python).with_name('qai-hub')} configure --api_token <token>` as the "
                f"service's user. ({message})"
            )
        if kind == "device":
            return InvalidInput(
                f"device {self.device!r} is not one of AI Hub's devices; `qai-hub list-devices` lists them"
            )
        if kind == "timeout":
            return Unavailable(f"{where}: timed out after {self.timeout_s:g} s: {message}")
        if kind == "internal":
            return Unavailable(f"{where}: AI Hub or network failure, retry later: {message}")
        if kind == "job_failed" and response.get("failed_stage") in MODEL_STAGES:
            return ArchNotEvaluable(f"{where}: {message}")
        if kind == "job_failed":
            return MeasurementError(f"{where}: {message}")
        if kind == "invalid":
            return InvalidInput(f"{where} rejected the request: {message}")
        return MeasurementError(
            f"AI Hub bridge answered an unknown failure kind {kind!r}: {message}; "
            f"stderr {_tail(run.stderr)!r}"
        )


__all__ = [
    "BACKEND",
    "BRIDGE",
    "OBJECTIVE",
    "AiHubBackend",
    "BridgeRun",
    "Runner",
    "bridge_env",
    "run_bridge",
]
