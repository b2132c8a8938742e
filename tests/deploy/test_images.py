"""The images' Dockerfile (docker/Dockerfile, one target per service) against the code and itself.

The searcher image installs every third-party package the searcher's code imports, including the
imports made inside functions that only an option reaches (``--autoscale-trainers`` imports
``kubernetes``): an image that builds can still fail the first time such an option is used. The imports
are read from the source (module level and inside functions), following ``facenas`` and ``services``
modules from ``services/searcher/server.py``; each third-party module maps to its distribution, which
the image must install (docker/searcher/requirements.txt with the files it includes, or the
Dockerfile's own ``pip install`` of torch and archai) unless it is listed in ``NEVER_IMPORTED`` with
the reason.

Each service's target ships on the clean base (``PYTHON_IMAGE``), never on ``BUILDER_IMAGE`` (which
may trust a build host's CAs), as uid 10001 running its own service; the store's has no torch.
"""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "docker" / "Dockerfile"
SEARCHER = ROOT / "docker" / "searcher"
#: service (target) -> its gRPC port
SERVICES = {"store": 50060, "searcher": 50051, "trainer": 50061, "latency_cpu": 50062, "latency_snp": 50063}
#: installed by docker/Dockerfile itself (stage ml), not from requirements.txt
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
    """The distributions a requirements file names (``name[extra]==version`` lines), with those of the
    files it includes (``-r other.txt``, relative to it)."""
    names = set()
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#")[0].strip()
        if line.startswith("-r "):
            names |= requirements(path.parent / line.removeprefix("-r ").strip())
        elif line:
            names.add(_normal(re.split(r"[\[=<>!~ ;]", line)[0]))
    return names


@dataclass
class Stage:
    base: str  # FROM's image or stage
    instructions: list[tuple[str, str]]  # (INSTRUCTION, arguments), continuation lines joined


def stages(path: Path = DOCKERFILE) -> dict[str, Stage]:
    """The Dockerfile's stages by name (``FROM base AS name``)."""
    lines: list[str] = []
    pending = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        if raw.lstrip().startswith("#"):
            continue
        pending += raw.rstrip()
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        if pending.strip():
            lines.append(pending.strip())
        pending = ""
    found: dict[str, Stage] = {}
    current: Stage | None = None
    for line in lines:
        instruction, _, arguments = line.partition(" ")
        if instruction.upper() == "FROM":
            base, _, name = arguments.partition(" AS ")
            current = found[name.strip()] = Stage(base.strip(), [])
        elif current is not None:
            current.instructions.append((instruction.upper(), arguments.strip()))
    return found


def chain(name: str, found: dict[str, Stage]) -> list[str]:
    """``name``, the stage it is built FROM, and so on down to the image it starts from."""
    names = [name]
    while names[-1] in found:
        names.append(found[names[-1]].base)
    return names


def sources(name: str, found: dict[str, Stage]) -> set[str]:
    """Every stage whose files can end up in ``name``: its chain and (recursively) what it COPYs from."""
    seen: set[str] = set()
    todo = [name]
    while todo:
        for stage in chain(todo.pop(), found):
            if stage in seen or stage not in found:
                continue
            seen.add(stage)
            todo += [
                match.group(1)
                for instruction, arguments in found[stage].instructions
                if instruction == "COPY" and (match := re.search(r"--from=(\S+)", arguments))
            ]
    return seen


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
    """The searcher's builder stage imports ``kubernetes``, so an image without it fails to build."""
    build = stages()["searcher-build"]
    checks = [
        check
        for instruction, arguments in build.instructions
        if instruction == "RUN"
        for check in re.findall(r'python -c "([^"]*)"', arguments)
    ]
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


def test_each_service_ships_on_the_clean_base_as_its_own_non_root_service() -> None:
    found = stages()
    for service, port in SERVICES.items():
        assert service in found, f"docker/Dockerfile has no target {service}"
        assert chain(service, found)[-1] == "${PYTHON_IMAGE}", chain(service, found)
        assert "builder" not in chain(service, found), f"{service} is built on the builder image"
        instructions = dict(found[service].instructions)  # the last of each kind
        assert instructions["ENTRYPOINT"] == f'["python", "-m", "services.{service}"]', service
        assert instructions["USER"] == "10001:10001", service
        assert instructions["EXPOSE"].split() == [str(port), "9090"], service
        env = " ".join(a for i, a in found[service].instructions if i == "ENV")
        assert f"FACENAS_PORT={port}" in env, service
    # the build-only base serves builder stages only: every stage on it is something a target copies from
    on_builder = {name for name in found if "${BUILDER_IMAGE}" in chain(name, found)}
    assert on_builder and not on_builder & set(SERVICES), on_builder


def test_the_store_image_has_no_torch() -> None:
    found = stages()
    assert "ml" in found and "ml" in sources("searcher", found)
    assert "ml" not in sources("store", found), sources("store", found)
    assert not requirements(ROOT / "docker" / "store" / "requirements.txt") & {"torch", "archai"}
