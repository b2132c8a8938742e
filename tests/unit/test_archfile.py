"""Malformed and hostile architecture files give typed errors naming the bad field, never a crash."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from facenas.errors import ArchSpecError, InvalidInput
from facenas.space import HgnetSearchSpace
from tests.conftest import SMALLEST_SNP

Doc = dict[str, Any]
HG0 = ("hourglasses", "_configs", "0")


@pytest.fixture(scope="module")
def space() -> HgnetSearchSpace:
    return HgnetSearchSpace()


@pytest.fixture
def doc() -> Doc:
    loaded: Doc = json.loads(SMALLEST_SNP.read_text())
    return loaded


def _at(doc: Doc, *keys: str) -> Any:
    node: Any = doc
    for key in keys:
        node = node[key]
    return node


def _down(doc: Doc, block: int) -> Doc:
    result: Doc = _at(doc, *HG0, "downsample_blocks", "_configs", str(block))
    return result


CASES: list[tuple[str, Callable[[Doc], None], str]] = [
    (
        "unknown op",
        lambda d: _down(d, 1)["layers"]["_configs"]["0"].update(op="conv9x9"),
        "hourglasses._configs.0.downsample_blocks._configs.1.layers._configs.0.op",
    ),
    ("op of wrong type", lambda d: _down(d, 0)["layers"]["_configs"]["0"].update(op=3), "_configs.0.op"),
    ("base_ch string", lambda d: d.update(base_ch="16"), "base_ch"),
    ("base_ch bool", lambda d: d.update(base_ch=True), "base_ch"),
    ("million channels", lambda d: d.update(base_ch=10**6), "base_ch"),
    (
        "channels explode through factors",
        lambda d: [_down(d, i).update(ch_expansion_factor=16) for i in range(5)],
        "ch_expansion_factor",
    ),
    (
        "negative factor",
        lambda d: _down(d, 2).update(ch_expansion_factor=-1.0),
        "_configs.2.ch_expansion_factor",
    ),
    (
        "absurd repeat",
        lambda d: _at(d, "hourglasses").update(_repeat_times=10**9),
        "hourglasses._repeat_times",
    ),
    (
        "repeat beyond slots",
        lambda d: _at(d, "post_upsample_layers").update(_repeat_times=5),
        "_repeat_times",
    ),
    ("repeat float", lambda d: _at(d, "post_upsample_layers").update(_repeat_times=1.5), "_repeat_times"),
    ("missing field", lambda d: d.pop("stem_stride"), "stem_stride"),
    ("unknown field", lambda d: d.update(extra_layers=1), "extra_layers"),
    ("stride zero", lambda d: d.update(stem_stride=0), "stem_stride"),
    (
        "wrong config type",
        lambda d: _at(d, "post_upsample_layers").update(_config_type="config_dict"),
        "post_upsample_layers._config_type",
    ),
    ("configs not object", lambda d: _at(d, "post_upsample_layers").update(_configs=[1, 2]), "_configs"),
    ("list missing key", lambda d: _at(d, "post_upsample_layers").pop("_configs"), "post_upsample_layers"),
    (
        "skip count mismatch",
        lambda d: _at(d, *HG0, "skip_blocks").update(_repeat_times=2),
        "skip_blocks._repeat_times",
    ),
    (
        "upsample with no layers",
        lambda d: _at(d, *HG0, "upsample_blocks", "_configs", "0", "layers").update(_repeat_times=0),
        "upsample_blocks._configs.0.layers._repeat_times",
    ),
    ("hourglass not object", lambda d: _at(d, "hourglasses", "_configs").update({"0": "x"}), "_configs.0"),
]


@pytest.mark.parametrize(("mutate", "field"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_documents_name_the_field(space: HgnetSearchSpace, doc: Doc, mutate: Any, field: str) -> None:
    bad = copy.deepcopy(doc)
    mutate(bad)
    with pytest.raises(ArchSpecError) as info:
        space.from_document(bad)
    assert field in info.value.field, info.value
    assert isinstance(info.value, InvalidInput)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("", "not valid JSON"),
        ("[1, 2]", "top level must be a JSON object"),
        ('{"base_ch": NaN}', "non-finite"),
        ('{"a": ' * 40_000, "nested too deeply"),  # deep, yet under the size limit
        ('{"a": ' * 50 + "1" + "}" * 50, "nested deeper"),
        ('{"stem_stride": 2', "not valid JSON"),
    ],
)
def test_bad_json_text(space: HgnetSearchSpace, text: str, needle: str) -> None:
    with pytest.raises(ArchSpecError, match=needle):
        space.from_json(text)


def test_bad_files(space: HgnetSearchSpace, tmp_path: Path) -> None:
    with pytest.raises(ArchSpecError, match="cannot read"):
        space.load(tmp_path / "missing.json")
    big = tmp_path / "big.json"
    big.write_text(" " * (2 << 20))
    with pytest.raises(ArchSpecError, match="larger than"):
        space.load(big)
    binary = tmp_path / "binary.json"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ArchSpecError, match="UTF-8"):
        space.load(binary)


def test_yaml_arch_file_loads(space: HgnetSearchSpace, doc: Doc, tmp_path: Path) -> None:
    import yaml

    path = tmp_path / "arch.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    assert space.load(path).archid == SMALLEST_SNP.stem


def test_out_of_space_value_is_reported_by_check_in_space(space: HgnetSearchSpace, doc: Doc) -> None:
    doc["base_ch"] = 20  # builds fine, but 20 is not one of the space's choices
    arch = space.from_document(doc)
    with pytest.raises(ArchSpecError) as info:
        space.check_in_space(arch)
    assert info.value.field == "base_ch"


def test_model_with_huge_total_size_is_refused_before_allocation(space: HgnetSearchSpace, doc: Doc) -> None:
    doc["base_ch"] = 1024
    for i in range(5):
        _down(doc, i)["ch_expansion_factor"] = 2.0 if i < 2 else 1.0
        layers = _down(doc, i)["layers"]
        layers["_repeat_times"] = 4
        for slot in layers["_configs"].values():
            slot["op"] = "conv7x7"
    with pytest.raises(ArchSpecError, match="parameters"):
        space.from_document(doc)
