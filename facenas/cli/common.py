"""Helpers shared by CLI commands: option parsing, error reporting, JSON output."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import typer
from rich.console import Console

from facenas.errors import ConfigError, FacenasError, Unavailable
from facenas.space.params import SearchSpaceParams, load_search_space_params

P = ParamSpec("P")
R = TypeVar("R")

err_console = Console(stderr=True)
console = Console()

#: the searcher's port when ``--searcher`` / ``FACENAS_SEARCHER`` names none
SEARCHER_PORT = 50051

_SIZE = re.compile(r"^\s*(\d+)\s*(?:[xX,]\s*(\d+))?\s*$")


def parse_img_size(text: str | None) -> tuple[int, int] | None:
    """``"256"`` -> (256, 256); ``"320x256"`` -> (320, 256) as (w, h)."""
    if text is None:
        return None
    match = _SIZE.match(text)
    if not match:
        raise ConfigError([f"--img-size: {text!r} must be S or WxH, e.g. 256 or 320x256"])
    w = int(match.group(1))
    h = int(match.group(2) or w)
    if not (1 <= w <= 4096 and 1 <= h <= 4096):
        raise ConfigError([f"--img-size: {w}x{h} sides must be in [1, 4096]"])
    return (w, h)


def with_port(address: str, port: int, flag: str) -> str:
    """``address`` with ``port`` when it names none (gRPC would dial 443): ``host`` -> ``host:port``,
    ``::1`` or ``[::1]`` -> ``[::1]:port``, ``dns:///name`` -> ``dns:///name:port``; ConfigError for an
    empty address or a port that is not one."""
    text = address.strip()
    if text.startswith("unix:"):
        return text
    scheme = "dns:///" if text.startswith("dns:///") else ""
    text = text.removeprefix(scheme)
    if not text:
        raise ConfigError([f"{flag}: {address!r} names no host (expected HOST or HOST:PORT)"])
    if text.startswith("["):
        host, _, rest = text.partition("]")
        if rest and not rest.startswith(":"):
            raise ConfigError([f"{flag}: {address!r} is not [IPv6] or [IPv6]:PORT"])
        host, given = host + "]", rest[1:] if rest else None
    elif text.count(":") > 1:  # a bare IPv6 address
        host, given = f"[{text}]", None
    else:
        host, sep, after = text.partition(":")
        given = after if sep else None
    if given is None:
        return f"{scheme}{host}:{port}"
    if not given.isdigit() or not 1 <= int(given) <= 65535:
        raise ConfigError([f"{flag}: {address!r}: the port must be a number in [1, 65535]"])
    return f"{scheme}{host}:{given}"


def no_searcher(address: str, why: str) -> Unavailable:
    """The error for a searcher address where none answers: what was tried and what to do."""
    return Unavailable(
        f"no searcher is answering at {address} ({why[:300]}). Start one there "
        "(`python -m services.searcher`; `facenas search run` runs a whole search on this machine), or "
        f"give the address of a running one with --searcher or FACENAS_SEARCHER (HOST[:PORT], port "
        f"{SEARCHER_PORT} by default)"
    )


def space_params(config: Path | None, img_size: tuple[int, int] | None = None) -> SearchSpaceParams:
    """Search-space parameters from ``--config`` (default: Archai's cpu_search.yaml values)."""
    params = load_search_space_params(config)
    if img_size is not None and img_size != params.img_size:
        params = SearchSpaceParams.from_mapping({**params.to_dict(), "img_size": list(img_size)})
    return params


def print_json(data: Any) -> None:
    """One JSON object on stdout."""
    sys.stdout.write(json.dumps(data, default=str) + "\n")


def user_errors(func: Callable[P, R]) -> Callable[P, R]:
    """Turn facenas errors into a one-line message on stderr and exit status 2."""

    @wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except FacenasError as err:
            err_console.print(f"[bold red]error:[/] {err}", markup=True, highlight=False)
            raise typer.Exit(code=2) from err

    return wrapper
