"""The searcher image installs every third-party package the searcher's code imports, including the
imports made inside functions that only an option reaches (``--autoscale-trainers`` imports
``kubernetes``): an image that builds can still fail the first time such an option is used.

The imports are read from the source (module level and inside functions), following ``facenas`` and
``services`` modules from ``services/searcher/server.py``; each third-party module maps to its
distribution, which the image must install (docker/searcher/requirements.txt, or the Dockerfile's own
``pip install`` of torch and archai) unless it is listed in ``NEVER_IMPORTED`` with the reason.
"""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SEARCHER = ROOT / "docker" / "searcher"
#: installed by docker/searcher/Dockerfile itself, not from requirements.txt
INSTALLED_BY_DOCKERFILE = {"torch", "archai"}
#: distributions the searcher's code names but never imports in the searcher (module: why)
NEVER_IMPORTED = {
    "onnx": "facenas.probes' onnxruntime probe and facenas.latency: latency services only",
    "onnxruntime": "facenas.probes' onnxruntime probe and facenas.latency: latency services only",
}
OWN = ("facenas", "services")


def _module_file(name: str) -> Path | None:
    path = ROOT.joinpath(*name.split("."))
    for candidate in (path / "__init__.py", path.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def third_party_imports(start: str) -> dict[str, set[str]]:
    """Top-level third-party module -> the facenas/services modules importing it, from ``start`` on."""
    found: dict[str, set[str]] = {}
    seen: set[str] = set()
    todo = [start]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        file = _module_file(name)
        if file is None:
            continue
        package = name if file.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                    base = f"{parent}.{base}" if base else parent
                targets = [base, *(f"{base}.{a.name}" for a in node.names)]
            else:
                continue
            for target in targets:
                top = target.split(".")[0]
                if top in OWN:
                    parts = target.split(".")
                    todo.extend(".".join(parts[:i]) for i in range(1, len(parts) + 1))
                elif top not in sys.stdlib_module_names and top != "__future__":
                    found.setdefault(top, set()).add(name)
    return found


def _normal(distribution: str) -> str:
    return re.sub(r"[-_.]+", "-", distribution).lower()


def requirements(path: Path) -> set[str]:
    """The distributions a requirements file names (``name[extra]==version`` lines)."""
    names = set()
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#")[0].strip()
        if line:
            names.add(_normal(re.split(r"[\[=<>!~ ;]", line)[0]))
    return names


def test_the_searcher_image_installs_what_the_searcher_imports() -> None:
    distributions = importlib.metadata.packages_distributions()
    installed = requirements(SEARCHER / "requirements.txt") | INSTALLED_BY_DOCKERFILE
    missing = []
    for module, importers in sorted(third_party_imports("services.searcher.server").items()):
        names = {_normal(d) for d in distributions.get(module, [module])}
        if not names & installed and not names & set(NEVER_IMPORTED):
            missing.append(
                f"{module} ({', '.join(sorted(names))}; imported by {', '.join(sorted(importers))})"
            )
    assert not missing, f"docker/searcher/requirements.txt lacks: {'; '.join(missing)}"


def test_the_searcher_image_build_imports_the_autoscaler_dependency() -> None:
    """The builder stage imports ``kubernetes``, so an image without it fails to build."""
    dockerfile = (SEARCHER / "Dockerfile").read_text(encoding="utf-8")
    checks = re.findall(r'python -c "([^"]*)"', dockerfile)
    imported = {
        alias.name.split(".")[0]
        for check in checks
        for node in ast.walk(ast.parse(check))
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in (node.names if isinstance(node, ast.Import) else [ast.alias(node.module or "")])
    }
    assert {"services", "kubernetes"} <= imported, checks


def test_the_import_scan_sees_imports_inside_functions() -> None:
    found = third_party_imports("facenas.cluster.autoscale")
    assert "facenas.cluster.autoscale" in found["kubernetes"]  # `from kubernetes import ...` in a function
