"""Test doubles of Android's ``adb`` and of the Qualcomm SNPE 2.x SDK tools.

The executables under ``tests/fakes/bin`` (and the "device" binary under
``tests/fakes/snpe_root/bin/aarch64-android``) are thin wrappers around the ``main_*`` functions here.
All behaviour is driven by a state directory named by ``$FACENAS_FAKE_SNPE_STATE``; see
``tests/fakes/README.md`` for the contract and ``tests/fakes/fixture.py`` for the helper tests use.

Only the standard library is imported at module level (``onnx`` is imported by the converter alone) so
that each fake call starts quickly. Nothing under ``facenas/`` may import this module.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import fcntl
import hashlib
import io
import json
import math
import os
import posixpath
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

STATE_ENV = "FACENAS_FAKE_SNPE_STATE"
REPO_ENV = "FACENAS_FAKE_REPO"
SERIAL_ENV = "FAKE_ADB_SERIAL"
#: The only device directory the fake device has: everything else is read-only or absent.
DEVICE_ROOT = "/data/local/tmp"
REPO_ROOT = Path(__file__).resolve().parents[2]

DEFAULT_SDK_VERSION = "2.22.6.240515"
ADB_VERSION = "1.0.41"
ADB_BUILD = "35.0.1-11580240"

TOOLS_DEFAULTS: dict[str, Any] = {"convert_error": None, "quantize_error": None, "info_malformed": False}
DEVICE_DEFAULTS: dict[str, Any] = {
    "state": "device",  # device | offline | unauthorized | gone
    "model": "HDK 888",
    "soc": "SM8350",
    "platform": "lahaina",
    "us_per_mmac": 0.02,
    "base_us": 500.0,
    "noise": [],
    "unplug_after_runs": None,
    "hang": False,
    "diag": "ok",  # ok | malformed | missing
    "props": {},  # extra or overriding getprop values
}
DEVICE_STATES = ("device", "offline", "unauthorized", "gone")
DIAG_MODES = ("ok", "malformed", "missing")

RUNTIME_FACTORS = {"dsp": 1.0, "gpu": 2.5, "cpu": 8.0}
HTP_CACHE_FACTOR = 0.8
#: Hexagon architecture of the HTP on SoCs the fake knows; others accept any ``*Skel.so``.
HEXAGON_ARCH = {
    "SM7325": "V68",
    "QCS6490": "V68",
    "SM8350": "V68",
    "SM8450": "V69",
    "SM8475": "V69",
    "SM8550": "V73",
    "SM8650": "V75",
    "SM8750": "V79",
}
PERF_PROFILES = (
    "default",
    "balanced",
    "high_performance",
    "power_saver",
    "low_power_saver",
    "high_power_saver",
    "extreme_power_saver",
    "low_balanced",
    "system_settings",
    "sustained_high_performance",
    "burst",
)
PROFILING_LEVELS = ("off", "basic", "moderate", "detailed", "linting")
SEPARATOR = "-" * 79


class FakeToolError(Exception):
    """A failure a fake tool reports on stderr before exiting with ``code``."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


# --------------------------------------------------------------------------------------------------
# State


def default_state() -> dict[str, Any]:
    return {"sdk_version": DEFAULT_SDK_VERSION, "tools": dict(TOOLS_DEFAULTS), "devices": {}}


def state_root() -> Path:
    raw = os.environ.get(STATE_ENV)
    if not raw:
        raise FakeToolError(f"fake SNPE/adb: ${STATE_ENV} is not set (use tests.fakes.fixture.FakeSnpe)")
    return Path(raw)


@contextlib.contextmanager
def locked(root: Path) -> Iterator[None]:
    """Hold the state directory's exclusive lock (several fake processes may run at once)."""
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _write_json_atomic(path: Path, data: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, path)


def _read_json_dict(path: Path) -> dict[str, Any]:
    data = json.loads(path.read_text())
    if not isinstance(data, dict):
        raise FakeToolError(f"fake SNPE/adb: {path} does not hold a JSON object")
    return data


def read_state(root: Path) -> dict[str, Any]:
    """The state (defaults filled in); writes are atomic, so reading needs no lock."""
    path = root / "state.json"
    state = default_state()
    if path.exists():
        state.update(_read_json_dict(path))
    state["tools"] = {**TOOLS_DEFAULTS, **state.get("tools", {})}
    return state


def write_state(root: Path, state: dict[str, Any]) -> None:
    _write_json_atomic(root / "state.json", state)


@contextlib.contextmanager
def edit_state(root: Path) -> Iterator[dict[str, Any]]:
    """Read-modify-write the state under the lock."""
    with locked(root):
        state = read_state(root)
        yield state
        write_state(root, state)


def device_config(state: dict[str, Any], serial: str) -> dict[str, Any] | None:
    """The device's behaviour merged over the defaults, or None for a serial the state does not know."""
    raw = state["devices"].get(serial)
    if raw is None:
        return None
    return {**DEVICE_DEFAULTS, **raw}


def device_dir(root: Path, serial: str) -> Path:
    return root / "devices" / serial


def device_fs(root: Path, serial: str) -> Path:
    return device_dir(root, serial) / "fs"


def device_path(root: Path, serial: str, remote: str) -> Path:
    """Where the device path ``remote`` (absolute) lives on the host."""
    if not remote.startswith("/"):
        raise FakeToolError(f"fake adb: device path '{remote}' is not absolute")
    norm = posixpath.normpath(remote).lstrip("/")
    return device_fs(root, serial) / norm


def _is_writable_device_path(remote: str) -> bool:
    norm = posixpath.normpath(remote)
    return norm == DEVICE_ROOT or norm.startswith(DEVICE_ROOT + "/")


def read_runs(root: Path, serial: str) -> dict[str, Any]:
    path = device_dir(root, serial) / "runs.json"
    if not path.exists():
        return {"runs": 0, "history": []}
    return _read_json_dict(path)


def read_commands(root: Path, serial: str) -> list[list[str]]:
    path = device_dir(root, serial) / "log.jsonl"
    if not path.exists():
        return []
    return [list(json.loads(line)) for line in path.read_text().splitlines() if line.strip()]


def _log_adb_call(root: Path, serial: str, argv: Sequence[str]) -> None:
    with locked(root):
        path = device_dir(root, serial) / "log.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as fh:
            fh.write(json.dumps(list(argv)) + "\n")


# --------------------------------------------------------------------------------------------------
# Output helpers


def _log(level: str, message: str, stream: TextIO | None = None) -> None:
    """A line in the style of the SNPE Python tools: ``<timestamp> - <line> - LEVEL - message``."""
    now = datetime.now()
    stamp = now.strftime("%Y-%m-%d %H:%M:%S") + f",{now.microsecond // 1000:03d}"
    out = stream if stream is not None else (sys.stderr if level in ("ERROR", "WARNING") else sys.stdout)
    if out is sys.stderr:
        sys.stdout.flush()
    out.write(f"{stamp} - 235 - {level} - {message}\n")
    out.flush()


def _out(text: str = "") -> None:
    sys.stdout.write(text + "\n")


def _error(message: str) -> None:
    sys.stdout.flush()
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


def _run_tool(body: Callable[[list[str]], int], argv: Sequence[str] | None, *, log_style: bool) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        return body(args)
    except FakeToolError as err:
        if log_style:
            _log("ERROR", err.message)
        else:
            _error(err.message)
        return err.code
    finally:
        sys.stdout.flush()


def _sdk_version() -> str:
    return str(read_state(state_root())["sdk_version"])


def _fmt_count(value: int) -> str:
    """MACs the way snpe-dlc-info prints them: nearest M, else K, else plain."""
    if value >= 1_000_000:
        return f"{int(value / 1e6 + 0.5)}M"
    if value >= 1_000:
        return f"{int(value / 1e3 + 0.5)}K"
    return str(value)


# --------------------------------------------------------------------------------------------------
# Fake DLC files (JSON, not the real zip container)


def read_dlc(path: Path) -> dict[str, Any]:
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise FakeToolError(f"Failed to open DLC file '{path}': {err.strerror}") from err
    try:
        dlc = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        dlc = None
    if not isinstance(dlc, dict) or dlc.get("fake_dlc") != 1:
        raise FakeToolError(f"Failed to load DLC '{path}': not a valid DLC container")
    return dlc


def write_dlc(path: Path, dlc: dict[str, Any]) -> None:
    try:
        _write_json_atomic(path, dlc)
    except OSError as err:
        raise FakeToolError(f"Failed to save DLC '{path}': {err.strerror}") from err


def _command_line(tool: str, args: Sequence[str]) -> str:
    return " ".join([tool, *(shlex.quote(a) for a in args)])


def _parse_dims(text: str) -> list[int]:
    try:
        dims = [int(p) for p in text.split(",")]
    except ValueError:
        dims = []
    if not dims or any(d <= 0 for d in dims):
        raise FakeToolError(f"Invalid input dimensions '{text}': expected comma-separated positive integers")
    return dims


def analyse_onnx(path: Path, input_name: str, dims: list[int], out_nodes: list[str]) -> dict[str, Any]:
    """Parameters, MACs and per-layer facts of an ONNX model for the fixed input ``dims``."""
    import onnx
    from onnx import shape_inference

    try:
        model = onnx.load(str(path))
    except Exception as err:  # onnx raises DecodeError, OSError, ...
        raise FakeToolError(f"Failed to load ONNX model '{path}': {err}") from err
    graph = model.graph
    init_dims = {t.name: [int(d) for d in t.dims] for t in graph.initializer}
    inputs = [i for i in graph.input if i.name not in init_dims]
    match = next((i for i in inputs if i.name == input_name), None)
    if match is None:
        names = ", ".join(i.name for i in inputs)
        raise FakeToolError(
            f"Input '{input_name}' given to --input_dim is not an input of the model ({names})"
        )
    model_dims = match.type.tensor_type.shape.dim
    declared = [str(d.dim_value) if d.HasField("dim_value") else (d.dim_param or "?") for d in model_dims]
    if len(model_dims) != len(dims) or any(
        d.HasField("dim_value") and d.dim_value != v for d, v in zip(model_dims, dims, strict=False)
    ):
        raise FakeToolError(
            f"Input dimensions {','.join(map(str, dims))} given for '{input_name}' do not match the "
            f"model's input shape [{','.join(declared)}]"
        )
    produced = {o for n in graph.node for o in n.output} | {o.name for o in graph.output}
    for out in out_nodes:
        if out not in produced:
            raise FakeToolError(f"Output node '{out}' given to --out_node is not produced by the model")
    for d, v in zip(model_dims, dims, strict=True):
        d.dim_value = v
    try:
        inferred = shape_inference.infer_shapes(model)
    except Exception as err:  # InferenceError and friends
        raise FakeToolError(f"Shape inference failed: {err}") from err
    shapes: dict[str, list[int]] = {}
    for vi in [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]:
        tensor = vi.type.tensor_type
        if tensor.HasField("shape"):
            shapes[vi.name] = [d.dim_value if d.HasField("dim_value") else -1 for d in tensor.shape.dim]
    shapes.update(init_dims)

    def known(name: str) -> list[int] | None:
        shape = shapes.get(name)
        return shape if shape is not None and all(d > 0 for d in shape) else None

    layers: list[dict[str, Any]] = []
    for index, node in enumerate(graph.node):
        macs = 0
        if node.op_type in ("Conv", "ConvTranspose") and len(node.input) > 1:
            weight = known(node.input[1])
            # Conv: every output element costs (Cin/group)*kH*kW; ConvTranspose: every input element
            # costs (Cout/group)*kH*kW. Both are prod(weight.shape[1:]).
            ref = known(node.output[0] if node.op_type == "Conv" else node.input[0])
            if weight is None or ref is None:
                _log(
                    "WARNING", f"Could not infer the shapes of {node.name or node.op_type}; MACs not counted"
                )
            else:
                macs = math.prod(ref) * math.prod(weight[1:])
        layers.append(
            {
                "name": node.name or f"{node.op_type}_{index}",
                "type": node.op_type,
                "inputs": [n for n in node.input if n and n not in init_dims],
                "outputs": list(node.output),
                "out_dims": shapes.get(node.output[0], []) if node.output else [],
                "params": sum(math.prod(init_dims[n]) for n in node.input if n in init_dims),
                "macs": macs,
            }
        )
    return {
        "params": sum(math.prod(d) for d in init_dims.values()),
        "macs": sum(layer["macs"] for layer in layers),
        "layers": layers,
        "opset": max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0),
    }


# --------------------------------------------------------------------------------------------------
# Host SDK tools


def _snpe_net_run_host(args: list[str]) -> int:
    if args == ["--version"]:
        _out(f"SNPE v{_sdk_version()}")
        return 0
    raise FakeToolError(
        "snpe-net-run (fake, x86_64-linux): only --version is supported on the host; "
        "run the aarch64-android binary on a device through adb"
    )


def main_snpe_net_run(argv: Sequence[str] | None = None) -> int:
    return _run_tool(_snpe_net_run_host, argv, log_style=False)


INPUT_LAYOUTS = ("NCDHW", "NDHWC", "NCHW", "NHWC", "NFC", "NCF", "NTF", "TNF", "NF", "NC", "F", "NONTRIVIAL")


def _onnx_to_dlc(args: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="snpe-onnx-to-dlc", description="Convert an ONNX model to a DLC.")
    parser.add_argument("--input_network", "-i", required=True)
    parser.add_argument("--output_path", "-o", required=True)
    parser.add_argument("--input_dim", nargs=2, action="append", metavar=("INPUT_NAME", "INPUT_DIM"))
    parser.add_argument("--out_node", "--out_name", action="append", default=[])
    parser.add_argument("--input_layout", "-l", nargs=2, action="append", metavar=("INPUT_NAME", "LAYOUT"))
    ns = parser.parse_args(args)
    state = read_state(state_root())
    for name, layout in ns.input_layout or []:
        if layout not in INPUT_LAYOUTS:
            raise FakeToolError(f"Conversion FAILED: unknown layout {layout!r} for {name}")
    if not ns.input_dim:
        raise FakeToolError("Conversion FAILED: --input_dim is required for this model")
    if len(ns.input_dim) != 1:
        raise FakeToolError("Conversion FAILED: the model has a single input; give --input_dim once")
    input_name, dims_text = ns.input_dim[0]
    dims = _parse_dims(dims_text)
    src = Path(ns.input_network)
    _log("INFO", f"Processing ONNX model {src} ...")
    error = state["tools"]["convert_error"]
    if error:
        raise FakeToolError(f"Conversion FAILED: {error}")
    try:
        facts = analyse_onnx(src, input_name, dims, list(ns.out_node))
    except FakeToolError as err:
        raise FakeToolError(f"Conversion FAILED: {err.message}") from err
    outputs = list(ns.out_node) or [facts["layers"][-1]["outputs"][0] if facts["layers"] else "output"]
    _log("INFO", f"Simplified model validation is successful (opset {facts['opset']})")
    _log("INFO", f"Processed {len(facts['layers'])} ops, {facts['params']} parameters")
    dlc = {
        "fake_dlc": 1,
        "quantized": False,
        "params": facts["params"],
        "macs": facts["macs"],
        "input": input_name,
        "dims": dims,
        "output": outputs[0],
        "layers": facts["layers"],
        "converter_version": state["sdk_version"],
        "converter_command": _command_line("snpe-onnx-to-dlc", args),
        "onnx_sha256": hashlib.sha256(src.read_bytes()).hexdigest(),
    }
    _log("INFO", "INFO_INITIALIZATION_SUCCESS")
    write_dlc(Path(ns.output_path), dlc)
    _log("INFO", f"Saving model at {ns.output_path}")
    _log("INFO", "INFO_CONVERSION_SUCCESS")
    _log("INFO", "Conversion completed successfully")
    return 0


def main_onnx_to_dlc(argv: Sequence[str] | None = None) -> int:
    return _run_tool(_onnx_to_dlc, argv, log_style=True)


def _input_list_paths(list_path: Path, base: Path, resolve: Callable[[str], Path]) -> list[tuple[str, Path]]:
    """(as written, host path) of each input in an SNPE input list (``#``/``%`` lines are skipped)."""
    try:
        text = list_path.read_text()
    except OSError as err:
        raise FakeToolError(f"Could not open input list '{list_path}': {err.strerror}") from err
    entries: list[tuple[str, Path]] = []
    for raw_line in text.splitlines():
        line = raw_line.strip()
        if not line or line.startswith(("#", "%")):
            continue
        tokens = line.split()
        if len(tokens) != 1:
            raise FakeToolError(f"Input list line '{line}' names {len(tokens)} inputs; the model has one")
        written = tokens[0].split(":=", 1)[-1]
        path = resolve(written)
        entries.append((written, path if path.is_absolute() else base / path))
    if not entries:
        raise FakeToolError(f"Input list '{list_path}' names no inputs")
    return entries


def _check_raw(written: str, path: Path, dims: Sequence[int]) -> None:
    expected = math.prod(dims) * 4
    try:
        size = path.stat().st_size
    except OSError as err:
        raise FakeToolError(f"Could not open input file '{written}': {err.strerror}") from err
    if size != expected:
        raise FakeToolError(
            f"Input file '{written}' size mismatch: {size} bytes, expected {expected} "
            f"(float32 NHWC for dims {','.join(map(str, dims))})"
        )


def _quantize(tool: str) -> Callable[[list[str]], int]:
    def body(args: list[str]) -> int:
        parser = argparse.ArgumentParser(prog=tool, description="Quantize a DLC.")
        parser.add_argument("--input_dlc", required=True)
        parser.add_argument("--input_list", required=True)
        parser.add_argument("--output_dlc", required=True)
        parser.add_argument("--use_enhanced_quantizer", action="store_true")
        ns = parser.parse_args(args)
        state = read_state(state_root())
        _log("INFO", "InitializeStderr: DebugLog initialized.")
        dlc = read_dlc(Path(ns.input_dlc))
        _log("INFO", "Processed command-line arguments")
        entries = _input_list_paths(Path(ns.input_list), Path.cwd(), Path)
        for written, path in entries:
            _check_raw(written, path, dlc["dims"])
        error = state["tools"]["quantize_error"]
        if error:
            raise FakeToolError(f"Quantization FAILED: {error}")
        _log("INFO", f"Calibrating with {len(entries)} input(s)")
        _log("INFO", "Quantized parameters")
        _log("INFO", "Generated activation encodings")
        out = {
            **dlc,
            "quantized": True,
            "enhanced": bool(ns.use_enhanced_quantizer),
            "calibration_inputs": len(entries),
            "quantizer_command": _command_line(tool, args),
        }
        out.pop("htp_cache", None)
        _log("INFO", "Saving quantized model")
        write_dlc(Path(ns.output_dlc), out)
        _log("INFO", f"Saved quantized dlc to: {ns.output_dlc}")
        _log("INFO", "DebugLog shutting down.")
        return 0

    return body


def main_dlc_quantize(argv: Sequence[str] | None = None) -> int:
    return _run_tool(_quantize("snpe-dlc-quantize"), argv, log_style=True)


def main_dlc_quant(argv: Sequence[str] | None = None) -> int:
    return _run_tool(_quantize("snpe-dlc-quant"), argv, log_style=True)


def _graph_prepare(args: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="snpe-dlc-graph-prepare", description="Prepare an HTP cache.")
    parser.add_argument("--input_dlc", required=True)
    parser.add_argument("--output_dlc", required=True)
    parser.add_argument("--htp_socs", required=True)
    ns = parser.parse_args(args)
    _log("INFO", "InitializeStderr: DebugLog initialized.")
    dlc = read_dlc(Path(ns.input_dlc))
    socs = [s.strip().lower() for s in str(ns.htp_socs).split(",") if s.strip()]
    known = {k.lower() for k in HEXAGON_ARCH}
    for soc in socs:
        if soc not in known:
            raise FakeToolError(f"Graph prepare FAILED: unsupported SoC '{soc}' in --htp_socs")
    if not socs:
        raise FakeToolError("Graph prepare FAILED: --htp_socs names no SoC")
    if not dlc.get("quantized"):
        raise FakeToolError(
            "Graph prepare FAILED: the DLC is not quantized; HTP offline prepare needs a quantized model"
        )
    for soc in socs:
        _log("INFO", f"Attempting to prepare graph for {soc} (HTP {HEXAGON_ARCH[soc.upper()]})")
    write_dlc(Path(ns.output_dlc), {**dlc, "htp_cache": socs})
    _log("INFO", "Successfully compiled HTP metadata into DLC.")
    _log("INFO", "DebugLog shutting down.")
    return 0


def main_dlc_graph_prepare(argv: Sequence[str] | None = None) -> int:
    return _run_tool(_graph_prepare, argv, log_style=True)


def _dlc_info(args: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="snpe-dlc-info", description="Describe a DLC.")
    parser.add_argument("-i", "--input_dlc", required=True)
    ns = parser.parse_args(args)
    state = read_state(state_root())
    path = Path(ns.input_dlc)
    dlc = read_dlc(path)
    quantized = bool(dlc.get("quantized"))
    dtype = "Fixed_Point_8" if quantized else "Float_32"
    layers: list[dict[str, Any]] = dlc.get("layers", [])
    total_macs = int(dlc["macs"])
    rows = [["Id", "Name", "Type", "Inputs", "Outputs", "Out Dims", "Runtimes", "Parameters", "MACs"]]
    for index, layer in enumerate(layers):
        macs = int(layer["macs"])
        share = f" ({100 * macs / total_macs:.3g}%)" if total_macs and macs else ""
        dims = "x".join(str(d) for d in layer["out_dims"])
        rows.append(
            [
                str(index),
                layer["name"],
                layer["type"],
                ", ".join(layer["inputs"]),
                ", ".join(layer["outputs"]),
                dims,
                "A D G C",
                f"{layer['params']} parameters ({dtype})" if layer["params"] else "",
                _fmt_count(macs) + share if macs else "",
            ]
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    rule = "-" * (sum(widths) + 3 * len(widths) + 1)
    out = io.StringIO()

    def line(text: str = "") -> None:
        out.write(text + "\n")

    line(f"DLC info of: {path.resolve()}")
    line("Model Version: N/A")
    line("Model Copyright:N/A")
    line(rule)
    for i, row in enumerate(rows):
        line("| " + " | ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) + " |")
        if i == 0:
            line(rule)
    line(rule)
    line("Note: The supported runtimes column assumes a processor target of Snapdragon 855")
    line("Key : A:AIP")
    line("      D:DSP")
    line("      G:GPU")
    line("      C:CPU")
    line("")
    dims_text = ",".join(str(d) for d in dlc["dims"])
    line(f"Input Name | Dimensions | Type\n{dlc['input']} | {dims_text} | {dtype}")
    line("")
    params = int(dlc["params"])
    if not state["tools"]["info_malformed"]:
        line(f"Total parameters: {params} ({int(params * 4 / 1e6)} MB assuming single precision float)")
        line(f"Total MACs per inference: {_fmt_count(total_macs)} (100%)")
    line(f"Converter command: {dlc.get('converter_command', 'N/A')}")
    line(f"Quantizer command: {dlc.get('quantizer_command', 'N/A')}")
    line(f"DLC created with converter version: {dlc.get('converter_version', 'N/A')}")
    line(f"Layers used by DLC: {', '.join(sorted({str(layer['type']).upper() for layer in layers}))}")
    activations = sum(math.prod(layer["out_dims"]) for layer in layers if layer["out_dims"])
    memory = (params * (1 if quantized else 4) + activations * (1 if quantized else 4)) / 2**20 + 4.2
    line(f"Est. Steady-State Memory Needed to Run: {memory:.1f} MiB")
    for soc in dlc.get("htp_cache", []):
        line(f"Cache Info: Cache Record: backend.metadata0 | SoC: {soc} | Compatibility: {soc}")
    sys.stdout.write(out.getvalue())
    return 0


def main_dlc_info(argv: Sequence[str] | None = None) -> int:
    return _run_tool(_dlc_info, argv, log_style=False)


DIAG_HEADER = ["Log Id", "Message Name", "Time", "Message Value", "Unit"]


def _diagview(args: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="snpe-diagview", description="Render an SNPE diagnostic log.")
    parser.add_argument("--input_log", required=True)
    parser.add_argument("--output")
    ns = parser.parse_args(args)
    try:
        log = _read_json_dict(Path(ns.input_log))
    except (OSError, ValueError, FakeToolError) as err:
        raise FakeToolError(f"Failed to open input file '{ns.input_log}': {err}") from err
    if log.get("format") != "fake-snpe-diag":
        raise FakeToolError(f"Failed to parse diagnostic log '{ns.input_log}': unknown format")
    rows: list[list[str]] = [
        ["Init", str(round(log["init"]))],
        ["De-Init", str(round(log["deinit"]))],
        ["avg_total_inference_time", str(round(log["avg_total_inference_time"]))],
        ["avg_forward_propagate_time", str(round(log["avg_forward_propagate_time"]))],
    ]
    for index, (name, kind, us) in enumerate(log.get("layers", [])):
        rows.append([f"Layer {index} (Name:{name} Type:{kind})", str(round(us))])
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(DIAG_HEADER)
    for log_id, (name, value) in enumerate(rows):
        if log.get("malformed") and name == "avg_total_inference_time":
            buffer.write(f"{log_id},avg_total_infer@@@ corrupt diag record 0x3f @@@\n")
            continue
        writer.writerow([str(log_id), name, "0", value, "USEC"])
    if ns.output:
        try:
            Path(ns.output).write_text(buffer.getvalue())
        except OSError as err:
            raise FakeToolError(f"Failed to write output file '{ns.output}': {err.strerror}") from err
    else:
        sys.stdout.write(buffer.getvalue())
    return 0


def main_diagview(argv: Sequence[str] | None = None) -> int:
    return _run_tool(_diagview, argv, log_style=False)


# --------------------------------------------------------------------------------------------------
# The device's snpe-net-run (runs under the fake adb shell)


def _snpe_error(code: int, message: str, component: str) -> FakeToolError:
    return FakeToolError(
        f"error_code={code}; error_message={message}; error_component={component}; "
        f"line_no={100 + code % 400}; thread_id={os.getpid()}"
    )


def _banner(version: str) -> None:
    _out(SEPARATOR)
    _out("Model String: N/A")
    _out(f"SNPE v{version}")
    _out(SEPARATOR)
    _out("Processing DNN input(s):")
    sys.stdout.flush()


def _device_runtime(ns: argparse.Namespace) -> str:
    if ns.use_dsp:
        return "dsp"
    if ns.use_gpu:
        return "gpu"
    return "cpu"


def _check_dsp_libs(soc: str) -> None:
    raw = os.environ.get("ADSP_LIBRARY_PATH", "")
    first = raw.split(";")[0].strip() if raw else ""
    skels = sorted(p.name for p in Path(first).glob("*Skel.so")) if first else []
    arch = HEXAGON_ARCH.get(soc.upper())
    wanted = f"libSnpeHtp{arch}Skel.so" if arch else None
    if not skels or (wanted is not None and wanted not in skels):
        need = wanted or "libSnpeHtpV*Skel.so"
        raise _snpe_error(
            1002,
            f"Runtime not available. Unable to load {need} from ADSP_LIBRARY_PATH '{raw}' (DSP runtime)",
            "Dl System",
        )


def _device_net_run(args: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="snpe-net-run", description="Run a DLC (fake device binary).")
    parser.add_argument("--container")
    parser.add_argument("--input_list")
    parser.add_argument("--output_dir", default="output")
    runtime_group = parser.add_mutually_exclusive_group()
    runtime_group.add_argument("--use_gpu", action="store_true")
    runtime_group.add_argument("--use_dsp", action="store_true")
    runtime_group.add_argument("--use_aip", action="store_true")
    parser.add_argument("--perf_profile", choices=PERF_PROFILES, default="balanced")
    parser.add_argument("--profiling_level", choices=PROFILING_LEVELS, default="basic")
    parser.add_argument("--version", action="store_true")
    ns = parser.parse_args(args)

    # The dynamic linker runs before anything else.
    lib_dirs = [d for d in os.environ.get("LD_LIBRARY_PATH", "").split(":") if d]
    if not any((Path(d) / "libSNPE.so").is_file() for d in lib_dirs):
        raise FakeToolError(
            "snpe-net-run: error while loading shared libraries: libSNPE.so: "
            "cannot open shared object file: No such file or directory"
        )
    root = state_root()
    serial = os.environ.get(SERIAL_ENV)
    if not serial:
        raise FakeToolError(f"snpe-net-run (fake): ${SERIAL_ENV} is not set; run it through the fake adb")
    state = read_state(root)
    version = str(state["sdk_version"])
    if ns.version:
        _out(f"SNPE v{version}")
        return 0
    if not ns.container or not ns.input_list:
        parser.error("--container and --input_list are required")

    with locked(root):
        runs = read_runs(root, serial)
        run_number = int(runs["runs"]) + 1
        runs["runs"] = run_number
        _write_json_atomic(device_dir(root, serial) / "runs.json", runs)
    dev = device_config(state, serial)
    if dev is None:
        raise FakeToolError(f"snpe-net-run (fake): device '{serial}' is not in the fake state")

    limit = dev["unplug_after_runs"]
    if limit is not None and run_number > int(limit):
        # The board drops off the bus part-way through: nothing is written, adb loses the device.
        _banner(version)
        with edit_state(root) as editable:
            editable["devices"][serial]["state"] = "gone"
        _error("error: closed")
        return 255

    fs = device_fs(root, serial)

    def resolve(written: str) -> Path:
        if written.startswith(str(fs)) or not written.startswith("/"):
            return Path(written)
        return device_path(root, serial, written)

    runtime = _device_runtime(ns)
    if ns.use_aip:
        raise _snpe_error(
            1002,
            f"Runtime not available. AIP runtime is not supported on this SoC ({dev['soc']})",
            "Dl System",
        )
    if runtime == "dsp":
        _check_dsp_libs(str(dev["soc"]))
    try:
        dlc = read_dlc(resolve(ns.container))
    except FakeToolError as err:
        raise _snpe_error(302, f"Error loading DLC. {err.message}", "Dl Container") from err
    if runtime == "dsp" and not dlc.get("quantized"):
        raise _snpe_error(
            1015,
            "Unsupported model. The DSP runtime needs a quantized DLC (run snpe-dlc-quantize first)",
            "Dl Network",
        )
    entries = _input_list_paths(resolve(ns.input_list), Path.cwd(), resolve)
    for written, path in entries:
        _check_raw(written, path, dlc["dims"])

    _banner(version)

    noise: list[float] = [float(x) for x in dev["noise"]]
    multiplier = noise[run_number - 1] if run_number <= len(noise) else 1.0
    factor = RUNTIME_FACTORS[runtime]
    cache = [str(s).lower() for s in dlc.get("htp_cache", [])]
    soc = str(dev["soc"]).lower()
    if runtime == "dsp" and cache:
        if soc in cache:
            factor *= HTP_CACHE_FACTOR
        else:
            _error(
                f"WARNING: the DLC's HTP cache ({', '.join(cache)}) does not match {soc}; preparing online"
            )
    macs = int(dlc["macs"])
    avg_us = (float(dev["base_us"]) + float(dev["us_per_mmac"]) * macs / 1e6) * factor * multiplier
    init_us = (
        15000.0 + int(dlc["params"]) * 0.02 + (40000.0 if runtime == "dsp" and soc not in cache else 0.0)
    )

    out_dir = Path(ns.output_dir)
    if not out_dir.is_absolute():
        out_dir = Path.cwd() / out_dir
    for index, (written, _path) in enumerate(entries):
        _out(written)
        result = out_dir / f"Result_{index}"
        result.mkdir(parents=True, exist_ok=True)
        (result / f"{dlc.get('output', 'output_0')}.raw").write_bytes(bytes(16))
    if dev["diag"] != "missing" and ns.profiling_level != "off":
        layers: list[dict[str, Any]] = dlc.get("layers", [])
        forward = avg_us * 0.9
        weights = [int(layer["macs"]) + 1000 for layer in layers]
        total_weight = sum(weights) or 1
        diag = {
            "format": "fake-snpe-diag",
            "sdk_version": version,
            "runtime": runtime.upper(),
            "perf_profile": ns.perf_profile,
            "runs": len(entries),
            "init": init_us,
            "deinit": 2000.0 + init_us * 0.05,
            "avg_total_inference_time": avg_us,
            "avg_forward_propagate_time": forward,
            "layers": [
                [layer["name"], layer["type"], forward * w / total_weight]
                for layer, w in zip(layers, weights, strict=True)
            ],
            "malformed": dev["diag"] == "malformed",
        }
        _write_json_atomic(out_dir / "SNPEDiag_0.log", diag)
    with locked(root):
        runs = read_runs(root, serial)
        runs.setdefault("history", []).append(
            {"run": run_number, "runtime": runtime, "avg_us": avg_us, "inputs": len(entries)}
        )
        _write_json_atomic(device_dir(root, serial) / "runs.json", runs)
    return 0


def main_device_net_run(argv: Sequence[str] | None = None) -> int:
    return _run_tool(_device_net_run, argv, log_style=False)


# --------------------------------------------------------------------------------------------------
# adb


def _props(dev: dict[str, Any], serial: str) -> dict[str, str]:
    props = {
        "ro.board.platform": str(dev["platform"]),
        "ro.build.version.release": "13",
        "ro.build.version.sdk": "33",
        "ro.hardware": "qcom",
        "ro.product.board": str(dev["platform"]),
        "ro.product.cpu.abi": "arm64-v8a",
        "ro.product.manufacturer": "QUALCOMM",
        "ro.product.model": str(dev["model"]),
        "ro.serialno": serial,
        "ro.soc.manufacturer": "QTI",
        "ro.soc.model": str(dev["soc"]),
    }
    props.update({str(k): str(v) for k, v in dict(dev["props"]).items()})
    return dict(sorted(props.items()))


def _adb_devices(root: Path, args: list[str]) -> int:
    long = "-l" in args
    state = read_state(root)
    _out("List of devices attached")
    for transport, serial in enumerate(state["devices"], start=1):
        dev = device_config(state, serial)
        if dev is None or dev["state"] == "gone":
            continue
        if long:
            model = str(dev["model"]).replace(" ", "_")
            platform = dev["platform"]
            _out(
                f"{serial.ljust(22)} {dev['state']} usb:1-{transport} product:{platform} model:{model} "
                f"device:{platform} transport_id:{transport}"
            )
        else:
            _out(f"{serial}\t{dev['state']}")
    _out()
    return 0


def _transfer_line(name: str, verb: str, files: int, nbytes: int) -> str:
    seconds = max(nbytes / 1e7, 0.001)
    plural = "file" if files == 1 else "files"
    return f"{name}: {files} {plural} {verb}, 0 skipped. 10.0 MB/s ({nbytes} bytes in {seconds:.3f}s)"


def _tree_size(path: Path) -> tuple[int, int]:
    if path.is_file():
        return 1, path.stat().st_size
    files = [p for p in path.rglob("*") if p.is_file()]
    return len(files), sum(p.stat().st_size for p in files)


def _adb_push(root: Path, serial: str, args: list[str]) -> int:
    rest = [a for a in args if a not in ("--sync", "-z", "-Z", "-n")]
    if len(rest) < 2:
        raise FakeToolError("adb: push requires an argument")
    sources, remote = rest[:-1], rest[-1]
    for local in sources:
        if not Path(local).exists():
            raise FakeToolError(f"adb: error: cannot stat '{local}': No such file or directory")
    if not _is_writable_device_path(remote):
        raise FakeToolError(
            f"adb: error: failed to copy '{sources[0]}' to '{remote}': "
            "remote couldn't create file: Permission denied"
        )
    target = device_path(root, serial, remote)
    if len(sources) > 1 and not target.is_dir():
        raise FakeToolError(f"adb: error: target '{remote}' is not a directory")
    for local in sources:
        src = Path(local)
        into_dir = target.is_dir() or remote.endswith("/")
        dest = target / src.name if into_dir else target
        if src.is_dir():
            if target.exists() and not target.is_dir():
                raise FakeToolError(f"adb: error: target '{remote}' is not a directory")
            dest = target / src.name if target.exists() else target
            shutil.copytree(src, dest, dirs_exist_ok=True)
            files, nbytes = _tree_size(src)
            _out(_transfer_line(local.rstrip("/") + "/", "pushed", files, nbytes))
        else:
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest)
            _out(_transfer_line(local, "pushed", 1, src.stat().st_size))
    return 0


def _adb_pull(root: Path, serial: str, args: list[str]) -> int:
    rest = [a for a in args if a not in ("-a", "-z", "-Z")]
    if not rest:
        raise FakeToolError("adb: pull requires an argument")
    remotes, local = (rest[:-1], rest[-1]) if len(rest) > 1 else (rest, ".")
    local_path = Path(local)
    for remote in remotes:
        src = device_path(root, serial, remote) if remote.startswith("/") else None
        if src is None or not src.exists():
            raise FakeToolError(
                f"adb: error: failed to stat remote object '{remote}': No such file or directory"
            )
        dest = (
            local_path / posixpath.basename(posixpath.normpath(remote)) if local_path.is_dir() else local_path
        )
        if src.is_dir():
            shutil.copytree(src, dest, dirs_exist_ok=True)
            files, nbytes = _tree_size(src)
            _out(_transfer_line(remote.rstrip("/") + "/", "pulled", files, nbytes))
        else:
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest)
            _out(_transfer_line(remote, "pulled", 1, src.stat().st_size))
    return 0


def _die_with_parent() -> None:
    """Linux: have the device shell killed if the fake adb client is (as a real remote shell would be)."""
    try:
        import ctypes
        import signal

        ctypes.CDLL(None).prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
    except Exception:  # best effort only
        pass


def _adb_shell(root: Path, serial: str, dev: dict[str, Any], args: list[str]) -> int:
    rest = list(args)
    while rest and rest[0] in ("-T", "-t", "-tt", "-n", "-x"):
        rest.pop(0)
    if rest and rest[0] == "--":
        rest.pop(0)
    if not rest:
        raise FakeToolError("adb: the fake adb has no interactive shell; pass a command")
    command = " ".join(rest)
    try:
        tokens = shlex.split(command)
    except ValueError:
        tokens = []
    if tokens and tokens[0] == "getprop" and len(tokens) <= 2:
        props = _props(dev, serial)
        if len(tokens) == 2:
            _out(props.get(tokens[1], ""))
        else:
            for key, value in props.items():
                _out(f"[{key}]: [{value}]")
        return 0
    fs = device_fs(root, serial)
    host_root = fs / DEVICE_ROOT.lstrip("/")
    host_root.mkdir(parents=True, exist_ok=True)
    env = {
        STATE_ENV: str(root),
        SERIAL_ENV: serial,
        REPO_ENV: str(REPO_ROOT),
        "PATH": os.environ.get("PATH", os.defpath),
    }
    sys.stdout.flush()
    proc = subprocess.run(
        ["/bin/sh", "-c", command.replace(DEVICE_ROOT, str(host_root))],
        cwd=fs,
        env=env,
        stdin=subprocess.DEVNULL,
        preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
        check=False,
    )
    return proc.returncode


def _adb(args: list[str]) -> int:
    argv = list(args)
    serial: str | None = None
    while args and args[0].startswith("-"):
        opt = args.pop(0)
        if opt == "-s":
            if not args:
                raise FakeToolError("adb: -s requires an argument")
            serial = args.pop(0)
        elif opt in ("-H", "-P", "-L"):
            if args:
                args.pop(0)
        elif opt not in ("-d", "-e"):
            raise FakeToolError(f"adb: unknown option {opt}")
    if not args:
        raise FakeToolError("adb: no command given (the fake supports devices, push, pull, shell)")
    command, rest = args[0], args[1:]
    if command == "version":
        _out(f"Android Debug Bridge version {ADB_VERSION}")
        _out(f"Version {ADB_BUILD}")
        _out(f"Installed as {Path(sys.argv[0]).resolve()}")
        return 0
    if command in ("start-server", "kill-server", "reconnect"):
        return 0
    root = state_root()
    if command == "devices":
        return _adb_devices(root, rest)
    state = read_state(root)
    if serial is None:
        serial = os.environ.get("ANDROID_SERIAL") or None
    if serial is None:
        visible = [s for s in state["devices"] if state["devices"][s].get("state", "device") != "gone"]
        if not visible:
            raise FakeToolError("adb: no devices/emulators found")
        if len(visible) > 1:
            raise FakeToolError("adb: more than one device/emulator")
        serial = visible[0]
    dev = device_config(state, serial)
    if dev is not None:
        _log_adb_call(root, serial, argv)
        if dev["hang"]:
            time.sleep(3600)
            raise FakeToolError("adb: error: closed")
    if dev is None or dev["state"] == "gone":
        raise FakeToolError(f"adb: device '{serial}' not found")
    if dev["state"] == "offline":
        raise FakeToolError("adb: device offline")
    if dev["state"] == "unauthorized":
        raise FakeToolError(
            "adb: device unauthorized.\n"
            "This adb server's $ADB_VENDOR_KEYS is not set\n"
            "Try 'adb kill-server' if that seems wrong.\n"
            "Otherwise check for a confirmation dialog on your device."
        )
    if command == "get-state":
        _out(dev["state"])
        return 0
    if command == "get-serialno":
        _out(serial)
        return 0
    if command == "wait-for-device":
        return 0
    if command == "shell":
        return _adb_shell(root, serial, dev, rest)
    if command == "push":
        return _adb_push(root, serial, rest)
    if command == "pull":
        return _adb_pull(root, serial, rest)
    raise FakeToolError(f"adb: unknown command {command}")


def main_adb(argv: Sequence[str] | None = None) -> int:
    return _run_tool(_adb, argv, log_style=False)
