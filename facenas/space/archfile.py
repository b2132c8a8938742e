"""Reading and writing Archai's architecture files (``ArchConfig.to_file`` JSON) safely.

A document is checked before any of it reaches Archai's classes: size, JSON syntax, nesting depth,
non-finite numbers and the ``config_list`` envelope (``_config_type``, ``_share_arch``,
``_repeat_times``, ``_configs``). Failures raise :class:`ArchSpecError` naming the bad field.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from facenas.errors import ArchSpecError, InvalidInput
from facenas.limits import MAX_ARCH_DEPTH, MAX_ARCH_DOCUMENT_BYTES, brief, load_yaml

MAX_FILE_BYTES = MAX_ARCH_DOCUMENT_BYTES
MAX_DEPTH = MAX_ARCH_DEPTH
MAX_REPEAT = 64
_LIST_KEYS = {"_config_type", "_share_arch", "_repeat_times", "_configs"}


def load_arch_document(path: str | Path) -> dict[str, Any]:
    """Read an arch file (``.json``, or ``.yaml``/``.yml``) and validate its envelope."""
    path = Path(path)
    try:
        with path.open("rb") as fh:
            raw = fh.read(MAX_FILE_BYTES + 1)
    except OSError as err:
        raise ArchSpecError("", f"cannot read {path}: {err.strerror or err}") from err
    if len(raw) > MAX_FILE_BYTES:
        raise ArchSpecError("", f"{path} is larger than {MAX_FILE_BYTES} bytes; not an architecture file")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ArchSpecError("", f"{path} is not UTF-8 text") from err
    if path.suffix.lower() in {".yaml", ".yml"}:
        return parse_arch_document(_parse_yaml(text))
    return parse_arch_document(text)


def parse_arch_document(source: str | Mapping[str, Any]) -> dict[str, Any]:
    """Parse JSON text (or take a mapping) and validate the ``config_list`` envelope."""
    doc: Any = _parse_json(source) if isinstance(source, str) else source
    if not isinstance(doc, Mapping):
        raise ArchSpecError("", f"top level must be a JSON object, got {_type_name(doc)}")
    _check_node(doc, "", 0)
    if isinstance(source, str):  # json.loads made plain dicts already, and nobody else holds them
        return dict(doc)
    plain: dict[str, Any] = _plain(doc)
    return plain


def dump_arch_json(doc: Mapping[str, Any]) -> str:
    """Serialise a document the way Archai's ``ArchConfig.to_file`` does (indent 4)."""
    return json.dumps(doc, indent=4)


def _parse_json(text: str) -> Any:
    if len(text) > MAX_FILE_BYTES:
        raise ArchSpecError("", f"document is larger than {MAX_FILE_BYTES} bytes")

    def reject_constant(name: str) -> None:
        raise ArchSpecError("", f"non-finite number {name} is not allowed")

    try:
        return json.loads(text, parse_constant=reject_constant)
    except json.JSONDecodeError as err:
        raise ArchSpecError("", f"not valid JSON: {err.msg} (line {err.lineno}, column {err.colno})") from err
    except RecursionError as err:
        raise ArchSpecError("", "document is nested too deeply") from err
    except ValueError as err:  # e.g. an integer past Python's int-string conversion limit
        raise ArchSpecError("", f"unusable number: {str(err)[:200]}") from err


def _parse_yaml(text: str) -> Any:
    try:
        return load_yaml(text, "arch YAML", max_depth=MAX_DEPTH + 1)
    except InvalidInput as err:
        raise ArchSpecError("", str(err)) from err


def _check_node(node: Mapping[str, Any], path: str, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise ArchSpecError(path, f"nested deeper than {MAX_DEPTH} levels")
    if "_config_type" in node:
        _check_config_list(node, path, depth)
        return
    for key, value in node.items():
        if not isinstance(key, str):
            raise ArchSpecError(path, f"key {brief(key)} must be a string")
        child = f"{path}.{key}" if path else key
        _check_value(value, child, depth)


def _check_value(value: Any, path: str, depth: int) -> None:
    if isinstance(value, Mapping):
        _check_node(value, path, depth + 1)
    elif isinstance(value, float) and not math.isfinite(value):
        raise ArchSpecError(path, "non-finite number")
    elif value is not None and not isinstance(value, str | int | float | bool):
        raise ArchSpecError(path, f"unexpected {_type_name(value)}")


def _check_config_list(node: Mapping[str, Any], path: str, depth: int) -> None:
    prefix = f"{path}." if path else ""
    if node.get("_config_type") != "config_list":
        raise ArchSpecError(
            prefix + "_config_type", f"must be 'config_list', got {brief(node['_config_type'])}"
        )
    extra = sorted(str(k) for k in node if k not in _LIST_KEYS)
    if extra:
        raise ArchSpecError(path, f"unexpected keys in a config_list: {extra}")
    missing = sorted(_LIST_KEYS - set(node))
    if missing:
        raise ArchSpecError(path, f"config_list is missing {missing}")
    if not isinstance(node["_share_arch"], bool):
        raise ArchSpecError(
            prefix + "_share_arch", f"must be true or false, got {brief(node['_share_arch'])}"
        )
    repeat = node["_repeat_times"]
    if not isinstance(repeat, int) or isinstance(repeat, bool):
        raise ArchSpecError(prefix + "_repeat_times", f"must be an integer, got {_type_name(repeat)}")
    if not 0 <= repeat <= MAX_REPEAT:
        raise ArchSpecError(prefix + "_repeat_times", f"{repeat} is outside [0, {MAX_REPEAT}]")
    configs = node["_configs"]
    if not isinstance(configs, Mapping):
        raise ArchSpecError(prefix + "_configs", f"must be an object, got {_type_name(configs)}")
    expected = [str(i) for i in range(len(configs))]
    if list(configs) != expected:
        raise ArchSpecError(prefix + "_configs", f"keys must be '0'..'{len(configs) - 1}' in order")
    if len(configs) > MAX_REPEAT:
        raise ArchSpecError(prefix + "_configs", f"more than {MAX_REPEAT} slots")
    if repeat > len(configs):
        raise ArchSpecError(
            prefix + "_repeat_times", f"{repeat} exceeds the {len(configs)} slots in _configs"
        )
    for key, slot in configs.items():
        slot_path = f"{prefix}_configs.{key}"
        if not isinstance(slot, Mapping):
            raise ArchSpecError(slot_path, f"must be an object, got {_type_name(slot)}")
        _check_node(slot, slot_path, depth + 1)


def _plain(node: Any) -> Any:
    """Deep copy into plain dicts (keeps key order)."""
    if isinstance(node, Mapping):
        return {key: _plain(value) for key, value in node.items()}
    return node


def _type_name(value: Any) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}
    for cls, name in names.items():
        if isinstance(value, cls):
            return name
    if isinstance(value, int | float):
        return "number"
    return type(value).__name__
