"""Archai's ``arch_config`` module (``ArchConfig``, ``ArchConfigList``, ``build_arch_config``) without torch.

Importing it the plain way runs its package's ``__init__``, which imports Archai's ``ConfigSearchSpace``
and with it torch: a second and hundreds of MB in a process that only reads architecture documents (a
``--backend sim`` worker). When that package is not loaded yet, :func:`arch_config` creates it bare (its
``__path__``, so that its torch-free submodules import) and defers its ``__init__`` to the first time a
name the package itself defines is asked for: ``from archai.discrete_search.search_spaces.config import
ArchParamTree`` still works, and imports torch then, as it always did.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import threading
from collections import OrderedDict
from collections.abc import Mapping
from types import ModuleType
from typing import Any

PACKAGE = "archai.discrete_search.search_spaces.config"
_lock = threading.RLock()


def arch_config() -> ModuleType:
    """The ``arch_config`` module of Archai's config search spaces (torch-free; see the module docstring)."""
    module = sys.modules.get(f"{PACKAGE}.arch_config")
    if module is not None:
        return module
    with _lock:
        if PACKAGE not in sys.modules:
            _defer_init()
    return importlib.import_module(f"{PACKAGE}.arch_config")


def build_config(document: Mapping[str, Any]) -> Any:
    """Archai's ``build_arch_config(document)`` without its copies: the same ``ArchConfig`` and
    ``ArchConfigList`` objects, which record parameter usage the same way.

    ``ArchConfig.__init__`` deep-copies its dict at every level of nesting, so building an hgnet document
    copies its leaves once per level above them: 80 % of validating one (about 4 ms of 5 on this machine,
    paid by every job a worker takes). Here the nodes share ``document``'s values: the caller owns it
    (freshly parsed) and must not change it afterwards."""
    module = arch_config()
    kinds = {"default": module.ArchConfig, "config_list": module.ArchConfigList}

    def build(node: Mapping[str, Any]) -> Any:
        kind = kinds[node.get("_config_type", "default")]  # an unknown type: KeyError, as in Archai
        config = kind.__new__(kind)
        config._used_params = set()
        config._config_dict = node
        config.nodes = OrderedDict(
            (name, build(value) if isinstance(value, dict) else value) for name, value in node.items()
        )
        if kind is module.ArchConfigList:
            if "_configs" not in node or "_repeat_times" not in node:
                raise AssertionError("a config_list needs _configs and _repeat_times")  # as Archai asserts
            config.max_size = node["_repeat_times"]
        return config

    return build(document)


def _defer_init() -> None:
    """Put the package in ``sys.modules`` without running its ``__init__`` until a name of it is needed."""
    spec = importlib.util.find_spec(PACKAGE)  # imports the parent packages (their __init__s are empty)
    if spec is None or spec.loader is None:
        raise ImportError(f"{PACKAGE} is not installed")
    loader = spec.loader
    package = importlib.util.module_from_spec(spec)
    loaded = False

    def __getattr__(name: str) -> Any:  # noqa: N807 - a module's __getattr__ (PEP 562)
        nonlocal loaded
        with _lock:
            if not loaded:
                loaded = True  # set first: the __init__ asks for names of its own package as it runs
                loader.exec_module(package)
        try:
            return package.__dict__[name]
        except KeyError:
            raise AttributeError(f"module {PACKAGE!r} has no attribute {name!r}") from None

    package.__dict__["__getattr__"] = __getattr__
    sys.modules[PACKAGE] = package
    parent, _, child = PACKAGE.rpartition(".")
    setattr(sys.modules[parent], child, package)
