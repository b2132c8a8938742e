"""The docs' `facenas ...` command lines against the CLI's command objects (typer's click commands):
every command they show exists and takes the flags they show (also flags named in the line's comment),
and the docs' claims about flags hold ("All take `--json`." or "Every command takes ..." after a block
of commands; "`a`, `b` and `c` take `--config`"). The service packages' docstrings say what they are.
"""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.core import TyperGroup, TyperOption

from facenas.cli.main import app

ROOT = Path(__file__).resolve().parents[2]
DOCS = [
    ROOT / "README.md",
    ROOT / "services" / "README.md",
    ROOT / "docker" / "README.md",
    ROOT / "deploy" / "k8s" / "README.md",
    *sorted((ROOT / "docs").glob("*.md")),
]
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)
INLINE = re.compile(r"`((?:\.venv/bin/)?facenas [^`]+)`")
#: "`arch info`, `latency` and `train` take `--config`"
TAKE_CLAIM = re.compile(r"((?:`[a-z ]+`(?:, | and ))*`[a-z ]+`) takes? `(--[a-z-]+)`")
#: "All take `--json`." / "Every command takes `--config`": each command of the code block before
ALL_TAKE = re.compile(r"\b(?:All\s+take|Every\s+command\s+takes)\s+`(--[a-z-]+)`")
FLAG = re.compile(r"--[a-zA-Z][\w-]*")
#: the start of a command line: environment variables, then facenas
COMMAND = re.compile(r"^(?:[A-Z_]+=\S*\s+)*(?:\.venv/bin/)?facenas\s+")


@dataclass(frozen=True)
class Shown:
    """A command line as a doc shows it: where, its words, and the flags its comment names."""

    where: str
    words: tuple[str, ...]
    comment_flags: tuple[str, ...] = ()
    inline: bool = False  # in prose, where `facenas search` may name the group itself


def _lines(where: str, line: str, comment: str = "", inline: bool = False) -> list[Shown]:
    """One Shown per alternative of ``facenas search list | pareto ID | get ID ARCHID``."""
    line = COMMAND.sub("", line.strip())
    alternatives = [a.split() for a in line.split(" | ")]
    first = [w.strip("[]") for w in alternatives[0]]
    group = first[:1] if len(alternatives) > 1 else []  # `search list | pareto ID`: pareto is search's
    flags = tuple(FLAG.findall(comment))
    return [
        Shown(where, tuple(group + [w.strip("[]") for w in words] if i else first), flags, inline)
        for i, words in enumerate(alternatives)
    ]


def shown_commands(path: Path) -> list[tuple[Shown, int]]:
    """Every facenas command line of ``path`` (code blocks and inline code), with its code block's index
    (-1 for inline code)."""
    text = path.read_text(encoding="utf-8")
    found: list[tuple[Shown, int]] = []
    for index, block in enumerate(FENCE.finditer(text)):
        if block.group(1) not in ("", "sh", "bash", "console"):
            continue
        line_no = text[: block.start()].count("\n") + 2
        for offset, raw in enumerate(block.group(2).splitlines()):
            command, _, comment = raw.partition("#")
            if COMMAND.match(command.strip()):
                where = f"{path.relative_to(ROOT)}:{line_no + offset}"
                found += [(s, index) for s in _lines(where, command, comment)]
    prose = FENCE.sub("", text)
    for match in INLINE.finditer(prose):
        where = f"{path.relative_to(ROOT)} `{match.group(1)}`"
        found += [(s, -1) for s in _lines(where, match.group(1), inline=True)]
    return found


ROOT_COMMAND = typer.main.get_command(app)


def resolve(shown: Shown) -> tuple[Any, list[str], list[str]]:
    """The command a line invokes, its path, and the problems with the line's words and flags."""
    command: Any = ROOT_COMMAND
    path: list[str] = []
    problems: list[str] = []
    words = list(shown.words)
    flags: list[str] = []
    while words:
        word = words.pop(0)
        if word == "...":  # "facenas search ...": any subcommand
            break
        if word.startswith("--"):
            named = FLAG.findall(word.split("=")[0])  # --flag, --flag=value, --min-params/--max-params
            flags += named
            option = _option(command, named[0]) if named else None
            if option is not None and not option.is_flag and "=" not in word and words:
                words.pop(0)  # the option's value
            continue
        if isinstance(command, TyperGroup):
            sub = command.commands.get(word)
            if sub is None:
                problems.append(f"{' '.join(['facenas', *path])}: no command {word!r}")
                break
            command, path = sub, [*path, word]
    for flag in [*flags, *shown.comment_flags]:
        if flag == "--help":  # click adds it to every command and group
            continue
        owners = [ROOT_COMMAND, *_chain(path)]
        if not any(_option(c, flag) is not None for c in owners):
            problems.append(f"facenas {' '.join(path)}: no option {flag}")
    return command, path, problems


def _chain(path: list[str]) -> list[Any]:
    """The commands along ``path`` (a group's options may come before its subcommand)."""
    chain = []
    command: Any = ROOT_COMMAND
    for word in path:
        command = command.commands[word]
        chain.append(command)
    return chain


def _option(command: Any, flag: str) -> TyperOption | None:
    for param in command.params:
        if isinstance(param, TyperOption) and (flag in param.opts or flag in param.secondary_opts):
            return param
    return None


ALL_SHOWN = [(shown, index, path) for path in DOCS for shown, index in shown_commands(path)]


def test_the_docs_show_commands() -> None:
    assert len(ALL_SHOWN) > 30
    paths = {" ".join(resolve(s)[1]) for s, _, _ in ALL_SHOWN}
    assert {"search start", "search outputs", "arch info", "data prepare", "latency", "train"} <= paths


@pytest.mark.parametrize("shown", [s for s, _, _ in ALL_SHOWN], ids=lambda s: s.where)
def test_every_command_line_exists_with_its_flags(shown: Shown) -> None:
    command, path, problems = resolve(shown)
    assert not problems, f"{shown.where}: {'; '.join(problems)}"
    if not shown.inline and "..." not in shown.words:
        assert not isinstance(command, TyperGroup), f"{shown.where}: `facenas {' '.join(path)}` is a group"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_the_docs_claims_about_flags_hold(doc: Path) -> None:
    text = doc.read_text(encoding="utf-8")
    problems = []
    for claim in TAKE_CLAIM.finditer(FENCE.sub("", text)):
        names, flag = re.findall(r"`([a-z ]+)`", claim.group(1)), claim.group(2)
        for name in names:
            command, path, unresolved = resolve(Shown(doc.name, tuple(name.split())))
            assert not unresolved and path == name.split(), unresolved
            if _option(command, flag) is None:
                problems.append(f"`{name}` does not take {flag}")
    for claim in ALL_TAKE.finditer(text):
        blocks = [b for b in FENCE.finditer(text) if b.end() <= claim.start()]
        assert blocks, f"{claim.group(0)!r} follows no code block"
        index = len(blocks) - 1
        commands = [s for s, i in shown_commands(doc) if i == index]
        assert commands, f"the block before {claim.group(0)!r} shows no command"
        for shown in commands:
            command, path, _ = resolve(shown)
            if _option(command, claim.group(1)) is None:
                problems.append(f"`facenas {' '.join(path)}` does not take {claim.group(1)}")
    assert not problems, f"{doc.relative_to(ROOT)}: {'; '.join(problems)}"


@pytest.mark.parametrize("service", sorted(p.parent.name for p in (ROOT / "services").glob("*/__main__.py")))
def test_each_service_package_says_what_it_is_and_how_to_run_it(service: str) -> None:
    doc = importlib.import_module(f"services.{service}").__doc__ or ""
    assert "not implemented" not in doc.lower()
    assert f"python -m services.{service}" in " ".join(doc.split())
    assert f"`{service}`" in (ROOT / "services" / "README.md").read_text(encoding="utf-8")
