"""The CLI as a searcher client: addresses without a port, errors that say what to do when no searcher
answers, and a load that needs neither torch nor onnxruntime (the searcher image has no CUDA)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import pytest
from typer.testing import CliRunner

from facenas.cli import search
from facenas.cli.common import with_port
from facenas.cli.main import app
from facenas.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()


def _closed_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize(
    ("given", "dialled"),
    [
        ("127.0.0.1", "127.0.0.1:50051"),
        ("searcher.facenas", "searcher.facenas:50051"),
        ("10.0.0.3:6000", "10.0.0.3:6000"),
        ("::1", "[::1]:50051"),
        ("[::1]", "[::1]:50051"),
        ("[::1]:7000", "[::1]:7000"),
        ("dns:///searcher.facenas", "dns:///searcher.facenas:50051"),
        ("dns:///searcher.facenas:7000", "dns:///searcher.facenas:7000"),
        (" 127.0.0.1 ", "127.0.0.1:50051"),
    ],
)
def test_an_address_without_a_port_gets_the_searchers(given: str, dialled: str) -> None:
    assert with_port(given, 50051, "--searcher") == dialled


@pytest.mark.parametrize("bad", ["", "host:abc", "host:0", "host:70000", "[::1]x"])
def test_a_bad_address_is_a_config_error(bad: str) -> None:
    with pytest.raises(ConfigError, match="--searcher"):
        with_port(bad, 50051, "--searcher")


def test_searcher_without_a_port_dials_50051_not_443(monkeypatch: pytest.MonkeyPatch) -> None:
    dialled: list[str] = []

    def channel(target: str, **_options: object) -> grpc.Channel:
        dialled.append(target)
        return grpc.insecure_channel(target)

    monkeypatch.setattr(search, "make_channel", channel)
    search._stub("127.0.0.1")
    assert dialled == ["127.0.0.1:50051"]


def test_no_searcher_at_the_address_says_which_and_what_to_do() -> None:
    port = _closed_port()
    for args in (["search", "list"], ["search", "watch", "s1"], ["search", "cancel", "s1"]):
        result = runner.invoke(app, [*args, "--searcher", f"127.0.0.1:{port}"])
        assert result.exit_code == 2, result.output
        said = " ".join(result.stderr.split())  # (rich wraps lines)
        assert f"no searcher is answering at 127.0.0.1:{port}" in said, said
        assert "python -m services.searcher" in said and "FACENAS_SEARCHER" in said, said
        assert "Traceback" not in result.output


@pytest.fixture
def store_out_searcher() -> Iterator[int]:
    """A searcher that answers, with UNAVAILABLE of its own (as when its store is out)."""

    def unavailable(_request: bytes, context: grpc.ServicerContext) -> bytes:
        context.abort(grpc.StatusCode.UNAVAILABLE, "store unavailable: the database does not answer")

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    handler = grpc.unary_unary_rpc_method_handler(unavailable)
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("facenas.v1.Searcher", {"ListSearches": handler}),)
    )
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield port
    server.stop(0)


def test_a_searcher_that_answers_unavailable_keeps_its_own_message(store_out_searcher: int) -> None:
    result = runner.invoke(app, ["search", "list", "--searcher", f"127.0.0.1:{store_out_searcher}"])
    assert result.exit_code == 2
    said = " ".join(result.stderr.split())
    assert "the database does not answer" in said and "no searcher is answering" not in said, said


@pytest.mark.integration
def test_the_cli_loads_and_its_search_commands_run_without_torch_or_onnxruntime() -> None:
    """``facenas --help`` and the search commands must not pay torch's seconds at load."""
    code = f"""
import json, sys
from typer.testing import CliRunner
from facenas.cli.main import app
runner = CliRunner()
codes = [runner.invoke(app, args).exit_code for args in (
    ["--help"], ["search", "--help"], ["search", "list", "--help"], ["data", "--help"],
    ["latency", "--help"], ["search", "list", "--searcher", "127.0.0.1:{_closed_port()}"],
)]
print(json.dumps({{"codes": codes, "loaded": [m for m in ("torch", "onnxruntime") if m in sys.modules]}}))
"""
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT, check=True
    )
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result == {"codes": [0, 0, 0, 0, 0, 2], "loaded": []}, done.stderr
