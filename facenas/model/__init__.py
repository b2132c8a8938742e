"""Model builder (arch spec -> ``torch.nn.Module``) and ONNX export."""

from facenas.model.export import OnnxExport, export_onnx, verify_onnx
from facenas.model.hgnet import StackedHourglass, build_model

__all__ = ["OnnxExport", "StackedHourglass", "build_model", "export_onnx", "verify_onnx"]
