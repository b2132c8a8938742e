"""Hostile input is refused at the door: the limits, JSON, YAML and page helpers of ``facenas.limits``, and
the parsers that use them (search configs, search-space files, architecture files)."""

from __future__ import annotations

import time
import tracemalloc
from pathlib import Path
from typing import Any

import pytest

from facenas import limits
from facenas.errors import ArchSpecError, ConfigError, InvalidInput
from facenas.limits import Page, fill_page, load_yaml, parse_json_object
from facenas.search.config import parse_search_config
from facenas.space.archfile import load_arch_document, parse_arch_document
from facenas.space.params import default_config_text, read_yaml


def billion_laughs(levels: int = 9) -> str:
    """The classic: 9 aliases of 9 aliases of ... (10**9 strings once expanded, about 550 bytes)."""
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    names = "abcdefghijklmnopqrstuvwxyz"
    for level in range(1, levels):
        prev, name = names[level - 1], names[level]
        lines.append(f"{name}: &{name} [" + ",".join([f"*{prev}"] * 9) + "]")
    return "\n".join(lines) + "\n"


def bounded(fn: Any, seconds: float = 2.0, peak_bytes: int = 64 << 20) -> Exception:
    """Run ``fn`` (which must raise) and check it gave up quickly with little memory."""
    tracemalloc.start()
    began = time.monotonic()
    try:
        fn()
    except Exception as err:  # returned for the caller to check its type
        raised = err
    else:
        raise AssertionError("no error raised")
    finally:
        elapsed = time.monotonic() - began
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert elapsed < seconds, f"took {elapsed:.1f} s"
    assert peak < peak_bytes, f"peak {peak / 1e6:.0f} MB"
    return raised


# --- YAML -----------------------------------------------------------------------------------------


def test_billion_laughs_is_refused_before_expansion() -> None:
    text = billion_laughs(9)
    assert len(text) < 600
    err = bounded(lambda: load_yaml(text, "config"))
    assert isinstance(err, InvalidInput)
    assert "aliases" in str(err) and len(str(err)) < 400


def test_billion_laughs_search_config_is_a_short_config_error() -> None:
    text = default_config_text("cpu") + billion_laughs(9)
    err = bounded(lambda: parse_search_config(text))
    assert isinstance(err, ConfigError)
    assert len(str(err)) < 500


@pytest.mark.parametrize("levels", [3, 4])
def test_small_alias_use_is_fine(levels: int) -> None:
    data = load_yaml(billion_laughs(levels))
    assert len(data["a"]) == 9


def test_alias_expansion_bound_is_exact() -> None:
    # 1 sequence + 10 scalars = 11 nodes per block; the bound counts every node once its alias is expanded
    block = "a: &a [" + ",".join(["x"] * 10) + "]\nb: [" + ",".join(["*a"] * 20) + "]\n"
    assert load_yaml(block, max_nodes=1000)["b"][19] == ["x"] * 10
    with pytest.raises(InvalidInput, match="more than 100 values"):
        load_yaml(block, max_nodes=100)


@pytest.mark.parametrize(
    "text",
    [
        "[" * 5000 + "]" * 5000,  # flow
        "".join(" " * i + "- \n" for i in range(0, 400, 2)) + " " * 400 + "- 1\n",  # block
        "a: &a " + "[" * 20 + "1" + "]" * 20 + "\nb: " + "[" * 20 + "*a" + "]" * 20 + "\n",  # via an alias
    ],
)
def test_deep_yaml_is_refused(text: str) -> None:
    err = bounded(lambda: load_yaml(text, "config"))
    assert isinstance(err, InvalidInput)
    assert "nest" in str(err)


def test_recursive_alias_and_unusable_values_are_refused() -> None:
    with pytest.raises(InvalidInput, match="inside the block it names"):
        load_yaml("a: &a [1, *a]")
    with pytest.raises(InvalidInput, match="unusable YAML value"):
        load_yaml("seed: " + "7" * 5000)
    with pytest.raises(InvalidInput, match="unusable YAML value"):
        load_yaml("when: 2001-13-45")
    with pytest.raises(InvalidInput, match="not valid YAML"):
        load_yaml("a: b\x00c")
    with pytest.raises(InvalidInput, match="not valid YAML"):
        load_yaml("!!python/object:os.system {}")


def test_search_config_refuses_hostile_values_with_short_messages() -> None:
    base = default_config_text("cpu")
    cases = {
        "op_subset: [[conv3x3], conv5x5]": "op_subset",  # unhashable op names
        "op_subset: 5": "op_subset",
        "ch_expansion_factors: 5": "ch_expansion_factors",
        "op_subset: [" + ",".join(["conv3x3"] * 5000) + "]": "op_subset",
    }
    for line, needle in cases.items():
        text = base.replace("op_subset: ['conv3x3', 'conv5x5', 'conv7x7']", line)
        assert text != base
        with pytest.raises(ConfigError, match=needle) as info:
            parse_search_config(text)
        assert len(str(info.value)) < 1000, str(info.value)[:200]
    seed = "num_random_mix: 5"
    huge = base.replace(seed, f"{seed}\n      seed: " + "9" * 4000)  # under the int-string limit, past int64
    with pytest.raises(ConfigError, match="must be an integer") as info:
        parse_search_config(huge)
    assert len(str(info.value)) < 500
    with pytest.raises(ConfigError, match="int"):
        parse_search_config(base.replace(seed, f"{seed}\n      seed: " + "9" * 5000))


def test_search_config_size_limit() -> None:
    base = default_config_text("cpu")
    padded = base + "#" * (limits.MAX_CONFIG_BYTES - len(base) - 1) + "\n"
    assert len(padded) == limits.MAX_CONFIG_BYTES
    assert parse_search_config(padded).algorithm == "evolution_pareto"
    with pytest.raises(ConfigError, match="larger than"):
        parse_search_config(padded + "#")


def test_yaml_files_use_the_bounded_loader(tmp_path: Path) -> None:
    path = tmp_path / "space.yaml"
    path.write_text(billion_laughs(9))
    err = bounded(lambda: read_yaml(path))
    assert isinstance(err, ConfigError)
    arch = tmp_path / "arch.yaml"
    arch.write_text(billion_laughs(9))
    assert isinstance(bounded(lambda: load_arch_document(arch)), ArchSpecError)


# --- JSON -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("[1]", "must be a JSON object"),
        ('"x"', "must be a JSON object"),
        ("null", "must be a JSON object"),
        ("1", "must be a JSON object"),
        ("{", "not valid JSON"),
        ('{"a": ' * 40 + "1" + "}" * 40, "nested deeper than 32"),
        ("[" * 60_000 + "]" * 60_000, "over the limit|nested"),
        ('{"a": ' * 8_000 + "1" + "}" * 8_000, "nested"),
        ('{"n": ' + "1" * 5000 + "}", "unusable JSON value"),
        ('{"s": "' + "x" * (70 << 10) + '"}', "over the limit"),
    ],
)
def test_bad_json_payloads_are_refused(text: str, needle: str) -> None:
    with pytest.raises(InvalidInput, match=needle) as info:
        parse_json_object(text, "payload_json")
    assert str(info.value).startswith("payload_json")
    assert len(str(info.value)) < 2000


def test_json_objects_are_accepted() -> None:
    assert parse_json_object("", "f") == {}
    assert parse_json_object('{"a": [1, {"b": null}], "c": NaN}', "f")["a"] == [1, {"b": None}]
    assert limits.check_json_object({"b": 1, "a": (1, 2)}, "f") == '{"a":[1,2],"b":1}'


def test_check_json_object_refuses_bad_data_in_bounded_time() -> None:
    shared: list[Any] = [1]
    for _ in range(60):
        shared = [shared, shared]  # 2**60 nodes if expanded
    with pytest.raises(InvalidInput, match="nested"):
        limits.check_json_object({"a": shared}, "payload")
    wide: list[Any] = [list(range(100))] * 100_000  # shared, shallow: 10**7 nodes if expanded
    assert isinstance(bounded(lambda: limits.check_json_object({"a": wide}, "payload")), InvalidInput)
    cyclic: dict[str, Any] = {}
    cyclic["self"] = cyclic
    with pytest.raises(InvalidInput):
        limits.check_json_object(cyclic, "payload")
    with pytest.raises(InvalidInput, match="must be a JSON object"):
        limits.check_json_object([1], "payload")  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="must be a string"):
        limits.check_json_object({1: 2}, "payload")  # type: ignore[dict-item]
    with pytest.raises(InvalidInput, match="is not a JSON value"):
        limits.check_json_object({"a": object()}, "payload")
    with pytest.raises(InvalidInput, match="too long"):
        limits.check_json_object({"a": 10**5000}, "payload")


def test_huge_ints_in_arch_documents_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ArchSpecError, match="unusable number"):
        parse_arch_document('{"stem_stride": ' + "2" * 5000 + "}")
    path = tmp_path / "arch.json"
    path.write_text('{"stem_stride": ' + "2" * 5000 + "}")
    with pytest.raises(ArchSpecError):
        load_arch_document(path)


# --- text, numbers, quoting -----------------------------------------------------------------------


def test_text_checks() -> None:
    assert limits.check_text("abc", "f", 3) == "abc"
    with pytest.raises(InvalidInput, match="over the limit of 3 bytes"):
        limits.check_text("ééé", "f", 3)  # 6 bytes of UTF-8
    with pytest.raises(InvalidInput, match="NUL"):
        limits.check_text("a\x00b", "f", 10)
    with pytest.raises(InvalidInput, match="not valid Unicode"):
        limits.check_text("\ud800", "f", 10)
    with pytest.raises(InvalidInput, match="must not be empty"):
        limits.check_text("", "f", 10, required=True)
    with pytest.raises(InvalidInput, match="more than 2 items"):
        limits.check_text_list(["a", "b", "c"], "parents", 10, max_items=2)
    with pytest.raises(InvalidInput, match="outside"):
        limits.check_int(2**63, "params", limits.INT64)
    with pytest.raises(InvalidInput, match="does not fit a double"):
        limits.check_number(10**400, "value")
    assert len(limits.clip_error("x" * (1 << 20)).encode()) <= limits.MAX_ERROR_BYTES
    assert "\x00" not in limits.clip_error("a\x00b")


def test_brief_never_formats_a_huge_value() -> None:
    shared: list[Any] = ["lol"]
    for _ in range(30):
        shared = [shared] * 9
    began = time.monotonic()
    for value in (shared, "x" * (10 << 20), list(range(10**6)), {i: i for i in range(10**5)}, 10**4000):
        assert len(limits.brief(value)) <= 130
    assert time.monotonic() - began < 1.0
    assert limits.brief("abc") == "'abc'"
    assert limits.brief([1, "a"]) == "[1, 'a']"


# --- pages ----------------------------------------------------------------------------------------


def test_fill_page_cuts_at_the_byte_budget_and_resumes_from_its_token() -> None:
    items = [f"item{i:03d}" for i in range(250)]
    calls: list[tuple[int, int]] = []

    def fetch(offset: int, n: int) -> Page[str]:
        calls.append((offset, n))
        assert n <= limits.FETCH_CHUNK
        n = min(n, 5)  # a source whose own pages are short (a store cutting its replies)
        return Page(items[offset : offset + n], str(offset + n) if offset + n < len(items) else "")

    page = fill_page(fetch, lambda s: 10, 0, "")  # default page size
    assert page.items == items[:100] and page.next_page_token == "100"
    page = fill_page(fetch, lambda s: 10, 1000, "100", budget=95)  # 9 items fit 95 bytes
    assert page.items == items[100:109] and page.next_page_token == "109"
    page = fill_page(fetch, lambda s: 1000, 5, "109", budget=10)  # one item always fits
    assert page.items == items[109:110]
    page = fill_page(fetch, len, 1000, "200")
    assert page.items == items[200:] and page.next_page_token == ""
    pages = iter([Page(["a"], "1"), Page(["b"], "2"), Page(["c"], "")])
    assert limits.all_pages(lambda token: next(pages)) == ["a", "b", "c"]


@pytest.mark.parametrize("token", ["x", "-1", "1" * 19, "１２", "1.5"])
def test_bad_page_tokens_and_sizes_are_refused(token: str) -> None:
    with pytest.raises(InvalidInput, match="page_token"):
        limits.page_offset(token)
    with pytest.raises(InvalidInput, match="page_size"):
        limits.page_size(-1)
    assert limits.page_size(10**6) == limits.MAX_PAGE_SIZE


def test_a_repeated_page_token_stops_a_reader() -> None:
    with pytest.raises(InvalidInput, match="returned twice"):
        limits.all_pages(lambda token: Page(["a"], "1"))
