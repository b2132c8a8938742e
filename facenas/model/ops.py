"""Torch modules for the hgnet ops."""

from __future__ import annotations

import torch
from torch import nn

from facenas.errors import ArchSpecError
from facenas.space.ops import OPS


class ConvBnRelu(nn.Module):
    """ "Same"-padded Conv2d(bias=False) + BatchNorm2d + ReLU (Archai's ``ReluConv2d``)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1) -> None:
        super().__init__()
        if kernel_size % 2 == 0:
            raise ArchSpecError("op", f"kernel size {kernel_size} must be odd for same padding")
        self.conv = nn.Conv2d(
            in_channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2, bias=False
        )
        self.bn = nn.BatchNorm2d(out_channels)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.act(self.bn(self.conv(x)))
        return out


def make_op(name: str, in_channels: int, out_channels: int, stride: int = 1) -> ConvBnRelu:
    """The module for op ``name`` (a key of :data:`facenas.space.ops.OPS`)."""
    try:
        kernel = OPS[name]
    except KeyError:
        raise ArchSpecError("op", f"unknown op {name!r}; known ops: {', '.join(OPS)}") from None
    return ConvBnRelu(in_channels, out_channels, kernel, stride)
