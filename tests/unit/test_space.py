"""The hgnet search space: archids, parameter counts, sampling, mutation, crossover, constraints."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from facenas.errors import ArchSpecError, ConfigError
from facenas.space import HgnetSearchSpace, ParamRange, SearchSpaceParams, load_search_space_params
from facenas.space.params import default_config_text
from tests.conftest import SMALLEST_SNP

# Archai's own search configs (copied verbatim from its face_segmentation example)
ARCHAI_CONFS = Path(__file__).parents[1] / "fixtures" / "archai" / "confs"


@pytest.fixture(scope="module")
def space() -> HgnetSearchSpace:
    return HgnetSearchSpace(seed=42)


def test_all_published_snp_archids_reproduce(space: HgnetSearchSpace, snp_arch_files: list[Path]) -> None:
    for path in snp_arch_files:
        assert space.load(path).archid == path.stem


def test_archids_match_archai_own_encoder(space: HgnetSearchSpace, snp_arch_files: list[Path]) -> None:
    """Our tolerant encoder equals ArchParamTree.encode_config inside the space."""
    import hashlib

    from archai.discrete_search.search_spaces.config.arch_config import build_arch_config

    from facenas.space.spec import read_spec

    for path in snp_arch_files[:5]:
        config = build_arch_config(json.loads(path.read_text()))
        read_spec(config)
        features = space.tree.encode_config(config, track_unused_params=True)
        assert hashlib.sha1(str(tuple(features)).encode()).hexdigest() == path.stem


def test_the_copy_free_config_builder_equals_archais(
    space: HgnetSearchSpace, snp_arch_files: list[Path]
) -> None:
    """build_config gives Archai's own classes with the same nodes, usage records and archids as
    build_arch_config, for every published file and sampled, mutated and crossed-over documents."""
    from archai.discrete_search.search_spaces.config.arch_config import build_arch_config

    from facenas.space.archai_config import build_config
    from facenas.space.spec import read_spec

    documents = [json.loads(path.read_text()) for path in snp_arch_files]
    sampled = [space.random_sample() for _ in range(5)]
    documents += [a.document for a in sampled]
    documents += [space.mutate(sampled[0]).document, space.crossover(sampled[:2]).document]
    for document in documents:
        ours, archais = build_config(json.loads(json.dumps(document))), build_arch_config(document)
        assert type(ours) is type(archais)
        assert ours.to_dict() == archais.to_dict()
        assert read_spec(ours) == read_spec(archais)
        assert ours.get_used_params() == archais.get_used_params()
        encoded = [space.tree.encode_config(c, track_unused_params=True) for c in (ours, archais)]
        assert str(encoded[0]) == str(encoded[1])  # unused choices encode as nan


def test_the_copy_free_config_builder_refuses_what_archai_refuses() -> None:
    from facenas.space.archai_config import build_config

    with pytest.raises(KeyError):
        build_config({"x": {"_config_type": "unknown"}})
    with pytest.raises(AssertionError):
        build_config({"x": {"_config_type": "config_list", "_configs": {}}})


def test_parameter_count_of_smallest_published_model(space: HgnetSearchSpace) -> None:
    assert space.num_parameters(space.load(SMALLEST_SNP)) == 666_049


def test_snp_and_cpu_configs_load_unchanged() -> None:
    import yaml

    from facenas.space.params import search_space_params_from_config

    for target in ("cpu", "snp"):
        params = search_space_params_from_config(yaml.safe_load(default_config_text(target)))
        assert params == SearchSpaceParams()
    for name in ("cpu_search.yaml", "snp_search.yaml"):
        assert load_search_space_params(ARCHAI_CONFS / name) == SearchSpaceParams()


def test_bad_search_space_config_lists_every_problem(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        "search:\n  search_space:\n    name: hgnet\n    params:\n"
        "      num_blocks: 0\n      op_subset: [conv9x9]\n      img_size: [100, 100]\n      bogus: 1\n"
    )
    with pytest.raises(ConfigError) as info:
        load_search_space_params(path)
    text = str(info.value)
    for field in ("bogus", "num_blocks", "op_subset"):
        assert field in text


def test_img_size_must_divide_by_downsampling() -> None:
    with pytest.raises(ConfigError, match="divisible by"):
        SearchSpaceParams(img_size=(100, 128))


def test_sampling_is_deterministic_per_seed() -> None:
    a, b, c = HgnetSearchSpace(seed=3), HgnetSearchSpace(seed=3), HgnetSearchSpace(seed=4)
    ids_a = [a.random_sample().archid for _ in range(5)]
    ids_b = [b.random_sample().archid for _ in range(5)]
    ids_c = [c.random_sample().archid for _ in range(5)]
    assert ids_a == ids_b
    assert ids_a != ids_c
    assert len(set(ids_a)) == 5


def test_samples_mutants_and_children_stay_in_space() -> None:
    space = HgnetSearchSpace(seed=11)
    parents = [space.random_sample() for _ in range(6)]
    mutants = [space.mutate(p) for p in parents]
    children = [space.crossover(parents) for _ in range(6)]
    for arch in parents + mutants + children:
        space.check_in_space(arch)
        assert 1 <= len(arch.spec.hourglasses) <= 2
        for hg in arch.spec.hourglasses:
            assert len(hg.down) == 5 and len(hg.skip) == 4 and len(hg.up) == 4
            assert all(1 <= len(b.ops) <= 4 for b in hg.down)
            assert all(0 <= len(ops) <= 2 for ops in hg.skip)
            assert all(1 <= len(ops) <= 4 for ops in hg.up)
        assert len(arch.spec.post_upsample) <= 2
        assert arch.spec.base_ch in (16, 24, 32, 48)


def test_mutation_changes_about_thirty_percent_of_choices() -> None:
    space = HgnetSearchSpace(seed=5)
    parent = space.random_sample()
    flat_parent = _leaves(parent.document)
    changed = total = 0
    for _ in range(40):
        child = _leaves(space.mutate(parent).document)
        changed += sum(child[k] != v for k, v in flat_parent.items())
        total += len(flat_parent)
    # each choice redrawn with p=0.3; a redraw keeps the value with p=1/len(choices)
    assert 0.12 < changed / total < 0.3


def test_crossover_takes_every_choice_from_a_parent() -> None:
    space = HgnetSearchSpace(seed=9)
    p1, p2 = space.random_sample(), space.random_sample()
    l1, l2 = _leaves(p1.document), _leaves(p2.document)
    for _ in range(10):
        child = _leaves(space.crossover([p1, p2]).document)
        assert all(v in (l1[k], l2[k]) for k, v in child.items())


def test_mutation_and_crossover_are_deterministic_per_seed() -> None:
    def run(seed: int) -> list[str]:
        space = HgnetSearchSpace(seed=seed)
        parents = [space.random_sample() for _ in range(3)]
        return [space.mutate(parents[0]).archid, space.crossover(parents).archid]

    assert run(21) == run(21)
    assert run(21) != run(22)


def test_param_range_constraint() -> None:
    space = HgnetSearchSpace(seed=1)
    constraint = ParamRange(1e6, 3e6)
    for _ in range(5):
        arch = space.sample_valid(constraint)
        assert 1e6 <= space.num_parameters(arch) <= 3e6
    assert 5e5 not in constraint and 2e6 in constraint
    with pytest.raises(ArchSpecError, match="no architecture"):
        space.sample_valid(ParamRange(1, 10), max_tries=20)


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    space = HgnetSearchSpace(seed=2)
    arch = space.random_sample()
    path = space.save(arch, tmp_path)
    assert path.name == f"{arch.archid}.json"
    again = space.load(path)
    assert again.archid == arch.archid and again.spec == arch.spec
    assert list(json.loads(path.read_text())) == [
        "stem_stride",
        "base_ch",
        "hourglasses",
        "post_upsample_layers",
    ]


def test_older_archai_files_load_and_build(tmp_path: Path) -> None:
    """Files of Archai's older space (4 blocks, factor 0.8, stride 4) load, build and get an archid."""
    import torch

    from facenas.model import build_model

    old = SearchSpaceParams(
        num_blocks=4,
        stem_strides=(2, 4),
        downsample_block_max_ops=5,
        skip_block_max_ops=3,
        post_upsample_max_ops=3,
        ch_expansion_factors=(0.8, 1.0, 1.2, 1.5, 1.6, 2.0),
    )
    old_space = HgnetSearchSpace(old, seed=0)
    archs = [old_space.random_sample() for _ in range(30)]
    arch = next(a for a in archs if any(b.factor == 0.8 for hg in a.spec.hourglasses for b in hg.down))
    path = old_space.save(arch, tmp_path)
    today = HgnetSearchSpace()
    loaded = today.load(path)
    assert len(loaded.spec.hourglasses[0].down) == 4
    assert loaded.archid != arch.archid  # archids depend on the space
    with pytest.raises(ArchSpecError):
        today.check_in_space(loaded)
    model = build_model(loaded.spec)
    assert model(torch.rand(1, 3, 64, 64)).shape == (1, 18, 64, 64)


def test_macs_grow_with_resolution(space: HgnetSearchSpace) -> None:
    arch = space.load(SMALLEST_SNP)
    assert space.macs(arch, (256, 256)) == 4 * space.macs(arch, (128, 128))


def _leaves(node: object, prefix: str = "") -> dict[str, object]:
    out: dict[str, object] = {}
    if isinstance(node, dict):
        for key, value in node.items():
            out.update(_leaves(value, f"{prefix}.{key}" if prefix else key))
    elif not prefix.endswith(("_config_type", "_share_arch")):
        out[prefix] = node
    return out


_PARSE_ONLY = """
import json, sys
from facenas.space.hgnet import arch_with_id
arch = arch_with_id(open(sys.argv[1]).read(), "0" * 40, 18, 3)
torch_after_parse = "torch" in sys.modules
from archai.discrete_search.search_spaces.config import ArchParamTree  # the package, whole, on demand
from facenas.space import HgnetSearchSpace
archid = HgnetSearchSpace().load(sys.argv[1]).archid
print(json.dumps([torch_after_parse, archid, arch.spec.base_ch, ArchParamTree.__name__]))
"""


@pytest.mark.slow
def test_reading_an_arch_document_imports_no_torch_and_archai_still_loads_whole() -> None:
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", _PARSE_ONLY, str(SMALLEST_SNP)], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    torch_after_parse, archid, base_ch, tree = json.loads(done.stdout.strip().splitlines()[-1])
    expected = HgnetSearchSpace().load(SMALLEST_SNP)
    assert not torch_after_parse and tree == "ArchParamTree"
    assert archid == expected.archid and base_ch == expected.spec.base_ch


def test_specs_share_their_op_sequences_within_a_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    """A search holds thousands of specs: equal op sequences and blocks are one object, up to a bound."""
    from facenas.space import spec as spec_module

    space = HgnetSearchSpace(seed=5)
    first = space.random_sample()
    again = space.from_json(first.to_json())
    assert again.spec == first.spec
    assert again.spec.hourglasses[0].down[0] is first.spec.hourglasses[0].down[0]
    assert again.spec.post_upsample is first.spec.post_upsample
    monkeypatch.setattr(spec_module, "_INTERNED", {})
    monkeypatch.setattr(spec_module, "MAX_INTERNED", 3)
    space.random_sample()
    assert len(spec_module._INTERNED) == 3
