"""Generated gRPC code is committed and must match protos/ (regenerate with ``make protos``)."""

from __future__ import annotations

from pathlib import Path

from facenas.protogen import ROOT, generate


def test_generated_code_matches_protos(tmp_path: Path) -> None:
    generate(tmp_path)
    fresh = {p.name: p.read_bytes() for p in (tmp_path / "facenas" / "v1").iterdir() if p.is_file()}
    committed_dir = ROOT / "facenas" / "v1"
    committed = {p.name: p.read_bytes() for p in committed_dir.iterdir() if p.name in fresh}
    missing = sorted(set(fresh) - set(committed))
    stale = sorted(name for name in fresh if name in committed and committed[name] != fresh[name])
    assert not missing and not stale, f"run `make protos`: missing {missing}, out of date {stale}"
