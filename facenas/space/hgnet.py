"""The hgnet search space on Archai's config classes: archids, sampling, mutation, crossover, constraints.

Sampling, mutation and crossover consume the seeded ``random.Random`` exactly as Archai's
``ConfigSearchSpace`` does, so a seed gives the same architectures Archai would propose.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import random
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from facenas.errors import ArchSpecError
from facenas.space.archai_config import build_config
from facenas.space.archfile import dump_arch_json, load_arch_document, parse_arch_document
from facenas.space.params import SearchSpaceParams
from facenas.space.spec import ArchSpec, check_size, read_spec

MUTATION_PROB = 0.3
CROSSOVER_PROB = 0.5


class Arch:
    """An architecture: its archid under a space, the validated spec and the Archai JSON document.

    Immutable. The document is kept deflated (about 1 KB instead of about 36 KB as nested dicts): a
    search holds every candidate it proposed; ``document`` and :meth:`to_json` unpack it on each use."""

    __slots__ = ("_packed", "archid", "spec")

    archid: str
    spec: ArchSpec
    _packed: bytes

    def __init__(self, archid: str, spec: ArchSpec, document: Mapping[str, Any]) -> None:
        packed = zlib.compress(json.dumps(document, separators=(",", ":")).encode("utf-8"), 6)
        for name, value in (("archid", archid), ("spec", spec), ("_packed", packed)):
            object.__setattr__(self, name, value)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"Arch is immutable: cannot set {name}")

    @property
    def document(self) -> dict[str, Any]:
        """The Archai document (a fresh copy each time)."""
        document: dict[str, Any] = json.loads(zlib.decompress(self._packed))
        return document

    def to_json(self) -> str:
        """The document in Archai's file format (indented: for files people read)."""
        return dump_arch_json(self.document)

    def compact_json(self) -> str:
        """The document as compact JSON, as kept (what requests and the store carry: no re-encoding,
        a tenth of :meth:`to_json`'s cost and size)."""
        return zlib.decompress(self._packed).decode("utf-8")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Arch):
            return NotImplemented
        return (self.archid, self.spec, self.document) == (other.archid, other.spec, other.document)

    def __hash__(self) -> int:
        return hash(self.archid)

    def __repr__(self) -> str:
        return f"Arch(archid={self.archid!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (Arch, (self.archid, self.spec, self.document))


@dataclass(frozen=True)
class ParamRange:
    """Archai's ``Model Size (b)`` constraint: trainable parameters within [low, high]."""

    low: float = 1e6
    high: float = 5e7

    def __contains__(self, params: object) -> bool:
        return isinstance(params, int | float) and self.low <= params <= self.high


class HgnetSearchSpace:
    """The Stacked-Hourglass space of Archai's face-segmentation example."""

    def __init__(self, params: SearchSpaceParams | None = None, seed: int = 42) -> None:
        self.params = params or SearchSpaceParams()
        self.tree = _build_param_tree(self.params)
        self.rng = random.Random(seed)
        # The tree never changes: its dict forms are made once (Archai rebuilds them on every call, about
        # 1 ms each; a proposal asked for up to three). Shared, so never changed by their users.
        self._choices: dict[str, Any] = self.tree.to_dict()
        self._features: dict[str, Any] = self.tree.to_dict(
            flatten=True, deduplicate_params=True, remove_constants=True
        )

    # --- files and archids ----------------------------------------------------------------------------

    def load(self, path: str | Path) -> Arch:
        """Load an arch file; any loadable Archai hgnet file works, even one from another space."""
        return self.from_document(load_arch_document(path))

    def from_json(self, text: str) -> Arch:
        """Parse an arch JSON document."""
        return self.from_document(parse_arch_document(text))

    def from_document(self, document: Mapping[str, Any]) -> Arch:
        """Validate a document and compute its archid under this space."""
        doc = parse_arch_document(document)
        config = build_config(doc)
        spec = read_spec(config)  # records which parameters the builder reads
        check_size(spec, self.params.num_classes, self.params.in_channels)
        return Arch(archid=self._archid(config), spec=spec, document=doc)

    def save(self, arch: Arch, path: str | Path) -> Path:
        """Write ``arch`` in Archai's JSON format; a directory gets ``<archid>.json``."""
        path = Path(path)
        if path.is_dir():
            path = path / f"{arch.archid}.json"
        path.write_text(arch.to_json(), encoding="utf-8")
        return path

    def _archid(self, config: Any) -> str:
        features = encode_config(self._features, config)
        return hashlib.sha1(str(tuple(features)).encode("utf-8")).hexdigest()

    # --- membership and constraints -------------------------------------------------------------------

    def check_in_space(self, arch: Arch) -> None:
        """Raise :class:`ArchSpecError` naming the first value that is not one of this space's choices."""
        _check_choices(self._choices, arch.document, "")

    def num_parameters(self, arch: Arch) -> int:
        """Trainable parameters of the model built from ``arch`` under this space."""
        return arch.spec.num_parameters(self.params.num_classes, self.params.in_channels)

    def fingerprint(self, arch: Arch) -> str:
        """The model ``arch`` builds under this space (see :meth:`ArchSpec.fingerprint`)."""
        return arch.spec.fingerprint(self.params.num_classes, self.params.in_channels)

    def macs(self, arch: Arch, img_size: tuple[int, int] | None = None) -> int:
        """Multiply-accumulates for one image (default: the space's image size)."""
        size = img_size or self.params.img_size
        return arch.spec.macs(self.params.num_classes, size, self.params.in_channels)

    # --- sampling ------------------------------------------------------------------------------------

    def random_sample(self) -> Arch:
        """Draw every choice uniformly (unused slots too), as Archai does."""
        from archai.discrete_search.search_spaces.config import utils

        rng = self.rng
        doc = utils.replace_ptree_choices(self._choices, lambda choice: choice.random_sample(rng))
        return self.from_document(doc)

    def mutate(self, arch: Arch) -> Arch:
        """Replace each choice by a uniform draw with probability 0.3."""
        from archai.discrete_search.search_spaces.config import utils

        self.check_in_space(arch)
        rng = self.rng

        def repl(choice: Any, current: Any) -> Any:
            return rng.choice(choice.choices) if rng.random() < MUTATION_PROB else current

        return self.from_document(utils.replace_ptree_pair_choices(self._choices, arch.document, repl))

    def crossover(self, parents: Sequence[Arch]) -> Arch:
        """Pick two parents with replacement; each choice from the first with probability 0.5."""
        from archai.discrete_search.search_spaces.config import utils

        if not parents:
            raise ValueError("crossover needs at least one parent")
        first, second = self.rng.choices(list(parents), k=2)
        for parent in (first, second):
            self.check_in_space(parent)
        rng = self.rng

        def from_first(choice: Any, value: Any) -> Any:
            return value if rng.random() < CROSSOVER_PROB else choice

        mixed = utils.replace_ptree_pair_choices(self._choices, first.document, from_first)
        doc = utils.replace_ptree_pair_choices(mixed, second.document, lambda _choice, value: value)
        return self.from_document(doc)

    def sample_valid(self, constraint: ParamRange | None = None, max_tries: int = 1000) -> Arch:
        """Random samples until one satisfies ``constraint`` (bounded, so it never hangs)."""
        for _ in range(max_tries):
            try:
                arch = self.random_sample()
            except ArchSpecError:  # a draw beyond the absolute size limit
                continue
            if constraint is None or self.num_parameters(arch) in constraint:
                return arch
        raise ArchSpecError("", f"no architecture within {constraint} after {max_tries} samples")


def _build_param_tree(p: SearchSpaceParams) -> Any:
    """The ArchParamTree of SPEC section 1, in Archai's parameter order."""
    from archai.discrete_search.search_spaces.config import ArchParamTree, DiscreteChoice, repeat_config

    def layers(lo: int, hi: int) -> dict[str, Any]:
        ops = {"op": DiscreteChoice(list(p.op_subset))}
        block: dict[str, Any] = repeat_config(ops, repeat_times=list(range(lo, hi + 1)))
        return block

    hourglass = {
        "downsample_blocks": repeat_config(
            {
                "layers": layers(1, p.downsample_block_max_ops),
                "ch_expansion_factor": DiscreteChoice(list(p.ch_expansion_factors)),
            },
            repeat_times=p.num_blocks,
        ),
        "skip_blocks": repeat_config(
            {"layers": layers(0, p.skip_block_max_ops)}, repeat_times=p.num_blocks - 1
        ),
        "upsample_blocks": repeat_config(
            {"layers": layers(1, p.upsample_block_max_ops)}, repeat_times=p.num_blocks - 1
        ),
    }
    return ArchParamTree(
        {
            "stem_stride": DiscreteChoice(list(p.stem_strides)),
            "base_ch": DiscreteChoice(list(p.base_channels)),
            "hourglasses": repeat_config(hourglass, repeat_times=list(range(1, p.max_num_hourglass + 1))),
            "post_upsample_layers": layers(0, p.post_upsample_max_ops),
        }
    )


def encode_config(features: Mapping[str, Any], config: Any) -> list[float]:
    """Archai's ``ArchParamTree.encode_config`` (unused parameters as NaN), tolerant of foreign values.

    ``features`` is the tree's ``to_dict(flatten=True, deduplicate_params=True, remove_constants=True)``.
    Identical to Archai's for architectures inside the space; for a file from another space a one-hot
    value outside ``op_subset`` encodes as all zeros instead of failing an assertion.
    """
    from archai.discrete_search.search_spaces.config.utils import flatten_dict, order_dict_keys

    flat_config = order_dict_keys(features, flatten_dict(config._config_dict))
    used = order_dict_keys(features, flatten_dict(config.get_used_params()))
    encoded: list[list[float]] = []
    for name, value in flat_config.items():
        choice = features[name]
        if choice.encode_strategy == "one_hot":
            enc = [float(option == value) for option in choice.choices]
        else:
            enc = [_as_float(name, value)]
        if not used.get(name, False):
            enc = [math.nan] * len(enc)
        encoded.append(enc)
    return list(itertools.chain.from_iterable(encoded))


def _as_float(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ArchSpecError(name, f"must be a number, got {json.dumps(value)}")
    return float(value)


def _check_choices(tree: Mapping[str, Any], doc: Mapping[str, Any], path: str) -> None:
    from archai.discrete_search.search_spaces.config import DiscreteChoice

    for key, node in tree.items():
        field = f"{path}.{key}" if path else key
        if key not in doc:
            raise ArchSpecError(field, "missing (required by this search space)")
        value = doc[key]
        if isinstance(node, DiscreteChoice):
            if value not in list(node.choices) or isinstance(value, bool):
                raise ArchSpecError(field, f"{value!r} is not in this space's choices {list(node.choices)}")
        elif isinstance(node, Mapping):
            if not isinstance(value, Mapping):
                raise ArchSpecError(field, "must be an object")
            _check_choices(node, value, field)
        elif value != node:
            raise ArchSpecError(field, f"must be {node!r}, got {value!r}")


def arch_with_id(document: str | Mapping[str, Any], archid: str, num_classes: int, in_channels: int) -> Arch:
    """Validate a document into an :class:`Arch` carrying a caller-given archid (no space needed).

    For workers, which build and measure what the searcher sends and key results by the searcher's archid.
    """
    doc = parse_arch_document(document)
    spec = read_spec(build_config(doc))
    check_size(spec, num_classes, in_channels)
    return Arch(archid=archid, spec=spec, document=doc)
