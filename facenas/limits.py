"""Every size and shape limit facenas enforces, and the checks that enforce them.

Hostile or broken input is refused at the door with :class:`~facenas.errors.InvalidInput` (gRPC
INVALID_ARGUMENT) before anything is written or expanded:

* **Records** (:func:`check_arch`, :func:`check_evaluation`, ...): every text field has a byte limit,
  every list an item limit, every number a range. The store's write methods call them, so a direct
  library user cannot write a record that a reader could not load back or a reply could not carry.
* **JSON** (:func:`parse_json_object`, :func:`check_json_object`): payloads are JSON *objects* of
  bounded nesting depth and size; integers longer than Python's int-string limit are refused.
* **YAML** (:func:`load_yaml`): aliases are counted while the document is parsed, before anything is
  expanded: a document whose alias-expanded size or nesting depth passes a bound is refused.
* **Replies** (:func:`fill_page`): list replies are pages that stop at :data:`REPLY_BUDGET_BYTES`,
  far below the gRPC message limit, so no reply can pass it.
* **Memory** (:func:`return_freed_memory`): the store and searcher hand buffers freed after large
  messages back to the system.

Error messages quote values through :func:`brief`, which never formats more than a few hundred
characters, whatever the value.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import dataclasses
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import yaml

from facenas.domain import ArchRecord, Candidate, EvalKey, Evaluation, Failure, IterationRecord, Outcome
from facenas.errors import InvalidInput

# --- transport ------------------------------------------------------------------------------------
#: The gRPC message limit of every facenas server and client (requests and replies).
MAX_MESSAGE_BYTES = 16 << 20
#: A list reply stops adding records once it holds this many bytes (then it carries a next page token).
REPLY_BUDGET_BYTES = 4 << 20
#: Records per page when a request asks for none (``page_size`` 0), and the most a request gets.
DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
#: Records a server reads from its store at once while it fills a page (bounds its memory per call).
FETCH_CHUNK = 16
#: Evaluation keys per GetEvaluations request and arch ids per ListEvaluations request.
MAX_REQUEST_KEYS = 100
#: Error messages sent back to a caller are cut to this many characters.
MAX_ERROR_MESSAGE_CHARS = 2000

# --- text fields ----------------------------------------------------------------------------------
#: Identifiers: search ids, arch ids, event kinds.
MAX_ID_BYTES = 128
#: Key strings: objective, budget and target of an evaluation, its unit and worker.
MAX_KEY_BYTES = 512
#: A search's display name.
MAX_NAME_BYTES = 1024
#: A search's error message; longer ones are truncated (it is written while a search fails).
MAX_ERROR_BYTES = 16 << 10
#: A search config (YAML or JSON text).
MAX_CONFIG_BYTES = 256 << 10
#: An architecture document (Archai's JSON) and an architecture file.
MAX_ARCH_DOCUMENT_BYTES = 256 << 10
#: Nesting depth of an architecture document (Archai's files nest about 10 levels).
MAX_ARCH_DEPTH = 32

# --- JSON payloads --------------------------------------------------------------------------------
#: An event payload, or an evaluation's details, as canonical JSON.
MAX_PAYLOAD_JSON_BYTES = 64 << 10
#: An iteration's algorithm state (RNG state, population...) as canonical JSON.
MAX_STATE_JSON_BYTES = 1 << 20
#: Nesting depth of every JSON payload (an object holding a list is depth 2).
MAX_JSON_DEPTH = 32
#: Items in a record's list field (candidate parents, an iteration's Pareto front).
MAX_LIST_ITEMS = 10_000

# --- YAML -----------------------------------------------------------------------------------------
#: Nodes of a YAML document with every alias expanded (Archai's search configs have about 100).
MAX_YAML_NODES = 100_000
#: Nesting depth of a YAML document, aliases expanded.
MAX_YAML_DEPTH = 32

# --- memory of the services that take untrusted messages (store, searcher) ----------------------------
#: Buffers at least this large are mapped and unmapped on their own (glibc's M_MMAP_THRESHOLD), so a
#: message at the size limit is handed back to the system when it is freed instead of staying cached.
HEAP_MMAP_THRESHOLD_BYTES = 256 << 10
#: Free memory at the top of the heap past this is trimmed (M_TRIM_THRESHOLD).
HEAP_TRIM_THRESHOLD_BYTES = 1 << 20
#: malloc arenas (M_ARENA_MAX): each of the server's threads would otherwise cache its own.
HEAP_ARENAS = 2

# --- numbers --------------------------------------------------------------------------------------
INT32 = (-(2**31), 2**31 - 1)
INT64 = (-(2**63), 2**63 - 1)

T = TypeVar("T")


# --- quoting --------------------------------------------------------------------------------------
def brief(value: Any, limit: int = 120) -> str:
    """A ``repr``-like rendering of ``value`` cut to about ``limit`` characters, in time bounded by
    ``limit`` (never formats a huge or alias-expanded value in full)."""
    parts: list[str] = []
    budget = [limit]

    def emit(text: str) -> bool:
        if budget[0] <= 0:
            return False
        parts.append(text[: budget[0]])
        budget[0] -= len(text)
        return budget[0] > 0

    def walk(node: Any, depth: int) -> bool:
        if depth > 8:
            return emit("...")
        if isinstance(node, Mapping):
            if not emit("{"):
                return False
            for i, (k, v) in enumerate(node.items()):
                if (i and not emit(", ")) or not walk(k, depth + 1) or not emit(": "):
                    return False
                if not walk(v, depth + 1):
                    return False
            return emit("}")
        if isinstance(node, list | tuple | set | frozenset):
            open_, close = ("[", "]") if isinstance(node, list) else ("(", ")")
            if not emit(open_):
                return False
            for i, item in enumerate(node):
                if (i and not emit(", ")) or not walk(item, depth + 1):
                    return False
            return emit(close)
        if isinstance(node, str):
            return emit(repr(node[: budget[0] + 2]))
        if isinstance(node, int) and not isinstance(node, bool) and node.bit_length() > 64:
            return emit(f"<integer of about {int(node.bit_length() * 0.30103) + 1} digits>")
        return emit(repr(node)[: budget[0] + 2])

    complete = walk(value, 0)
    text = "".join(parts)
    return text if complete and len(text) <= limit else text[:limit] + "..."


def clip(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, marked when cut."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text) - limit} more characters)"


# --- text -----------------------------------------------------------------------------------------
def utf8_size(text: str, field: str) -> int:
    """Bytes of ``text`` in UTF-8; InvalidInput for text that has no UTF-8 form (lone surrogates)."""
    try:
        return len(text.encode("utf-8"))
    except UnicodeEncodeError as err:
        raise InvalidInput(f"{field}: not valid Unicode text ({err.reason} at {err.start})") from None


def check_text(value: Any, field: str, max_bytes: int, *, required: bool = False) -> str:
    """A string of at most ``max_bytes`` UTF-8 bytes without NUL characters (PostgreSQL cannot store them)."""
    if not isinstance(value, str):
        raise InvalidInput(f"{field}: must be text, got {type(value).__name__}")
    if required and not value:
        raise InvalidInput(f"{field}: must not be empty")
    if len(value) > max_bytes or utf8_size(value, field) > max_bytes:
        raise _over(field, value, max_bytes)
    if "\x00" in value:
        raise InvalidInput(f"{field}: contains a NUL character")
    return value


def check_text_list(
    values: Iterable[Any], field: str, max_bytes: int, max_items: int = MAX_LIST_ITEMS
) -> None:
    """At most ``max_items`` strings, each checked with :func:`check_text`."""
    for i, value in enumerate(values):
        if i >= max_items:
            raise InvalidInput(f"{field}: more than {max_items} items")
        check_text(value, f"{field}[{i}]", max_bytes, required=True)


def check_int(value: Any, field: str, bounds: tuple[int, int]) -> int:
    """An integer (not a bool) within ``bounds``, inclusive."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidInput(f"{field}: must be an integer, got {type(value).__name__}")
    lo, hi = bounds
    if not lo <= value <= hi:
        raise InvalidInput(f"{field}: {brief(value, 40)} is outside [{lo}, {hi}]")
    return value


def check_number(value: Any, field: str) -> float:
    """A real number that fits a double (NaN and infinities allowed: they mean "not measured")."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise InvalidInput(f"{field}: must be a number, got {type(value).__name__}")
    try:
        return float(value)
    except OverflowError:
        raise InvalidInput(f"{field}: {brief(value, 40)} does not fit a double") from None


def _over(field: str, text: str, max_bytes: int, what: str = "") -> InvalidInput:
    return InvalidInput(f"{field}: {what}{len(text)} characters, over the limit of {max_bytes} bytes")


# --- JSON -----------------------------------------------------------------------------------------
def parse_json_object(
    text: str, field: str, max_bytes: int = MAX_PAYLOAD_JSON_BYTES, max_depth: int = MAX_JSON_DEPTH
) -> dict[str, Any]:
    """Parse JSON text that must be an object of at most ``max_bytes`` and ``max_depth`` levels.

    Empty text is ``{}``. The size is checked before parsing (which bounds the work); deep nesting,
    integers past Python's int-string limit and every non-object are refused.
    """
    if not text:
        return {}
    if len(text) > max_bytes or utf8_size(text, field) > max_bytes:
        raise _over(field, text, max_bytes, "JSON of ")
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise InvalidInput(
            f"{field}: not valid JSON ({err.msg} at line {err.lineno} column {err.colno})"
        ) from None
    except RecursionError:
        raise InvalidInput(f"{field}: JSON nested deeper than {max_depth} levels") from None
    except ValueError as err:  # e.g. an integer longer than the int-string conversion limit
        raise InvalidInput(f"{field}: unusable JSON value ({clip(str(err), 200)})") from None
    if not isinstance(value, dict):
        raise InvalidInput(f"{field}: must be a JSON object ({{...}}), got {_json_type(value)}")
    _walk_json(value, field, max_bytes, max_depth)
    return value


def check_json_object(
    value: Any, field: str, max_bytes: int = MAX_PAYLOAD_JSON_BYTES, max_depth: int = MAX_JSON_DEPTH
) -> str:
    """Check that ``value`` is a mapping of JSON data (string keys, bounded depth and size) and return
    its canonical JSON text (sorted keys, no spaces). The walk stops after ``max_bytes`` nodes, so
    shared or cyclic structures are refused in bounded time, never expanded."""
    if not isinstance(value, Mapping):
        raise InvalidInput(f"{field}: must be a JSON object (a mapping), got {_json_type(value)}")
    _walk_json(value, field, max_bytes, max_depth)
    try:
        text = json.dumps(value, sort_keys=True, separators=(",", ":"))
    except (TypeError, ValueError) as err:
        raise InvalidInput(f"{field}: not JSON-serialisable ({clip(str(err), 200)})") from None
    if len(text) > max_bytes or utf8_size(text, field) > max_bytes:
        raise _over(field, text, max_bytes, "JSON of ")
    return text


def _walk_json(value: Any, field: str, max_nodes: int, max_depth: int) -> None:
    """Depth, node count, key and value types of JSON data, without recursion; the nodes are counted as
    they are queued, so shared or cyclic structures stop after ``max_nodes`` (each node is at least one
    byte of JSON text)."""
    nodes = 1
    # (node, depth, parent path, key): paths are only formatted for an error message
    stack: list[tuple[Any, int, Any, Any]] = [(value, 1, None, field)]
    while stack:
        node, depth, parent, key = stack.pop()
        if isinstance(node, Mapping | list | tuple):
            if depth > max_depth:
                raise InvalidInput(f"{_path(parent, key)}: JSON nested deeper than {max_depth} levels")
            nodes += len(node)
            if nodes > max_nodes:
                raise InvalidInput(f"{field}: JSON is over the limit of {max_nodes} bytes")
            here = (parent, key)
            if isinstance(node, Mapping):
                for name, item in node.items():
                    if not isinstance(name, str):
                        raise InvalidInput(f"{_path(parent, key)}: key {brief(name, 40)} must be a string")
                    stack.append((item, depth + 1, here, name))
            else:
                stack.extend((item, depth + 1, here, i) for i, item in enumerate(node))
        elif isinstance(node, str):
            utf8_size(node, field)
        elif isinstance(node, int) and not isinstance(node, bool):
            if node.bit_length() > 14_000:  # about 4,300 digits: could not be read back
                raise InvalidInput(f"{_path(parent, key)}: integer {brief(node, 40)} is too long")
        elif node is not None and not isinstance(node, float | bool):
            raise InvalidInput(f"{_path(parent, key)}: {type(node).__name__} is not a JSON value")


def _path(parent: Any, key: Any) -> str:
    """``payload.a[1].b`` from the (parent, key) chain the walk keeps."""
    parts: list[str] = []
    while parent is not None:
        parts.append(f"[{key}]" if isinstance(key, int) else f".{clip(key, 40)}")
        parent, key = parent
    parts.append(str(key))
    return "".join(reversed(parts))


def _json_type(value: Any) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}
    for cls, name in names.items():
        if isinstance(value, cls):
            return name
    if isinstance(value, int | float):
        return "a number"
    return type(value).__name__


# --- YAML -----------------------------------------------------------------------------------------
def load_yaml(
    text: str, what: str = "YAML", max_nodes: int = MAX_YAML_NODES, max_depth: int = MAX_YAML_DEPTH
) -> Any:
    """``yaml.safe_load`` that refuses, before building anything, a document whose alias-expanded size
    passes ``max_nodes`` nodes or whose nesting (aliases expanded) passes ``max_depth`` levels; a
    recursive alias; and values Python cannot hold (an integer past the int-string limit, a bad date).

    The event stream is checked first (libyaml's parser when present: fast and not recursive), counting
    every alias as the size of what it names; only an accepted document is then constructed.
    """
    try:
        _check_yaml_events(yaml.parse(text, Loader=_Loader), what, max_nodes, max_depth)
        return yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as err:
        raise InvalidInput(f"{what}: not valid YAML ({clip(str(err), 300)})") from None
    except (ValueError, OverflowError) as err:  # an int past the int-string limit, a date out of range
        raise InvalidInput(f"{what}: unusable YAML value ({clip(str(err), 200)})") from None
    except RecursionError:  # unreachable after the depth check; kept as a last line of defence
        raise InvalidInput(f"{what}: YAML nested too deeply") from None


_Loader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@dataclass
class _Frame:
    """An open sequence or mapping: its anchor, nodes (aliases expanded) and height so far."""

    anchor: str | None
    nodes: int = 1
    height: int = 1


def _check_yaml_events(events: Iterable[yaml.Event], what: str, max_nodes: int, max_depth: int) -> None:
    """Refuse, from the parser's events alone, a document that would expand past the bounds: an alias
    counts as the nodes and height of what it names (scalars have height 0, collections 1 + children)."""
    anchors: dict[str, tuple[int, int]] = {}  # anchor -> (expanded nodes, height)
    open_: list[_Frame] = []
    total = 0

    def add(nodes: int, height: int, event: yaml.Event) -> None:
        nonlocal total
        if len(open_) + height > max_depth:
            raise InvalidInput(f"{what}: nested deeper than {max_depth} levels{_at(event)}")
        if open_:
            open_[-1].nodes += nodes
            open_[-1].height = max(open_[-1].height, height + 1)
            count = open_[-1].nodes
        else:
            total += nodes
            count = total
        if count > max_nodes:
            raise InvalidInput(
                f"{what}: more than {max_nodes} values once its aliases are expanded{_at(event)}; "
                "aliases (*name) that repeat large blocks are refused"
            )

    for event in events:
        if isinstance(event, yaml.AliasEvent):
            anchor = str(event.anchor)
            if any(f.anchor == anchor for f in open_):
                raise InvalidInput(
                    f"{what}: alias *{clip(anchor, 40)} is inside the block it names{_at(event)}"
                )
            if anchor in anchors:  # else: an undefined alias, which the loader reports
                add(*anchors[anchor], event)
        elif isinstance(event, yaml.ScalarEvent):
            if event.anchor is not None:
                anchors[str(event.anchor)] = (1, 0)
            add(1, 0, event)
        elif isinstance(event, yaml.SequenceStartEvent | yaml.MappingStartEvent):
            if len(open_) + 1 > max_depth:
                raise InvalidInput(f"{what}: nested deeper than {max_depth} levels{_at(event)}")
            open_.append(_Frame(None if event.anchor is None else str(event.anchor)))
        elif isinstance(event, yaml.SequenceEndEvent | yaml.MappingEndEvent):
            frame = open_.pop()
            if frame.anchor is not None:
                anchors[frame.anchor] = (frame.nodes, frame.height)
            add(frame.nodes, frame.height, event)


def _at(event: yaml.Event) -> str:
    mark = event.start_mark
    return f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""


# --- process memory --------------------------------------------------------------------------------
def return_freed_memory() -> bool:
    """Tune glibc's allocator so that memory freed after a large request goes back to the system (see
    the ``HEAP_*`` limits): without it, each server thread keeps the largest buffers it has seen and the
    process grows with every message near the size limit. False where glibc's ``mallopt`` is missing."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_threshold, m_arena_max = -1, -3, -8
    done = [
        mallopt(m_mmap_threshold, HEAP_MMAP_THRESHOLD_BYTES),
        mallopt(m_trim_threshold, HEAP_TRIM_THRESHOLD_BYTES),
        mallopt(m_arena_max, HEAP_ARENAS),
    ]
    return all(r == 1 for r in done)


# --- records --------------------------------------------------------------------------------------
def check_search(search_id: str, name: str, config: str) -> None:
    """A search's id, name and config text."""
    check_text(search_id, "search_id", MAX_ID_BYTES, required=True)
    check_text(name, "name", MAX_NAME_BYTES)
    check_text(config, "config", MAX_CONFIG_BYTES)


def clip_error(error: str) -> str:
    """A search's error message, cut to :data:`MAX_ERROR_BYTES` and without NUL characters (it is
    written while a search fails, so it is shortened rather than refused)."""
    if not isinstance(error, str):
        raise InvalidInput(f"error: must be text, got {type(error).__name__}")
    data = error.replace("\x00", "\ufffd").encode("utf-8", "replace")
    if len(data) <= MAX_ERROR_BYTES:
        return data.decode("utf-8")
    return data[: MAX_ERROR_BYTES - 64].decode("utf-8", "ignore") + f"... (cut at {MAX_ERROR_BYTES} bytes)"


def check_arch(arch: ArchRecord) -> None:
    """An architecture record: its id, a JSON-object document and a parameter count."""
    check_text(arch.archid, "archid", MAX_ID_BYTES, required=True)
    parse_json_object(arch.document, "document", MAX_ARCH_DOCUMENT_BYTES, MAX_ARCH_DEPTH)
    check_int(arch.params, "params", (0, INT64[1]))


def check_candidate(candidate: Candidate) -> None:
    """A candidate: its search, arch id, iteration, parents, and (when given) its arch document,
    parameter count and model fingerprint."""
    check_text(candidate.search_id, "search_id", MAX_ID_BYTES, required=True)
    check_text(candidate.archid, "archid", MAX_ID_BYTES, required=True)
    check_int(candidate.iteration, "iteration", INT32)
    check_text_list(candidate.parents, "parents", MAX_ID_BYTES)
    check_number(candidate.proposed_at, "proposed_at")
    if candidate.document:
        parse_json_object(candidate.document, "document", MAX_ARCH_DOCUMENT_BYTES, MAX_ARCH_DEPTH)
    check_int(candidate.params, "params", (0, INT64[1]))
    check_text(candidate.model, "model", MAX_ID_BYTES)


def check_targets(search_id: str, targets: Mapping[str, str]) -> None:
    """A search's targets: objective -> target key (a handful, each a short key)."""
    check_text(search_id, "search_id", MAX_ID_BYTES, required=True)
    if len(targets) > 16:
        raise InvalidInput(f"targets: at most 16 objectives, got {len(targets)}")
    for objective, target in targets.items():
        check_text(objective, "targets.objective", MAX_KEY_BYTES, required=True)
        check_text(target, "targets.target", MAX_KEY_BYTES, required=True)


def check_failure(failure: Failure) -> Failure:
    """A failed candidate; its reason is cut (it is written while the candidate fails), not refused."""
    check_text(failure.search_id, "search_id", MAX_ID_BYTES, required=True)
    check_text(failure.archid, "archid", MAX_ID_BYTES, required=True)
    check_text(failure.objective, "objective", MAX_KEY_BYTES, required=True)
    check_text(failure.kind, "kind", MAX_KEY_BYTES)
    check_number(failure.created_at, "created_at")
    return dataclasses.replace(failure, reason=clip_error(failure.reason))


def check_ids(ids: Sequence[str], what: str) -> list[str]:
    """A request's list of ids (archids, search ids): at most ``MAX_REQUEST_KEYS``, each a short id;
    returned without repeats, in order."""
    unique = list(dict.fromkeys(ids))
    if len(unique) > MAX_REQUEST_KEYS:
        raise InvalidInput(f"{what}: {len(unique)} is more than {MAX_REQUEST_KEYS} per request")
    for one in unique:
        check_text(one, what, MAX_ID_BYTES, required=True)
    return unique


def check_outcomes(search_id: str, outcomes: Mapping[str, str]) -> dict[str, str]:
    """A batch of candidate outcomes (archid -> one of ``complete``, ``infeasible``, ``failed``)."""
    check_text(search_id, "search_id", MAX_ID_BYTES, required=True)
    check_ids(list(outcomes), "outcomes.archid")
    known = [o.value for o in Outcome]
    for archid, outcome in outcomes.items():
        if outcome not in known:
            raise InvalidInput(f"outcome of {archid!r}: {brief(outcome)} is not one of {', '.join(known)}")
    return {a: str(o) for a, o in outcomes.items()}


def check_eval_key(key: EvalKey) -> None:
    """An evaluation key (archid, objective, budget, target, model)."""
    check_text(key.archid, "key.archid", MAX_ID_BYTES, required=True)
    check_text(key.objective, "key.objective", MAX_KEY_BYTES, required=True)
    check_text(key.budget, "key.budget", MAX_KEY_BYTES)
    check_text(key.target, "key.target", MAX_KEY_BYTES)
    check_text(key.model, "key.model", MAX_ID_BYTES)


def check_evaluation(evaluation: Evaluation) -> str:
    """An evaluation to store; returns its details as canonical JSON."""
    check_eval_key(evaluation.key)
    check_number(evaluation.value, "value")
    check_text(evaluation.unit, "unit", MAX_KEY_BYTES)
    check_text(evaluation.worker, "worker", MAX_KEY_BYTES)
    check_number(evaluation.seconds, "seconds")
    check_number(evaluation.created_at, "created_at")
    return check_json_object(evaluation.details, "details", MAX_PAYLOAD_JSON_BYTES)


def check_iteration(record: IterationRecord) -> str:
    """An iteration record; returns its state as canonical JSON."""
    check_text(record.search_id, "search_id", MAX_ID_BYTES, required=True)
    check_int(record.iteration, "iteration", INT32)
    check_text_list(record.pareto, "pareto", MAX_ID_BYTES)
    check_number(record.hypervolume, "hypervolume")
    check_number(record.walltime_s, "walltime_s")
    check_number(record.created_at, "created_at")
    return check_json_object(record.state, "state", MAX_STATE_JSON_BYTES)


def check_event(search_id: str, kind: str, payload: Mapping[str, Any]) -> str:
    """An event to append; returns its payload as canonical JSON."""
    check_text(search_id, "search_id", MAX_ID_BYTES, required=True)
    check_text(kind, "kind", MAX_ID_BYTES, required=True)
    return check_json_object(payload, "payload", MAX_PAYLOAD_JSON_BYTES)


# --- pages ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of a list: its items and the token of the next page ("" when this is the last)."""

    items: list[T] = field(default_factory=list)
    next_page_token: str = ""


def page_size(requested: int) -> int:
    """The page size for a request: 0 means :data:`DEFAULT_PAGE_SIZE`, more than :data:`MAX_PAGE_SIZE`
    is cut to it, a negative size is refused."""
    if requested < 0:
        raise InvalidInput(f"page_size: {requested} must not be negative")
    return min(requested or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


def page_offset(token: str) -> int:
    """The position a page token names ("" is the start); InvalidInput for a token no server issued."""
    if not token:
        return 0
    if len(token) > 18 or not token.isascii() or not token.isdigit():
        raise InvalidInput(f"page_token: {brief(token, 40)} is not a page token this service issued")
    return int(token)


def page_token(offset: int) -> str:
    """The token of the page that starts at ``offset``."""
    return str(offset)


def fill_page(
    fetch: Callable[[int, int], Page[T]],
    size_of: Callable[[T], int],
    requested: int,
    token: str,
    budget: int = REPLY_BUDGET_BYTES,
) -> Page[T]:
    """A page of up to ``requested`` items (see :func:`page_size`) from ``token``'s position, cut where
    the items' ``size_of`` passes ``budget`` (a page always holds at least one item).

    ``fetch(offset, limit)`` reads a page of at most ``limit`` items from a position, and is asked for
    at most :data:`FETCH_CHUNK` at a time, so a call holds a bounded number of records whatever the page
    size. Its pages may be short (a store's reply cut at its own budget): only an empty next token ends
    the list.
    """
    size = page_size(requested)
    offset = page_offset(token)
    items: list[T] = []
    used = 0
    while len(items) < size:
        chunk = fetch(offset + len(items), min(FETCH_CHUNK, size - len(items)))
        for item in chunk.items:
            cost = size_of(item)
            if items and used + cost > budget:
                return Page(items, page_token(offset + len(items)))
            items.append(item)
            used += cost
        if not chunk.next_page_token or not chunk.items:
            return Page(items, "")
    return Page(items, page_token(offset + len(items)))


def all_pages(read: Callable[[str], Page[T]]) -> list[T]:
    """Every item of a paged list: ``read(token)`` is called until a page has no next token."""
    items: list[T] = []
    token = ""
    seen: set[str] = set()
    while True:
        page = read(token)
        items.extend(page.items)
        if not page.next_page_token:
            return items
        if page.next_page_token in seen:  # a server that repeats a token would loop forever
            raise InvalidInput(f"page_token {page.next_page_token!r} was returned twice")
        seen.add(page.next_page_token)
        token = page.next_page_token
