"""The Stacked-Hourglass segmentation network built from an :class:`ArchSpec` (SPEC section 1)."""

from __future__ import annotations

import torch
from torch import nn

from facenas.model.ops import ConvBnRelu, make_op
from facenas.space.spec import ArchSpec, HourglassSpec, check_size


class Hourglass(nn.Module):
    """Down blocks keep skip branches; up blocks merge them back at each resolution."""

    def __init__(self, spec: HourglassSpec, base_ch: int) -> None:
        super().__init__()
        chs = spec.channels(base_ch)
        self.upsample = nn.UpsamplingBilinear2d(scale_factor=2)
        self.down_blocks = nn.ModuleList(
            nn.Sequential(
                *(
                    make_op(op, chs[i] if j == 0 else chs[i + 1], chs[i + 1], 2 if j == 0 and i > 0 else 1)
                    for j, op in enumerate(block.ops)
                )
            )
            for i, block in enumerate(spec.down)
        )
        self.skip_blocks = nn.ModuleList(
            nn.Sequential(*(make_op(op, chs[i + 1], chs[i + 1]) for op in ops))
            for i, ops in enumerate(spec.skip)
        )
        self.up_blocks = nn.ModuleList(
            nn.Sequential(
                *(make_op(op, chs[i + 2] if j == 0 else chs[i + 1], chs[i + 1]) for j, op in enumerate(ops))
            )
            for i, ops in enumerate(spec.up)
        )
        self.final_conv = nn.Conv2d(chs[1], base_ch, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips: list[torch.Tensor] = []
        out = x
        for down, skip in zip(self.down_blocks[:-1], self.skip_blocks, strict=True):
            out = down(out)
            skips.append(skip(out))
        out = self.down_blocks[-1](out)
        for i in reversed(range(len(skips))):
            out = skips[i] + self.up_blocks[i](self.upsample(out))
        result: torch.Tensor = self.final_conv(out)
        return result


class StackedHourglass(nn.Module):
    """Stem, hourglasses, upsample back to the input size, post-upsample ops, 1x1 classifier."""

    def __init__(self, spec: ArchSpec, num_classes: int, in_channels: int = 3) -> None:
        super().__init__()
        self.spec = spec
        self.num_classes = num_classes
        self.stem_conv = ConvBnRelu(in_channels, spec.base_ch, 3, spec.stem_stride)
        self.hgs = nn.Sequential(*(Hourglass(hg, spec.base_ch) for hg in spec.hourglasses))
        self.final_upsample = nn.UpsamplingBilinear2d(scale_factor=spec.stem_stride)
        self.post_upsample = nn.Sequential(
            *(make_op(op, spec.base_ch, spec.base_ch) for op in spec.post_upsample)
        )
        self.classifier = nn.Conv2d(spec.base_ch, num_classes, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.hgs(self.stem_conv(x))
        logits: torch.Tensor = self.classifier(self.post_upsample(self.final_upsample(out)))
        return logits


def build_model(spec: ArchSpec, num_classes: int = 18, in_channels: int = 3) -> StackedHourglass:
    """A freshly initialised model for ``spec``; refuses absurdly large specs before allocating."""
    check_size(spec, num_classes, in_channels)
    return StackedHourglass(spec, num_classes, in_channels)
