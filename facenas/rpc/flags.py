"""Service flags that report every problem at once: bad values from the command line or the environment,
unknown flags, out-of-range numbers and inconsistent combinations, in one :class:`ConfigError`.

Each flag's default may come from ``FACENAS_<FLAG>`` (:func:`env`); such a value is converted and checked
like a typed flag, and a problem with it names the variable. A flag's ``type`` converts and checks one
value (:func:`number`, :func:`log_level`); :meth:`ServiceParser.add_check` adds checks across flags.
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

from facenas.errors import ConfigError

#: a check across flags: the problems it finds in the parsed flags
Check = Callable[[argparse.Namespace], list[str]]

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off", "")
_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


class FlagValueError(ValueError):
    """Raised by a flag type: the value ``is not ...`` / ``must be ...`` (the message's end)."""


class EnvValue(str):
    """A flag's default read from the environment variable ``variable``."""

    variable: str

    def __new__(cls, value: str, variable: str) -> EnvValue:
        text = super().__new__(cls, value)
        text.variable = variable
        return text


@dataclass(frozen=True)
class Invalid:
    """A flag value that did not convert; :meth:`ServiceParser.parse` reports ``problem``."""

    problem: str


def variable(name: str) -> str:
    """``metrics-port`` -> ``FACENAS_METRICS_PORT``."""
    return f"FACENAS_{name.upper().replace('-', '_')}"


def env(name: str, default: Any) -> Any:
    """``FACENAS_<NAME>`` if set (converted and checked by the flag's type), else ``default``."""
    value = os.environ.get(variable(name))
    return default if value is None else EnvValue(value, variable(name))


def env_switch(name: str) -> bool | Invalid:
    """The default of a ``store_true`` flag from ``FACENAS_<NAME>`` (1/true/yes/on or 0/false/no/off)."""
    var = variable(name)
    text = os.environ.get(var, "").strip().lower()
    if text in _TRUE or text in _FALSE:
        return text in _TRUE
    words = ", ".join(_TRUE + _FALSE[:-1])
    return Invalid(f"--{name.replace('_', '-')} ({var}): {text!r} must be one of {words}")


def number(
    kind: type[int] | type[float],
    low: float | None = None,
    high: float | None = None,
    above: float | None = None,
) -> Callable[[str], Any]:
    """A flag type: ``kind`` within ``[low, high]`` (and ``> above``); a finite one for floats."""

    def convert(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise FlagValueError("is not an integer" if kind is int else "is not a number") from None
        if not math.isfinite(value):
            raise FlagValueError("is not a finite number")
        if above is not None and not value > above:
            raise FlagValueError(f"must be > {above:g}")
        if low is not None and high is not None and not low <= value <= high:
            raise FlagValueError(f"must be in [{low:g}, {high:g}]")
        if low is not None and value < low:
            raise FlagValueError(f"must be >= {low:g}")
        if high is not None and value > high:
            raise FlagValueError(f"must be <= {high:g}")
        return value

    convert.__name__ = kind.__name__
    return convert


def log_level(text: str) -> str:
    """A flag type: a logging level name (any case), returned in upper case."""
    level = text.strip().upper()
    if level not in _LEVELS:
        raise FlagValueError(f"must be one of {', '.join(_LEVELS)}")
    return level


class ServiceParser(argparse.ArgumentParser):
    """An ArgumentParser whose :meth:`parse` finds every problem before reporting any."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.checks: list[tuple[Check, tuple[str, ...]]] = []

    def add_check(self, check: Check, *dests: str) -> None:
        """Run ``check`` after parsing, unless one of the flags it reads (``dests``) is itself invalid."""
        self.checks.append((check, dests))

    def error(self, message: str) -> NoReturn:
        """A usage error (a flag without its value...): a ConfigError instead of exiting."""
        raise ConfigError([message])

    def parse(self, argv: Sequence[str] | None = None) -> tuple[argparse.Namespace, list[str]]:
        """The flags and every problem with them (empty when they are usable).

        Raises :class:`ConfigError` only for a usage error argparse cannot parse past."""
        for action in self._actions:
            _report_instead_of_raising(action)
        args, extra = self.parse_known_args(argv)
        problems = [f"unrecognized arguments: {' '.join(extra)}"] if extra else []
        invalid = set()
        for dest, value in vars(args).items():
            if isinstance(value, Invalid):
                problems.append(value.problem)
                invalid.add(dest)
            elif isinstance(value, EnvValue):
                setattr(args, dest, str(value))
        for check, dests in self.checks:
            if not invalid.intersection(dests):
                problems += check(args)
        return args, problems


def _report_instead_of_raising(action: argparse.Action) -> None:
    """Make ``action`` convert to :class:`Invalid` instead of raising, and check its choices, also for
    values from the environment (argparse checks only the command line's)."""
    if isinstance(action.type, _Lenient) or not action.option_strings:
        return
    if action.type is None and action.choices is None:
        return
    choices = tuple(action.choices) if action.choices is not None else None
    action.type = _Lenient(max(action.option_strings, key=len), action.type, choices)
    if choices is not None and action.metavar is None:
        action.metavar = "{" + ",".join(map(str, choices)) + "}"
    action.choices = None


class _Lenient:
    """A flag's type that returns :class:`Invalid`, naming the flag (and variable), for a bad value."""

    def __init__(self, flag: str, convert: Any, choices: tuple[Any, ...] | None) -> None:
        self.flag = flag
        self.convert = convert
        self.choices = choices

    def __call__(self, text: str) -> Any:
        where = f"{self.flag} ({text.variable})" if isinstance(text, EnvValue) else self.flag
        try:
            value = self.convert(text) if self.convert is not None else str(text)
        except FlagValueError as err:
            return Invalid(f"{where}: {str(text)!r} {err}")
        except (ValueError, TypeError, argparse.ArgumentTypeError):
            name = getattr(self.convert, "__name__", "value")
            return Invalid(f"{where}: {str(text)!r} is not a valid {name}")
        if self.choices is not None and value not in self.choices:
            return Invalid(f"{where}: {str(text)!r} must be one of {', '.join(map(str, self.choices))}")
        return value
