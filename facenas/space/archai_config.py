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
from types import ModuleType
from typing import Any

PACKAGE = "archai.discrete_search.search_spaces.config"
_lock = threading.RLock()


def arch_config() -> ModuleType:
    """The ``arch_config`` module of Archai's config search spaces (torch-free; see the module docstring)."""
    with _lock:
        if PACKAGE not in sys.modules:
            _defer_init()
    return importlib.import_module(f"{PACKAGE}.arch_config")


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
