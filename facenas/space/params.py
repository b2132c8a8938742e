"""Search-space parameters, read from the ``search_space`` block of Archai's search YAML files."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from facenas.errors import ConfigError, InvalidInput
from facenas.limits import MAX_CONFIG_BYTES, brief, load_yaml
from facenas.space.ops import OPS

#: Choices Archai's hgnet space fixes in code rather than in the YAML.
DEFAULT_BASE_CHANNELS: tuple[int, ...] = (16, 24, 32, 48)
DEFAULT_EXPANSION_FACTORS: tuple[float, ...] = (1.0, 1.2, 1.5, 1.6, 2.0, 2.2)

#: Upper bounds that keep a hostile config from asking for an absurd space.
MAX_BLOCKS = 8
MAX_OPS_PER_BLOCK = 16
MAX_HOURGLASSES = 8
MAX_IMG_SIDE = 4096


@dataclass(frozen=True)
class SearchSpaceParams:
    """Parameters of the ``hgnet`` space; defaults are the values in Archai's configs."""

    num_classes: int = 18
    img_size: tuple[int, int] = (256, 256)  # (w, h), as Archai writes it
    in_channels: int = 3
    op_subset: tuple[str, ...] = ("conv3x3", "conv5x5", "conv7x7")
    stem_strides: tuple[int, ...] = (2,)
    num_blocks: int = 5
    downsample_block_max_ops: int = 4
    skip_block_max_ops: int = 2
    upsample_block_max_ops: int = 4
    post_upsample_max_ops: int = 2
    max_num_hourglass: int = 2
    base_channels: tuple[int, ...] = DEFAULT_BASE_CHANNELS
    ch_expansion_factors: tuple[float, ...] = field(default=DEFAULT_EXPANSION_FACTORS)

    def __post_init__(self) -> None:
        problems = self.problems()
        if problems:
            raise ConfigError(problems)

    def problems(self) -> list[str]:
        """Every inconsistency in these parameters (empty when valid)."""
        out: list[str] = []
        _check_int(out, "num_classes", self.num_classes, 1, 1000)
        _check_int(out, "in_channels", self.in_channels, 1, 64)
        _check_int(out, "num_blocks", self.num_blocks, 2, MAX_BLOCKS)
        _check_int(out, "downsample_block_max_ops", self.downsample_block_max_ops, 1, MAX_OPS_PER_BLOCK)
        _check_int(out, "skip_block_max_ops", self.skip_block_max_ops, 0, MAX_OPS_PER_BLOCK)
        _check_int(out, "upsample_block_max_ops", self.upsample_block_max_ops, 1, MAX_OPS_PER_BLOCK)
        _check_int(out, "post_upsample_max_ops", self.post_upsample_max_ops, 0, MAX_OPS_PER_BLOCK)
        _check_int(out, "max_num_hourglass", self.max_num_hourglass, 1, MAX_HOURGLASSES)
        ops = self.op_subset
        if (
            not isinstance(ops, tuple)
            or not ops
            or any(not isinstance(op, str) or op not in OPS for op in ops)
        ):
            out.append(f"op_subset: {brief(ops)} must be a non-empty list of op names from {sorted(OPS)}")
        elif len(set(self.op_subset)) != len(self.op_subset):
            out.append("op_subset: duplicate ops")
        _check_int_choices(out, "stem_strides", self.stem_strides, 1, 8)
        _check_int_choices(out, "base_channels", self.base_channels, 1, 1024)
        factors = self.ch_expansion_factors
        if (
            not isinstance(factors, tuple)
            or not factors
            or not all(
                isinstance(f, int | float) and not isinstance(f, bool) and 0 < f <= 16 for f in factors
            )
        ):
            out.append("ch_expansion_factors: must be a non-empty list of numbers in (0, 16]")
        self._check_img_size(out)
        return out

    def _check_img_size(self, out: list[str]) -> None:
        size = self.img_size
        if not (
            isinstance(size, tuple)
            and len(size) == 2
            and all(isinstance(s, int) and not isinstance(s, bool) and 1 <= s <= MAX_IMG_SIDE for s in size)
        ):
            out.append(f"img_size: {brief(size)} must be [width, height] with 1 <= side <= {MAX_IMG_SIDE}")
            return
        if out:  # divisibility needs valid strides and num_blocks
            return
        for stride in self.stem_strides:
            factor = 2**self.num_blocks * stride
            if size[0] % factor or size[1] % factor:
                out.append(
                    f"img_size: {list(size)} must be divisible by 2**num_blocks * stem_stride = {factor}"
                )

    def to_dict(self) -> dict[str, Any]:
        """JSON/YAML-friendly form (lists, not tuples)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_mapping(cls, params: Mapping[str, Any]) -> SearchSpaceParams:
        """Build from a ``search_space.params`` mapping; unknown keys are errors."""
        known = set(cls.__dataclass_fields__)
        problems = [f"{key}: unknown search-space parameter" for key in params if key not in known]
        kwargs: dict[str, Any] = {}
        for key, value in params.items():
            if key in known:
                kwargs[key] = tuple(value) if isinstance(value, list) else value
        if problems:
            try:
                cls(**kwargs)
            except ConfigError as err:
                problems.extend(err.problems)
            raise ConfigError(problems)
        return cls(**kwargs)


def _check_int(out: list[str], name: str, value: object, lo: int, hi: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        out.append(f"{name}: {brief(value)} must be an integer in [{lo}, {hi}]")


def _check_int_choices(out: list[str], name: str, values: tuple[int, ...], lo: int, hi: int) -> None:
    ok = isinstance(values, tuple) and len(values) > 0
    ok = ok and all(isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi for v in values)
    if not ok:
        out.append(f"{name}: {brief(values)} must be a non-empty list of integers in [{lo}, {hi}]")


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping with clear errors (size and alias limits of ``facenas.limits``)."""
    try:
        with Path(path).open("rb") as fh:
            raw = fh.read(MAX_CONFIG_BYTES + 1)
    except OSError as err:
        raise ConfigError([f"{path}: cannot read ({err.strerror or err})"]) from err
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError([f"{path}: larger than {MAX_CONFIG_BYTES} bytes"])
    try:
        data = load_yaml(raw.decode("utf-8"), str(path))
    except UnicodeDecodeError as err:
        raise ConfigError([f"{path}: not UTF-8 text ({err.reason})"]) from None
    except InvalidInput as err:
        raise ConfigError([str(err)]) from None
    if not isinstance(data, dict):
        raise ConfigError([f"{path}: top level must be a mapping"])
    return data


def search_space_params_from_config(config: Mapping[str, Any]) -> SearchSpaceParams:
    """Extract the ``search.search_space`` block of an Archai search config."""
    search = config.get("search")
    block = search.get("search_space") if isinstance(search, dict) else None
    if not isinstance(block, dict):
        raise ConfigError(["search.search_space: missing (expected Archai's search config layout)"])
    name = block.get("name", "hgnet")
    if name != "hgnet":
        raise ConfigError([f"search.search_space.name: {brief(name)} is not supported (only 'hgnet')"])
    params = block.get("params", {})
    if not isinstance(params, dict):
        raise ConfigError(["search.search_space.params: must be a mapping"])
    return SearchSpaceParams.from_mapping(params)


def load_search_space_params(path: str | Path | None = None) -> SearchSpaceParams:
    """Search-space parameters from an Archai search YAML (default: the embedded ``cpu_search.yaml``)."""
    if path is None:
        return search_space_params_from_config(load_yaml(default_config_text("cpu"), "cpu_search.yaml"))
    return search_space_params_from_config(read_yaml(path))


def default_config_text(target: str) -> str:
    """The embedded copy of Archai's ``{target}_search.yaml`` (``cpu`` or ``snp``)."""
    return resources.files("facenas.configs").joinpath(f"{target}_search.yaml").read_text(encoding="utf-8")
