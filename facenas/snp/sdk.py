"""The SNPE 2.x SDK's host tools: ONNX -> DLC, int8 quantization, DLC facts, diagnostic logs.

Tools are found on ``PATH`` (SNPE's ``envsetup.sh`` puts ``$SNPE_ROOT/bin/x86_64-linux-clang`` there)
or under ``<root>/bin/x86_64-linux-clang``. The device-side files (``snpe-net-run``, the runtime
libraries, the Hexagon DSP skeletons) come from ``<root>``. Command lines follow SPEC section 4 and
Qualcomm's SNPE 2.x tool reference: ``snpe-onnx-to-dlc``, ``snpe-dlc-quantize`` (``snpe-dlc-quant`` in
the SDKs that renamed it), ``snpe-dlc-graph-prepare`` (offline HTP graph cache), ``snpe-dlc-info``,
``snpe-diagview``.
"""

from __future__ import annotations

import csv
import os
import re
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import numpy.typing as npt

from facenas.errors import ArchNotEvaluable, InvalidInput, MeasurementError, Unavailable
from facenas.snp.process import ToolError, ToolResult, run_tool

HOST_ARCH = "x86_64-linux-clang"
DEVICE_ARCH = "aarch64-android"
QUANTIZERS = ("snpe-dlc-quantize", "snpe-dlc-quant")
_VERSION = re.compile(r"v?(\d+\.\d+\.\d+(?:\.\d+)?)")
_SUFFIX = {"": 1, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}

CheckAlive = Callable[[], None]


#: Output of a host tool that failed to run at all (a broken SDK install, no memory), whatever the model.
_NOT_THE_MODEL = re.compile(
    r"No module named|ModuleNotFoundError|ImportError|error while loading shared libraries|"
    r"command not found|Permission denied|MemoryError|out of memory|No space left on device",
    re.IGNORECASE,
)


class ConversionError(ArchNotEvaluable):
    """An SNPE host tool rejected the model: snpe-onnx-to-dlc (an op or shape SNPE does not support) or
    the quantizer. A tool that could not run (killed, timed out, broken install) is a ToolError instead,
    and one that is missing is Unavailable."""


@dataclass(frozen=True)
class DlcInfo:
    """What ``snpe-dlc-info`` reports of a DLC."""

    params: int
    macs: int


@dataclass(frozen=True)
class ToolTimeouts:
    """Seconds each step may take before it is killed."""

    convert: float = 600.0
    quantize: float = 1800.0
    prepare: float = 1800.0
    info: float = 120.0
    diagview: float = 120.0


class SnpeSdk:
    """One installed SNPE SDK; ``root`` is ``$SNPE_ROOT`` (the unpacked SDK directory)."""

    def __init__(self, root: Path, timeouts: ToolTimeouts | None = None) -> None:
        self.root = Path(root)
        self.timeouts = timeouts or ToolTimeouts()

    # ------------------------------------------------------------------------- locating things

    def tool(self, name: str) -> str:
        """Path of host tool ``name``; InvalidInput naming where it was looked for."""
        found = shutil.which(name) or _executable(self.root / "bin" / HOST_ARCH / name)
        if not found:
            raise InvalidInput(
                f"SNPE tool {name!r} is neither on PATH nor in {self.root / 'bin' / HOST_ARCH}; "
                "install the SNPE 2.x SDK and pass --snpe-root (or source its bin/envsetup.sh)"
            )
        return found

    @property
    def quantizer(self) -> str:
        """``snpe-dlc-quantize``, or ``snpe-dlc-quant`` in SDKs that renamed it."""
        for name in QUANTIZERS:
            found = shutil.which(name) or _executable(self.root / "bin" / HOST_ARCH / name)
            if found:
                return found
        raise InvalidInput(f"neither of {', '.join(QUANTIZERS)} is on PATH or in {self.root}/bin/{HOST_ARCH}")

    def step_tool(self, name: str) -> str:
        """:meth:`tool` (or :attr:`quantizer` for ``"quantizer"``) for a pipeline step: a tool gone since
        :meth:`check` passed at start-up is this replica's problem (Unavailable), not the request's."""
        try:
            return self.quantizer if name == "quantizer" else self.tool(name)
        except InvalidInput as err:
            raise Unavailable(str(err)) from err

    def device_files(self, hexagon_arch: str | None) -> dict[str, list[Path]]:
        """Files to push to a board, by device sub-directory (bin, lib, dsp); InvalidInput if absent."""
        binary = self.root / "bin" / DEVICE_ARCH / "snpe-net-run"
        libs = sorted((self.root / "lib" / DEVICE_ARCH).glob("*.so"))
        files: dict[str, list[Path]] = {"bin": [binary], "lib": libs}
        problems = []
        if not binary.is_file():
            problems.append(f"{binary} is missing")
        if not libs:
            problems.append(f"no runtime libraries in {self.root / 'lib' / DEVICE_ARCH}")
        if hexagon_arch:
            skel_dir = self.root / "lib" / f"hexagon-{hexagon_arch}" / "unsigned"
            files["dsp"] = sorted(skel_dir.glob("*.so"))
            if not files["dsp"]:
                problems.append(f"no Hexagon {hexagon_arch} libraries in {skel_dir}")
        if problems:
            raise InvalidInput("SNPE SDK at " + str(self.root) + " is incomplete: " + "; ".join(problems))
        return files

    def check(self, graph_prepare: bool = False) -> str:
        """Fail early (InvalidInput naming what is missing) unless every tool and device file is there.

        Returns the SDK version.
        """
        for name in ("snpe-onnx-to-dlc", "snpe-dlc-info", "snpe-diagview", "snpe-net-run"):
            self.tool(name)
        _ = self.quantizer
        if graph_prepare:
            self.tool("snpe-dlc-graph-prepare")
        self.device_files(None)
        return self.version

    @cached_property
    def version(self) -> str:
        """The SDK version, e.g. ``2.22.6.240515`` (from ``snpe-net-run --version``)."""
        result = run_tool([self.tool("snpe-net-run"), "--version"], self.timeouts.info)
        match = _VERSION.search(result.stdout + result.stderr)
        if result.returncode != 0 or not match:
            raise InvalidInput(
                f"cannot read the SNPE version from snpe-net-run --version: {result.output_tail}"
            )
        return match.group(1)

    # ------------------------------------------------------------------------- pipeline steps

    def convert(
        self,
        onnx_path: Path,
        dlc_path: Path,
        input_name: str,
        input_shape: Sequence[int],
        output_name: str,
        check_alive: CheckAlive | None = None,
    ) -> ToolResult:
        """ONNX -> float DLC; ConversionError with the converter's message when it fails."""
        args = [
            self.step_tool("snpe-onnx-to-dlc"),
            "--input_network", str(onnx_path),
            "--output_path", str(dlc_path),
            "--input_dim", input_name, ",".join(str(d) for d in input_shape),
            "--input_layout", input_name, "NCHW",
            "--out_node", output_name,
        ]  # fmt: skip
        result = run_tool(args, self.timeouts.convert, check_alive)
        ok = result.returncode == 0 and "Conversion completed successfully" in result.stdout + result.stderr
        if not ok or not dlc_path.is_file():
            message = f"snpe-onnx-to-dlc failed (exit {result.returncode}): {result.output_tail}"
            raise ConversionError(message) if rejected_model(result) else ToolError(message, result)
        return result

    def quantize(
        self,
        dlc_path: Path,
        input_list: Path,
        output_path: Path,
        enhanced: bool = True,
        check_alive: CheckAlive | None = None,
    ) -> ToolResult:
        """Float DLC -> 8-bit DLC, calibrated on the raw files listed in ``input_list``; ConversionError
        when the quantizer rejects the model."""
        args = [
            self.step_tool("quantizer"),
            "--input_dlc", str(dlc_path),
            "--input_list", str(input_list),
            "--output_dlc", str(output_path),
        ]  # fmt: skip
        if enhanced:
            args.append("--use_enhanced_quantizer")
        result = run_tool(args, self.timeouts.quantize, check_alive)
        return _checked(result, output_path, "quantization", model_step=True)

    def graph_prepare(
        self, dlc_path: Path, output_path: Path, soc: str, check_alive: CheckAlive | None = None
    ) -> ToolResult:
        """Add an offline HTP graph cache for ``soc`` (e.g. ``sm8350``) to a quantized DLC."""
        args = [
            self.step_tool("snpe-dlc-graph-prepare"),
            "--input_dlc", str(dlc_path),
            "--output_dlc", str(output_path),
            "--htp_socs", soc.lower(),
        ]  # fmt: skip
        return _checked(run_tool(args, self.timeouts.prepare, check_alive), output_path, "HTP graph prepare")

    def info(self, dlc_path: Path) -> DlcInfo:
        """Parameters and MACs per inference of a DLC."""
        result = run_tool([self.step_tool("snpe-dlc-info"), "-i", str(dlc_path)], self.timeouts.info)
        if result.returncode != 0:
            raise ToolError(f"snpe-dlc-info failed (exit {result.returncode}): {result.output_tail}", result)
        return parse_dlc_info(result.stdout)

    def diagview(self, log_path: Path, csv_path: Path) -> float:
        """Average total inference time (microseconds) recorded in an ``SNPEDiag_N.log``."""
        args = [self.step_tool("snpe-diagview"), "--input_log", str(log_path), "--output", str(csv_path)]
        _checked(run_tool(args, self.timeouts.diagview), csv_path, "snpe-diagview")
        return parse_diag_csv(csv_path.read_text(errors="replace"))


def _executable(path: Path) -> str | None:
    return str(path) if path.is_file() and os.access(path, os.X_OK) else None


def rejected_model(result: ToolResult) -> bool:
    """Whether a tool that failed on a model ran and rejected it, rather than failing to run: killed by a
    signal (negative, or 128+N from a wrapper script), not executable (126, 127), or a broken install."""
    code = result.returncode
    if code < 0 or code >= 126:
        return False
    return not _NOT_THE_MODEL.search(result.stdout + result.stderr)


def _checked(result: ToolResult, output: Path, step: str, model_step: bool = False) -> ToolResult:
    """``result`` if the tool wrote ``output``; else ToolError, or ConversionError for a ``model_step``
    whose tool rejected the model."""
    if result.returncode != 0 or not output.is_file():
        tool = Path(result.args[0]).name
        message = f"{step} failed: {tool} exited {result.returncode}: {result.output_tail}"
        if model_step and rejected_model(result):
            raise ConversionError(message)
        raise ToolError(message, result)
    return result


# ----------------------------------------------------------------------------------------- parsing


def parse_dlc_info(text: str) -> DlcInfo:
    """Read ``Total parameters: N (...)`` and ``Total MACs per inference: 12M (100%)``."""
    params = re.search(r"Total parameters:\s*([\d,]+)", text)
    macs = re.search(r"Total MACs per inference:\s*([\d.,]+)\s*([KMGT]?)", text)
    if not params or not macs:
        missing = [name for name, m in (("Total parameters", params), ("Total MACs", macs)) if not m]
        raise MeasurementError(f"snpe-dlc-info output lacks {' and '.join(missing)}: {text.strip()[-600:]}")
    count = float(macs.group(1).replace(",", "")) * _SUFFIX[macs.group(2)]
    return DlcInfo(int(params.group(1).replace(",", "")), round(count))


def parse_diag_csv(text: str) -> float:
    """``avg_total_inference_time`` (microseconds) from ``snpe-diagview``'s CSV.

    Rows carry the message name in column 1 and its value in column 3, as the SDK writes them.
    """
    for row in csv.reader(text.splitlines()):
        if len(row) > 3 and row[1].strip().lower() == "avg_total_inference_time":
            try:
                value = float(row[3])
            except ValueError:
                break
            if value > 0 and np.isfinite(value):
                return value
            break
    raise MeasurementError(
        "snpe-diagview output has no usable avg_total_inference_time row (malformed diagnostic log?): "
        + text.strip()[:400]
    )


# ----------------------------------------------------------------------------------------- inputs


def write_raw_inputs(
    arrays: Sequence[npt.NDArray[np.float32]], directory: Path, device_dir: str | None = None
) -> Path:
    """Write ``(1, C, H, W)`` float32 arrays as SNPE raw files (NHWC float32) and an input list.

    The list names each file by its path under ``device_dir`` when given (for a board), else by its
    local path (for the host quantizer). Returns the list's path.
    """
    directory.mkdir(parents=True, exist_ok=True)
    lines = []
    for index, array in enumerate(arrays):
        if array.ndim != 4 or array.shape[0] != 1:
            raise InvalidInput(f"input {index}: expected shape (1, C, H, W), got {array.shape}")
        name = f"input_{index:04d}.raw"
        np.ascontiguousarray(array[0].transpose(1, 2, 0), dtype=np.float32).tofile(directory / name)
        lines.append(f"{device_dir}/{name}" if device_dir else str(directory / name))
    listing = directory / "input_list.txt"
    listing.write_text("\n".join(lines) + "\n")
    return listing
