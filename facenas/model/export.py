"""ONNX export of hgnet models, verified against torch with onnxruntime.

The TorchScript exporter is selected explicitly (``dynamo=False``) and the opset is pinned and checked
in the produced graph, so a change of torch's default exporter can never silently change our models.
"""

from __future__ import annotations

import io
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from facenas.errors import ExportError, ModelNotExportable

DEFAULT_OPSET = 17
MIN_OPSET = 17
INPUT_NAME = "input_0"
OUTPUT_NAME = "output_0"
_EXPORT_LOCK = threading.Lock()


@dataclass(frozen=True)
class OnnxExport:
    """A serialised ONNX model with what a consumer needs to feed it."""

    model_bytes: bytes
    opset: int
    input_name: str
    output_name: str
    input_shape: tuple[int, int, int, int]  # (1, C, H, W)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_bytes(self.model_bytes)
        return path


def export_onnx(
    model: nn.Module,
    img_size: tuple[int, int],
    in_channels: int = 3,
    opset: int = DEFAULT_OPSET,
) -> OnnxExport:
    """Export ``model`` (put in eval mode) for a fixed (1, C, h, w) input; ``img_size`` is (w, h).

    ModelNotExportable when the exporter rejects the model or produces an invalid graph for it; ExportError
    for what is not the model's fault (an opset too old, an exporter that ignores the opset asked for).
    """
    import onnx

    if opset < MIN_OPSET:
        raise ExportError(f"opset {opset} is too old; use {MIN_OPSET} or newer")
    w, h = img_size
    shape = (1, in_channels, h, w)
    model.eval()
    buffer = io.BytesIO()
    try:
        with _EXPORT_LOCK, warnings.catch_warnings():  # the exporter and warning filters are global state
            warnings.simplefilter("ignore", category=DeprecationWarning)
            torch.onnx.export(
                model,
                (torch.rand(shape),),
                buffer,
                dynamo=False,
                opset_version=opset,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                do_constant_folding=True,
            )
    except (MemoryError, ImportError, OSError) as err:  # this host's, not the model's
        raise ExportError(f"torch.onnx.export failed: {type(err).__name__}: {err}") from err
    except Exception as err:  # torch raises many types here
        raise ModelNotExportable(f"torch.onnx.export failed: {type(err).__name__}: {err}") from err
    data = buffer.getvalue()
    proto = onnx.load_from_string(data)
    try:
        onnx.checker.check_model(proto)
    except onnx.checker.ValidationError as err:
        raise ModelNotExportable(f"the exported ONNX graph is invalid: {err}") from err
    got = {imp.domain: imp.version for imp in proto.opset_import}.get("", -1)
    if got != opset:
        raise ExportError(f"exporter produced opset {got}, expected {opset}")
    return OnnxExport(data, opset, INPUT_NAME, OUTPUT_NAME, shape)


def verify_onnx(model: nn.Module, export: OnnxExport, seed: int = 0, atol: float = 1e-4) -> float:
    """Max absolute difference between torch and onnxruntime outputs; ModelNotExportable above ``atol``."""
    import onnxruntime as ort

    generator = torch.Generator().manual_seed(seed)
    x = torch.rand(export.input_shape, generator=generator)
    model.eval()
    with torch.no_grad():
        expected = model(x).numpy()
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(export.model_bytes, options, providers=["CPUExecutionProvider"])
    (got,) = session.run([export.output_name], {export.input_name: x.numpy()})
    diff = float(np.max(np.abs(np.asarray(got) - expected)))
    if not diff <= atol:
        raise ModelNotExportable(f"onnxruntime output differs from torch by {diff:.3g} (tolerance {atol:g})")
    return diff
