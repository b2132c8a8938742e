"""The architecture spec: a validated, torch-free description of one hgnet model.

:func:`read_spec` walks an Archai ``ArchConfig`` exactly the way the model builder does, calling
``pick`` on the same parameters, so Archai's usage tracking (and therefore the archid) matches what the
model really uses. Every value is type- and range-checked on the way; problems raise
:class:`ArchSpecError` with the dotted field path Archai itself uses for that parameter.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Any, TypeVar, cast

from facenas.errors import ArchSpecError, InvalidInput
from facenas.limits import brief
from facenas.space.archai_config import arch_config
from facenas.space.ops import OPS

MAX_CHANNELS = 4096
MAX_PARAMETERS = 500_000_000
MAX_STEM_STRIDE = 8
MAX_BASE_CHANNELS = 1024
MAX_EXPANSION_FACTOR = 16.0
TOP_LEVEL_KEYS = ("stem_stride", "base_ch", "hourglasses", "post_upsample_layers")


@dataclass(frozen=True)
class DownBlock:
    """A downsample block: its ops and the channel expansion factor it applies."""

    ops: tuple[str, ...]
    factor: float


@dataclass(frozen=True)
class HourglassSpec:
    """One hourglass: ``n`` downsample blocks, ``n-1`` skip blocks and ``n-1`` upsample blocks."""

    down: tuple[DownBlock, ...]
    skip: tuple[tuple[str, ...], ...]
    up: tuple[tuple[str, ...], ...]

    def channels(self, base_ch: int) -> list[int]:
        """``chs[0] = base_ch``, ``chs[i+1] = int(chs[i] * factor_i)`` over every downsample block."""
        chs = [base_ch]
        for block in self.down:
            chs.append(int(chs[-1] * block.factor))
        return chs


@dataclass(frozen=True)
class ArchSpec:
    """A whole Stacked-Hourglass architecture."""

    stem_stride: int
    base_ch: int
    hourglasses: tuple[HourglassSpec, ...]
    post_upsample: tuple[str, ...]

    def fingerprint(self, num_classes: int, in_channels: int) -> str:
        """A short hash of everything that shapes the built model: this spec (every value the builder
        reads, constant choices of the space included, unused slots not) and the head and input widths.
        Equal fingerprints build the same model; results are keyed by it besides the archid (which leaves
        constants and the widths out, as Archai's does)."""
        data = {"spec": asdict(self), "num_classes": num_classes, "in_channels": in_channels}
        return hashlib.sha1(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]

    @property
    def downsample_factor(self) -> int:
        """Total stride at the bottleneck; input sides must be multiples of it."""
        deepest = max(len(hg.down) for hg in self.hourglasses)
        return int(self.stem_stride * 2 ** (deepest - 1))

    def layers(self, num_classes: int, in_channels: int) -> list[ConvLayer]:
        """Every convolution, with its resolution divisor, in build order."""
        out = [ConvLayer(OPS["conv3x3"], in_channels, self.base_ch, self.stem_stride, False)]
        for hg in self.hourglasses:
            out.extend(_hourglass_layers(hg, self.base_ch, self.stem_stride))
        out.extend(ConvLayer(OPS[op], self.base_ch, self.base_ch, 1, False) for op in self.post_upsample)
        out.append(ConvLayer(1, self.base_ch, num_classes, 1, True))
        return out

    def num_parameters(self, num_classes: int, in_channels: int = 3) -> int:
        """Trainable parameters (conv weights and biases, BatchNorm affine)."""
        return sum(layer.parameters for layer in self.layers(num_classes, in_channels))

    def macs(self, num_classes: int, img_size: tuple[int, int], in_channels: int = 3) -> int:
        """Multiply-accumulates of the convolutions for one image of ``img_size`` (w, h)."""
        w, h = img_size
        return sum(
            layer.parameters_weight * (w // layer.divisor) * (h // layer.divisor)
            for layer in self.layers(num_classes, in_channels)
        )


@dataclass(frozen=True)
class ConvLayer:
    """One convolution as the builder creates it (``bias`` ones are plain 1x1 convs without BN)."""

    kernel: int
    cin: int
    cout: int
    divisor: int  # output resolution = input resolution / divisor
    bias: bool

    @property
    def parameters_weight(self) -> int:
        return self.kernel * self.kernel * self.cin * self.cout

    @property
    def parameters(self) -> int:
        extra = self.cout if self.bias else 2 * self.cout  # bias, or BatchNorm weight + bias
        return self.parameters_weight + extra


def _hourglass_layers(hg: HourglassSpec, base_ch: int, stem: int) -> list[ConvLayer]:
    chs = hg.channels(base_ch)
    out: list[ConvLayer] = []
    for i, block in enumerate(hg.down):
        div = stem * 2**i
        out.extend(
            ConvLayer(OPS[op], chs[i] if j == 0 else chs[i + 1], chs[i + 1], div, False)
            for j, op in enumerate(block.ops)
        )
    for i, ops in enumerate(hg.skip):
        out.extend(ConvLayer(OPS[op], chs[i + 1], chs[i + 1], stem * 2**i, False) for op in ops)
    for i, ops in enumerate(hg.up):
        out.extend(
            ConvLayer(OPS[op], chs[i + 2] if j == 0 else chs[i + 1], chs[i + 1], stem * 2**i, False)
            for j, op in enumerate(ops)
        )
    out.append(ConvLayer(1, chs[1], base_ch, stem, True))
    return out


# --- reading an ArchConfig, the way the builder does -------------------------------------------------


def read_spec(config: Any) -> ArchSpec:
    """Build an :class:`ArchSpec` from an Archai ``ArchConfig``, recording parameter usage on it."""
    unknown = [key for key in config.nodes if key not in TOP_LEVEL_KEYS]
    if unknown:
        raise ArchSpecError(unknown[0], f"unknown field (expected {', '.join(TOP_LEVEL_KEYS)})")
    base_ch = _int(config, "base_ch", "", 1, MAX_BASE_CHANNELS)
    stem_stride = _int(config, "stem_stride", "", 1, MAX_STEM_STRIDE)
    hg_list = _list(config, "hourglasses", "", minimum=1)
    hourglasses = tuple(
        _read_hourglass(hg_cfg, f"hourglasses._configs.{i}", base_ch) for i, hg_cfg in enumerate(hg_list)
    )
    post = _read_ops(config, "post_upsample_layers", "", minimum=0)
    spec = ArchSpec(stem_stride, base_ch, hourglasses, post)
    return spec


def check_size(spec: ArchSpec, num_classes: int, in_channels: int) -> int:
    """Parameter count, or :class:`ArchSpecError` if the model would be absurdly large."""
    params = spec.num_parameters(num_classes, in_channels)
    if params > MAX_PARAMETERS:
        raise ArchSpecError("", f"model would have {params:,} parameters (limit {MAX_PARAMETERS:,})")
    return params


def check_input_size(spec: ArchSpec, img_size: tuple[int, int]) -> None:
    """Input sides must be multiples of the bottleneck stride, or skip additions mismatch."""
    factor = spec.downsample_factor
    w, h = img_size
    if w <= 0 or h <= 0 or w % factor or h % factor:
        raise InvalidInput(
            f"img_size {w}x{h}: both sides must be positive multiples of {factor} "
            f"(stem_stride {spec.stem_stride} x 2**(downsample blocks - 1)) for this architecture"
        )


def _read_hourglass(cfg: Any, path: str, base_ch: int) -> HourglassSpec:
    _require_keys(cfg, path, ("downsample_blocks", "skip_blocks", "upsample_blocks"))
    down_list = _list(cfg, "downsample_blocks", path, minimum=2)
    down: list[DownBlock] = []
    channels = base_ch
    for i, block in enumerate(down_list):
        block_path = f"{path}.downsample_blocks._configs.{i}"
        _require_keys(block, block_path, ("layers", "ch_expansion_factor"))
        factor = _factor(block, block_path)
        channels = int(channels * factor)
        if not 1 <= channels <= MAX_CHANNELS:
            raise ArchSpecError(
                f"{block_path}.ch_expansion_factor",
                f"gives {channels} channels; must stay within [1, {MAX_CHANNELS}]",
            )
        down.append(_interned(DownBlock(_read_ops(block, "layers", block_path, minimum=1), factor)))
    n = len(down)
    skip = _read_branch(cfg, "skip_blocks", path, n - 1, minimum_ops=0)
    up = _read_branch(cfg, "upsample_blocks", path, n - 1, minimum_ops=1)
    return HourglassSpec(tuple(down), skip, up)


def _read_branch(cfg: Any, name: str, path: str, count: int, minimum_ops: int) -> tuple[tuple[str, ...], ...]:
    blocks = _list(cfg, name, path, minimum=0)
    if len(blocks) != count:
        raise ArchSpecError(
            _join(path, f"{name}._repeat_times"),
            f"is {len(blocks)}, but {count} are needed (one fewer than downsample_blocks)",
        )
    out = []
    for i, block in enumerate(blocks):
        block_path = _join(path, f"{name}._configs.{i}")
        _require_keys(block, block_path, ("layers",))
        out.append(_read_ops(block, "layers", block_path, minimum=minimum_ops))
    return _interned(tuple(out))


def _read_ops(cfg: Any, name: str, path: str, minimum: int) -> tuple[str, ...]:
    layers = _list(cfg, name, path, minimum=minimum)
    ops = []
    for i, layer in enumerate(layers):
        layer_path = _join(path, f"{name}._configs.{i}")
        _require_keys(layer, layer_path, ("op",))
        op = layer.pick("op")
        if not isinstance(op, str) or op not in OPS:
            raise ArchSpecError(f"{layer_path}.op", f"unknown op {brief(op)}; known ops: {', '.join(OPS)}")
        ops.append(_OP_NAMES[op])
    return _interned(tuple(ops))


_OP_NAMES = {name: name for name in OPS}  # one string object per op name, not one per parsed layer
_INTERNED: dict[Any, Any] = {}
_T = TypeVar("_T")
MAX_INTERNED = 1 << 16


def _interned(value: _T) -> _T:
    """One shared object per distinct op sequence or down block: a search holds thousands of specs made
    of the same few (``MAX_INTERNED`` of them at most, so odd documents cannot grow it without end)."""
    found = _INTERNED.get(value)
    if found is not None:
        return cast("_T", found)
    if len(_INTERNED) < MAX_INTERNED:
        _INTERNED[value] = value
    return value


def _list(cfg: Any, name: str, path: str, minimum: int) -> Any:
    field = _join(path, name)
    if name not in cfg.nodes:
        raise ArchSpecError(field, "missing")
    value = cfg.pick(name)
    if not isinstance(value, arch_config().ArchConfigList):
        raise ArchSpecError(field, "must be a config_list object")
    if len(value) < minimum:
        raise ArchSpecError(f"{field}._repeat_times", f"is {len(value)}; at least {minimum} required")
    return value


def _int(cfg: Any, name: str, path: str, lo: int, hi: int) -> int:
    field = _join(path, name)
    if name not in cfg.nodes:
        raise ArchSpecError(field, "missing")
    value = cfg.pick(name)
    if not isinstance(value, int) or isinstance(value, bool):
        raise ArchSpecError(field, f"must be an integer, got {brief(value)}")
    if not lo <= value <= hi:
        raise ArchSpecError(field, f"{brief(value)} is outside [{lo}, {hi}]")
    return value


def _factor(cfg: Any, path: str) -> float:
    field = f"{path}.ch_expansion_factor"
    value = cfg.pick("ch_expansion_factor")
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise ArchSpecError(field, f"must be a number, got {brief(value)}")
    if not 0 < value <= MAX_EXPANSION_FACTOR:
        raise ArchSpecError(field, f"{brief(value)} is outside (0, {MAX_EXPANSION_FACTOR:g}]")
    return float(value)


def _require_keys(cfg: Any, path: str, keys: tuple[str, ...]) -> None:
    if not isinstance(cfg, arch_config().ArchConfig):
        raise ArchSpecError(path, "must be an object")
    for key in keys:
        if key not in cfg.nodes:
            raise ArchSpecError(_join(path, key), "missing")
    unknown = [key for key in cfg.nodes if key not in keys]
    if unknown:
        raise ArchSpecError(_join(path, unknown[0]), f"unknown field (expected {', '.join(keys)})")


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name
