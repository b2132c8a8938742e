"""Generate ``facenas/v1`` from ``protos/facenas/v1/*.proto`` (``make protos``).

``python -m facenas.protogen [OUT_DIR]`` writes the Python modules, gRPC stubs and their type stubs
(mypy-protobuf) under ``OUT_DIR`` (default: the repository root), so ``facenas.v1`` imports need no
rewriting: proto package = directory = Python package.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROTO_ROOT = ROOT / "protos"


def proto_files() -> list[Path]:
    return sorted((PROTO_ROOT / "facenas" / "v1").glob("*.proto"))


def generate(out_dir: Path) -> None:
    """Run protoc (grpcio-tools) with the python, grpc_python, mypy and mypy_grpc plugins."""
    from grpc_tools import protoc

    bin_dir = Path(sys.executable).parent
    os.environ["PATH"] = f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"  # protoc-gen-mypy
    (out_dir / "facenas" / "v1").mkdir(parents=True, exist_ok=True)
    include = Path(protoc.__file__).parent / "_proto"
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"-I{include}",
        f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        f"--mypy_out={out_dir}",
        f"--mypy_grpc_out={out_dir}",
        *(str(p.relative_to(PROTO_ROOT)) for p in proto_files()),
    ]
    cwd = os.getcwd()
    os.chdir(PROTO_ROOT)
    try:
        code = protoc.main(args)
    finally:
        os.chdir(cwd)
    if code != 0:
        raise SystemExit(f"protoc failed with status {code}")


if __name__ == "__main__":
    generate(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT)
