"""The op vocabulary of the hgnet space, independent of torch.

Every op is "same"-padded Conv2d(bias=False) + BatchNorm2d + ReLU with a square kernel.
"""

from __future__ import annotations

from types import MappingProxyType

#: op name -> kernel size
OPS: MappingProxyType[str, int] = MappingProxyType({"conv3x3": 3, "conv5x5": 5, "conv7x7": 7})
