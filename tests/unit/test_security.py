"""Security options (facenas.rpc.security): TLS and token configuration is validated all at once, and an
in-process server with mTLS, the API token or reflection off refuses what it must and nothing else."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from facenas.errors import ConfigError, Unauthenticated
from facenas.rpc import security
from facenas.rpc.client import call, make_channel
from facenas.rpc.server import RunningServer, ServerConfig, start
from facenas.rpc.status import error_from_rpc
from tests.fakes.certs import TestCA

SERVICE = "facenas.test.Echo"
TOKEN = "s3cret-token-0123456789abcdef"


@pytest.fixture(autouse=True)
def _no_process_tls(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts with no TLS configured for the process (and none in the environment)."""
    monkeypatch.setattr(security, "_client_tls", security._UNSET)
    for name in (security.ENV_CERT, security.ENV_KEY, security.ENV_CA, security.ENV_DIR):
        monkeypatch.delenv(name, raising=False)
    for name in (security.ENV_SERVER_NAME, security.ENV_TOKEN, security.ENV_TOKEN_FILE):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv(security.ENV_REFLECTION, raising=False)


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> TestCA:
    return TestCA(tmp_path_factory.mktemp("ca"))


@pytest.fixture(scope="module")
def tls_dir(ca: TestCA, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ca.tls_dir(tmp_path_factory.mktemp("tls"), "service", extra_names=("facenas",))


# --- configuration --------------------------------------------------------------------------------------


def test_no_tls_option_means_plaintext() -> None:
    assert security.load_tls() is None
    assert security.tls_from_env({}) is None
    assert security.load_tls("", " ", None, "") is None


def test_a_tls_dir_gives_the_three_files(tls_dir: Path) -> None:
    tls = security.load_tls(directory=tls_dir, server_name="facenas")
    assert tls is not None
    assert (tls.cert_path, tls.key_path, tls.ca_path) == (
        tls_dir / "tls.crt",
        tls_dir / "tls.key",
        tls_dir / "ca.crt",
    )
    assert tls.channel_options() == [("grpc.ssl_target_name_override", "facenas")]
    assert "PRIVATE" not in repr(tls)
    env = {security.ENV_DIR: str(tls_dir)}
    assert security.tls_from_env(env) == security.load_tls(directory=tls_dir)
    # a child process given tls.env() loads the same configuration
    assert security.tls_from_env(tls.env()) == tls


def test_half_a_tls_configuration_lists_every_problem(tmp_path: Path, tls_dir: Path) -> None:
    with pytest.raises(ConfigError) as raised:
        security.load_tls(cert=tls_dir / "tls.crt")
    assert [p.split(":")[0] for p in raised.value.problems] == ["--tls-key", "--tls-ca"]

    not_pem = tmp_path / "notes.txt"
    not_pem.write_text("hello")
    with pytest.raises(ConfigError) as raised:
        security.load_tls(cert=tmp_path / "absent.crt", key=not_pem, ca=not_pem)
    problems = raised.value.problems
    assert len(problems) == 3, problems
    assert "cannot read" in problems[0] and "absent.crt" in problems[0]
    assert "does not hold a PEM private key" in problems[1]
    assert "does not hold PEM certificates" in problems[2]
    assert "invalid configuration" in str(raised.value) and "absent.crt" in str(raised.value)


def test_unreadable_files_and_a_missing_directory_are_problems(tmp_path: Path, tls_dir: Path) -> None:
    with pytest.raises(ConfigError) as raised:
        security.load_tls(directory=tmp_path / "nowhere")
    assert len(raised.value.problems) == 4  # the directory and each of its three files

    # a path that cannot be read as a file (a directory here: root reads files of any mode)
    with pytest.raises(ConfigError) as raised:
        security.load_tls(cert=tls_dir / "tls.crt", key=tmp_path, ca=tls_dir / "ca.crt")
    assert [p.split(":")[0] for p in raised.value.problems] == ["--tls-key"]
    assert "cannot read" in raised.value.problems[0]
    if os.geteuid() != 0:
        key = tmp_path / "unreadable.key"
        key.write_bytes((tls_dir / "tls.key").read_bytes())
        key.chmod(0)
        with pytest.raises(ConfigError, match=r"--tls-key: cannot read .*unreadable.key"):
            security.load_tls(cert=tls_dir / "tls.crt", key=key, ca=tls_dir / "ca.crt")


def test_a_key_that_is_not_the_certificates_is_refused(ca: TestCA, tmp_path: Path) -> None:
    one = ca.issue(tmp_path, "one")
    other = ca.issue(tmp_path, "other")
    with pytest.raises(ConfigError, match="is not the private key of --tls-cert"):
        security.load_tls(one.cert, other.key, one.ca)
    assert security.load_tls(one.cert, one.key, one.ca) is not None


def test_explicit_files_win_over_the_directorys(ca: TestCA, tls_dir: Path, tmp_path: Path) -> None:
    own = ca.issue(tmp_path, "own")
    tls = security.load_tls(cert=own.cert, key=own.key, directory=tls_dir)
    assert tls is not None
    assert (tls.cert_path, tls.key_path, tls.ca_path) == (own.cert, own.key, tls_dir / "ca.crt")


def test_a_server_name_without_tls_is_a_problem() -> None:
    with pytest.raises(ConfigError, match="--tls-server-name"):
        security.load_tls(server_name="facenas")


def test_api_token_options(tmp_path: Path) -> None:
    assert security.load_token() is None and security.load_token("", None) is None
    assert security.load_token(f"  {TOKEN}\n") == TOKEN
    file = tmp_path / "token"
    file.write_text(TOKEN + "\n")
    assert security.load_token(token_file=file) == TOKEN
    assert security.token_from_env({security.ENV_TOKEN_FILE: str(file)}) == TOKEN
    with pytest.raises(ConfigError, match="both set"):
        security.load_token(TOKEN, file)
    with pytest.raises(ConfigError, match="at least 16"):
        security.load_token("short")
    with pytest.raises(ConfigError, match="printable ASCII"):
        security.load_token("a token with spaces in it")
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ConfigError, match="is empty"):
        security.load_token(token_file=tmp_path / "empty")
    with pytest.raises(ConfigError, match="cannot read"):
        security.load_token(token_file=tmp_path / "absent")


def test_a_service_with_bad_security_options_reports_all_and_exits_2(
    tmp_path: Path, tls_dir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from services.searcher.server import main

    monkeypatch.setenv(security.ENV_REFLECTION, "maybe")
    argv = ["--port", "0", "--metrics-port", "0", "--tls-cert", str(tls_dir / "tls.crt")]
    argv += ["--tls-ca", str(tmp_path / "absent.crt"), "--api-token", "short"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    for problem in ("--tls-key: missing", "--tls-ca: cannot read", "FACENAS_REFLECTION", "at least 16"):
        assert problem in err, err


def test_reflection_flag_and_env() -> None:
    import argparse

    def resolve(*argv: str) -> bool:
        parser = argparse.ArgumentParser()
        security.add_tls_flags(parser)
        security.add_reflection_flag(parser)
        return security.server_security(parser.parse_args(argv)).reflection

    assert resolve() is True
    assert resolve("--no-reflection") is False
    with pytest.MonkeyPatch.context() as env:
        env.setenv(security.ENV_REFLECTION, "0")
        assert resolve() is False
        assert resolve("--reflection") is True


# --- an in-process server -------------------------------------------------------------------------------


def _echo(request: bytes, _context: grpc.ServicerContext) -> bytes:
    return request


def _echo_stream(request: bytes, _context: grpc.ServicerContext) -> Iterator[bytes]:
    yield request
    yield request


def _add(_servicer: object, server: grpc.Server) -> None:
    handlers = {
        "Echo": grpc.unary_unary_rpc_method_handler(_echo),
        "Stream": grpc.unary_stream_rpc_method_handler(_echo_stream),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))


@contextmanager
def _server(**config: object) -> Iterator[RunningServer]:
    running = start([(_add, None, SERVICE)], ServerConfig(metrics_port=None, **config))  # type: ignore[arg-type]
    try:
        yield running
    finally:
        running.stop(0)


def _echo_call(channel: grpc.Channel, timeout: float = 5.0) -> bytes:
    reply: bytes = channel.unary_unary(f"/{SERVICE}/Echo")(b"hi", timeout=timeout)
    return reply


def _health(channel: grpc.Channel) -> int:
    reply = health_pb2_grpc.HealthStub(channel).Check(
        health_pb2.HealthCheckRequest(service=SERVICE), timeout=5
    )
    return int(reply.status)


def test_mtls_accepts_a_client_of_the_ca_and_refuses_every_other(
    ca: TestCA, tls_dir: Path, tmp_path: Path
) -> None:
    tls = security.load_tls(directory=tls_dir)
    assert tls is not None
    stranger = TestCA(tmp_path / "other-ca", name="another CA")
    foreign = stranger.issue(tmp_path / "other", "intruder")
    foreign_pem = (foreign.key.read_bytes(), foreign.cert.read_bytes())
    with _server(tls=tls) as server:
        with make_channel(server.address, tls=tls) as channel:
            assert _echo_call(channel) == b"hi"
        refused = {
            "plaintext": grpc.insecure_channel(server.address),
            "no client certificate": grpc.secure_channel(
                server.address, grpc.ssl_channel_credentials(root_certificates=tls.ca_pem)
            ),
            "a certificate of another CA": grpc.secure_channel(
                server.address,
                grpc.ssl_channel_credentials(
                    tls.ca_pem, private_key=foreign_pem[0], certificate_chain=foreign_pem[1]
                ),
            ),
        }
        for case, channel in refused.items():
            with channel, pytest.raises(grpc.RpcError) as failed:
                _echo_call(channel, timeout=3)
            assert failed.value.code() == grpc.StatusCode.UNAVAILABLE, case


def test_a_client_refuses_a_server_of_another_ca(ca: TestCA, tls_dir: Path, tmp_path: Path) -> None:
    stranger = TestCA(tmp_path / "other-ca", name="another CA")
    server_tls = security.load_tls(directory=stranger.tls_dir(tmp_path / "server"))
    client_tls = security.load_tls(directory=tls_dir)
    with _server(tls=server_tls) as server, make_channel(server.address, tls=client_tls) as channel:
        with pytest.raises(grpc.RpcError) as failed:
            _echo_call(channel, timeout=3)
        assert failed.value.code() == grpc.StatusCode.UNAVAILABLE


def test_the_server_name_override_checks_that_name(tls_dir: Path) -> None:
    """Clients dial pod IPs in Kubernetes: --tls-server-name is the name checked in the certificate."""
    with _server(tls=security.load_tls(directory=tls_dir)) as server:
        right = security.load_tls(directory=tls_dir, server_name="facenas")
        with make_channel(server.address, tls=right) as channel:
            assert _echo_call(channel) == b"hi"
        wrong = security.load_tls(directory=tls_dir, server_name="someone-else")
        with make_channel(server.address, tls=wrong) as channel, pytest.raises(grpc.RpcError):
            _echo_call(channel, timeout=3)


def test_make_channel_uses_the_process_tls_then_the_environment(
    tls_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with _server(tls=security.load_tls(directory=tls_dir)) as server:
        monkeypatch.setenv(security.ENV_DIR, str(tls_dir))
        with make_channel(server.address) as channel:
            assert _echo_call(channel) == b"hi"
        security.use_client_tls(None)  # a service started without --tls-*: its flags win over the env
        with make_channel(server.address) as channel, pytest.raises(grpc.RpcError):
            _echo_call(channel, timeout=3)
        security.use_client_tls(security.load_tls(directory=tls_dir))
        monkeypatch.delenv(security.ENV_DIR)
        with make_channel(server.address) as channel:
            assert _echo_call(channel) == b"hi"
        assert security.client_tls_env()[security.ENV_CERT] == str(tls_dir / "tls.crt")


def test_the_token_guards_its_services_only() -> None:
    auth = security.TokenAuth(TOKEN, [SERVICE])
    with _server(interceptors=[auth]) as server:
        with make_channel(server.address) as channel:
            with pytest.raises(grpc.RpcError) as missing:
                _echo_call(channel)
            assert missing.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert "requires an API token" in str(missing.value.details())
            assert "FACENAS_API_TOKEN" in str(missing.value.details())
            assert isinstance(error_from_rpc(missing.value), Unauthenticated)
            # health stays open (Kubernetes probes) and reflection too
            assert _health(channel) == health_pb2.HealthCheckResponse.SERVING
        with make_channel(server.address, token=TOKEN + "x") as channel:
            with pytest.raises(grpc.RpcError) as wrong:
                _echo_call(channel)
            assert wrong.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert "wrong" in str(wrong.value.details())
            with pytest.raises(Unauthenticated):  # not retried: call() raises at once
                call(channel.unary_unary(f"/{SERVICE}/Echo"), b"hi", timeout=5)
        with make_channel(server.address, token=TOKEN) as channel:
            assert _echo_call(channel) == b"hi"
            assert list(channel.unary_stream(f"/{SERVICE}/Stream")(b"x", timeout=5)) == [b"x", b"x"]
        with make_channel(server.address, token=TOKEN[:-1]) as channel, pytest.raises(grpc.RpcError) as cut:
            list(channel.unary_stream(f"/{SERVICE}/Stream")(b"x", timeout=5))
        assert cut.value.code() == grpc.StatusCode.UNAUTHENTICATED
        # the scheme is case-insensitive (RFC 7235); raw metadata works without the facenas client
        with grpc.insecure_channel(server.address) as channel:
            method = channel.unary_unary(f"/{SERVICE}/Echo")
            assert method(b"hi", timeout=5, metadata=[("authorization", f"bearer {TOKEN}")]) == b"hi"


def test_reflection_can_be_turned_off() -> None:
    def services(server: RunningServer) -> list[str] | grpc.StatusCode:
        with make_channel(server.address) as channel:
            stub = reflection_pb2_grpc.ServerReflectionStub(channel)
            request = reflection_pb2.ServerReflectionRequest(list_services="")
            try:
                replies = list(stub.ServerReflectionInfo(iter([request]), timeout=5))
            except grpc.RpcError as err:
                return err.code()
            return [s.name for s in replies[0].list_services_response.service]

    with _server() as server:
        assert SERVICE in services(server)
    with _server(reflection=False) as server:
        assert services(server) == grpc.StatusCode.UNIMPLEMENTED


def test_the_cli_reports_bad_security_options_at_once(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from facenas.cli.main import app

    argv = ["search", "--api-token", "short", "--tls-cert", str(tmp_path / "absent.crt"), "list"]
    result = CliRunner().invoke(app, argv)
    assert result.exit_code == 2
    for problem in ("at least 16", "--tls-cert: cannot read", "--tls-key: missing", "--tls-ca: missing"):
        assert problem in result.output, result.output


def test_the_cli_sends_its_token_over_the_process_tls(tls_dir: Path) -> None:
    from typer.testing import CliRunner

    from facenas.cli.main import app
    from facenas.v1 import searcher_pb2

    seen: list[str] = []

    def list_searches(request: bytes, context: grpc.ServicerContext) -> bytes:
        seen.extend(v for k, v in context.invocation_metadata() if k == "authorization")
        return searcher_pb2.ListSearchesReply().SerializeToString()

    def add(_servicer: object, server: grpc.Server) -> None:
        handler = grpc.unary_unary_rpc_method_handler(list_searches)
        generic = grpc.method_handlers_generic_handler("facenas.v1.Searcher", {"ListSearches": handler})
        server.add_generic_rpc_handlers((generic,))

    tls = security.load_tls(directory=tls_dir)
    config = ServerConfig(
        metrics_port=None, tls=tls, interceptors=[security.TokenAuth(TOKEN, ["facenas.v1.Searcher"])]
    )
    server = start([(add, None, "facenas.v1.Searcher")], config)
    try:
        argv = [
            "search",
            "--tls-dir",
            str(tls_dir),
            "--api-token",
            TOKEN,
            "list",
            "--searcher",
            server.address,
        ]
        result = CliRunner().invoke(app, [*argv, "--json"])
        assert result.exit_code == 0, result.output
        assert seen == [f"Bearer {TOKEN}"]
        refused = CliRunner().invoke(
            app, ["search", "--tls-dir", str(tls_dir), "list", "--searcher", server.address]
        )
        assert refused.exit_code == 2 and "requires an API token" in refused.output
    finally:
        server.stop(0)
