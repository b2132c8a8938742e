"""Security options of every facenas process: mutual TLS, the searcher's API token, reflection.

**mTLS** (off unless configured). One certificate, key and CA per process, from files: ``--tls-cert``,
``--tls-key``, ``--tls-ca``, or ``--tls-dir`` holding ``tls.crt``, ``tls.key`` and ``ca.crt`` (a Kubernetes
TLS Secret as mounted); each also reads ``FACENAS_TLS_<FLAG>``. A server then accepts only clients that
present a certificate signed by the CA, and every channel the process opens (:func:`make_channel
<facenas.rpc.client.make_channel>`) presents the process's certificate and verifies the server's against
the CA. ``--tls-server-name`` (``FACENAS_TLS_SERVER_NAME``) is the name clients expect in servers'
certificates instead of the host they dial (needed when replicas are dialled by pod IP). Half a
configuration (a certificate without its key, an unreadable file, a key that is not the certificate's)
is a :class:`~facenas.errors.ConfigError` listing every problem.

**API token** (the searcher). With ``--api-token``/``FACENAS_API_TOKEN`` or ``--api-token-file``/
``FACENAS_API_TOKEN_FILE`` set, every call of the guarded services must carry ``authorization: Bearer
<token>`` metadata (:class:`TokenAuth`); gRPC health and reflection stay open (Kubernetes probes).

**Reflection**: ``--no-reflection`` / ``FACENAS_REFLECTION=0`` turns it off.

Certificates and tokens are read at start-up: restart a process after rotating them.
"""

from __future__ import annotations

import argparse
import hmac
import logging
import os
import ssl
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from facenas.errors import ConfigError

log = logging.getLogger(__name__)

ENV_CERT = "FACENAS_TLS_CERT"
ENV_KEY = "FACENAS_TLS_KEY"
ENV_CA = "FACENAS_TLS_CA"
ENV_DIR = "FACENAS_TLS_DIR"
ENV_SERVER_NAME = "FACENAS_TLS_SERVER_NAME"
ENV_TOKEN = "FACENAS_API_TOKEN"
ENV_TOKEN_FILE = "FACENAS_API_TOKEN_FILE"
ENV_REFLECTION = "FACENAS_REFLECTION"

#: file names in a ``--tls-dir`` (what a Kubernetes TLS Secret with a CA mounts)
DIR_CERT, DIR_KEY, DIR_CA = "tls.crt", "tls.key", "ca.crt"
MIN_TOKEN_CHARS = 16
_MAX_FILE_BYTES = 1 << 20
_FALSE = ("0", "false", "no", "off")
_TRUE = ("1", "true", "yes", "on")


@dataclass(frozen=True)
class TlsConfig:
    """A process's certificate chain, private key and CA bundle (PEM), and the files they came from."""

    cert_pem: bytes
    key_pem: bytes
    ca_pem: bytes
    cert_path: Path
    key_path: Path
    ca_path: Path
    server_name: str = ""  # the name clients expect in server certificates ("" = the host dialled)

    def __repr__(self) -> str:  # never print the key
        return f"TlsConfig(cert={self.cert_path}, key={self.key_path}, ca={self.ca_path})"

    def server_credentials(self) -> grpc.ServerCredentials:
        """Serve with this certificate and require a client certificate signed by the CA."""
        return grpc.ssl_server_credentials(
            [(self.key_pem, self.cert_pem)], root_certificates=self.ca_pem, require_client_auth=True
        )

    def channel_credentials(self) -> grpc.ChannelCredentials:
        """Present this certificate and verify the server's against the CA."""
        return grpc.ssl_channel_credentials(
            root_certificates=self.ca_pem, private_key=self.key_pem, certificate_chain=self.cert_pem
        )

    def channel_options(self) -> list[tuple[str, str]]:
        return [("grpc.ssl_target_name_override", self.server_name)] if self.server_name else []

    def env(self) -> dict[str, str]:
        """The ``FACENAS_TLS_*`` variables that give a child process this configuration."""
        out = {ENV_CERT: str(self.cert_path), ENV_KEY: str(self.key_path), ENV_CA: str(self.ca_path)}
        if self.server_name:
            out[ENV_SERVER_NAME] = self.server_name
        return out


def load_tls(
    cert: str | Path | None = None,
    key: str | Path | None = None,
    ca: str | Path | None = None,
    directory: str | Path | None = None,
    server_name: str | None = None,
) -> TlsConfig | None:
    """The TLS configuration these files give, ``None`` when none is named (TLS off).

    ``directory`` supplies ``tls.crt``, ``tls.key`` and ``ca.crt`` for the files not named explicitly.
    Raises :class:`ConfigError` listing every problem (a missing or unreadable file, a file that is
    not PEM, a key that does not match the certificate).
    """
    named = {"--tls-cert": _path(cert), "--tls-key": _path(key), "--tls-ca": _path(ca)}
    folder = _path(directory)
    if folder is None and not any(named.values()):
        if server_name:
            raise ConfigError([f"--tls-server-name: {server_name!r} is set but TLS is not (no --tls-*)"])
        return None
    problems: list[str] = []
    if folder is not None:
        if not folder.is_dir():
            problems.append(f"--tls-dir: {folder} is not a readable directory")
        for flag, name in (("--tls-cert", DIR_CERT), ("--tls-key", DIR_KEY), ("--tls-ca", DIR_CA)):
            named[flag] = named[flag] or folder / name
    pems: dict[str, bytes] = {}
    for flag, path in named.items():
        if path is None:
            problems.append(f"{flag}: missing (mTLS needs a certificate, its key and the CA; or --tls-dir)")
            continue
        pem = _read(flag, path, problems)
        if pem is None:
            continue
        marker = b"PRIVATE KEY-----" if flag == "--tls-key" else b"-----BEGIN CERTIFICATE-----"
        if marker not in pem:
            what = "a PEM private key" if flag == "--tls-key" else "PEM certificates"
            problems.append(f"{flag}: {path} does not hold {what}")
            continue
        pems[flag] = pem
    if "--tls-cert" in pems and "--tls-key" in pems:
        _check_pair(named["--tls-cert"], named["--tls-key"], problems)
    if "--tls-ca" in pems:
        _check_ca(named["--tls-ca"], problems)
    if server_name is not None and server_name != server_name.strip():
        problems.append(f"--tls-server-name: {server_name!r} has surrounding spaces")
    if problems:
        raise ConfigError(problems)
    cert_path, key_path, ca_path = named["--tls-cert"], named["--tls-key"], named["--tls-ca"]
    assert cert_path and key_path and ca_path  # a missing one is a problem above
    return TlsConfig(
        pems["--tls-cert"],
        pems["--tls-key"],
        pems["--tls-ca"],
        cert_path,
        key_path,
        ca_path,
        server_name or "",
    )


def tls_from_env(environ: Mapping[str, str] | None = None) -> TlsConfig | None:
    """:func:`load_tls` of the ``FACENAS_TLS_*`` variables (of ``os.environ`` by default)."""
    environ = os.environ if environ is None else environ
    return load_tls(
        environ.get(ENV_CERT),
        environ.get(ENV_KEY),
        environ.get(ENV_CA),
        environ.get(ENV_DIR),
        environ.get(ENV_SERVER_NAME) or None,
    )


def _path(value: str | Path | None) -> Path | None:
    if value is None or not str(value).strip():
        return None
    return Path(value).expanduser()


def _read(flag: str, path: Path, problems: list[str]) -> bytes | None:
    try:
        if path.stat().st_size > _MAX_FILE_BYTES:
            problems.append(f"{flag}: {path} is larger than {_MAX_FILE_BYTES} bytes")
            return None
        return path.read_bytes()
    except OSError as err:
        problems.append(f"{flag}: cannot read {path}: {err.strerror or err}")
        return None


def _check_pair(cert: Path | None, key: Path | None, problems: list[str]) -> None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        # the password callback is asked only for an encrypted key, which gRPC cannot use
        context.load_cert_chain(str(cert), str(key), password=_no_password)
    except (ssl.SSLError, OSError, ValueError) as err:
        problems.append(f"--tls-key: {key} is not the private key of --tls-cert {cert} ({err})")


def _no_password() -> bytes:
    raise ValueError("the private key is encrypted; give an unencrypted key")


def _check_ca(ca: Path | None, problems: list[str]) -> None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        context.load_verify_locations(cafile=str(ca))
    except (ssl.SSLError, OSError) as err:
        problems.append(f"--tls-ca: {ca} is not a usable CA bundle: {err}")


# --- the process's client configuration ---------------------------------------------------------------

_UNSET = object()
_client_tls: Any = _UNSET


def use_client_tls(tls: TlsConfig | None) -> None:
    """Make ``tls`` what this process's channels use (a service's ``--tls-*`` flags, the CLI's)."""
    global _client_tls
    _client_tls = tls


def client_tls() -> TlsConfig | None:
    """The TLS of this process's channels: what :func:`use_client_tls` set, else ``FACENAS_TLS_*``."""
    if _client_tls is _UNSET:
        return tls_from_env()
    configured: TlsConfig | None = _client_tls
    return configured


def client_tls_env() -> dict[str, str]:
    """``FACENAS_TLS_*`` for child processes that must share this process's configured TLS."""
    tls = None if _client_tls is _UNSET else _client_tls
    return tls.env() if isinstance(tls, TlsConfig) else {}


def secure_or_insecure_channel(
    target: str, options: Sequence[tuple[str, Any]], tls: TlsConfig | None
) -> grpc.Channel:
    """A channel to ``target``: mTLS with ``tls``, plaintext without."""
    if tls is None:
        return grpc.insecure_channel(target, options=list(options))
    return grpc.secure_channel(target, tls.channel_credentials(), options=[*options, *tls.channel_options()])


def add_port(server: grpc.Server, address: str, tls: TlsConfig | None) -> int:
    """Listen on ``address`` with mTLS when ``tls`` is set; the port bound (0 = failed)."""
    if tls is None:
        return int(server.add_insecure_port(address))
    return int(server.add_secure_port(address, tls.server_credentials()))


# --- the API token ------------------------------------------------------------------------------------


def load_token(token: str | None = None, token_file: str | Path | None = None) -> str | None:
    """The API token given inline or in a file (one line), ``None`` when neither is set.

    Raises :class:`ConfigError` when both are set, the file cannot be read, or the token is shorter
    than 16 characters or holds characters that cannot travel in gRPC metadata.
    """
    token = (token or "").strip() or None
    path = _path(token_file)
    problems: list[str] = []
    if token and path:
        problems.append("--api-token and --api-token-file are both set; give one")
    elif path:
        text = _read("--api-token-file", path, problems)
        token = text.decode("utf-8", errors="replace").strip() if text is not None else None
        if text is not None and not token:
            problems.append(f"--api-token-file: {path} is empty")
    if token and not problems:
        if len(token) < MIN_TOKEN_CHARS:
            problems.append(f"API token: {len(token)} characters; use at least {MIN_TOKEN_CHARS}")
        if not all(33 <= ord(c) <= 126 for c in token):
            problems.append("API token: only printable ASCII without spaces can travel in metadata")
    if problems:
        raise ConfigError(problems)
    return token


def token_from_env(environ: Mapping[str, str] | None = None) -> str | None:
    """:func:`load_token` of ``FACENAS_API_TOKEN`` / ``FACENAS_API_TOKEN_FILE``."""
    environ = os.environ if environ is None else environ
    return load_token(environ.get(ENV_TOKEN), environ.get(ENV_TOKEN_FILE))


class TokenAuth(grpc.ServerInterceptor):  # type: ignore[type-arg]
    """Refuses calls to ``services`` that lack ``authorization: Bearer <token>`` with UNAUTHENTICATED.

    Calls to other services (health, reflection) pass untouched. Tokens are compared in constant time.
    """

    def __init__(self, token: str, services: Sequence[str]) -> None:
        self._expected = token.encode()
        self._services = frozenset(services)

    def intercept_service(self, continuation: Any, details: Any) -> Any:
        service = details.method.lstrip("/").rpartition("/")[0]
        if service not in self._services:
            return continuation(details)
        given = [v for k, v in details.invocation_metadata or () if k == "authorization"]
        if len(given) == 1:
            value = given[0] if isinstance(given[0], str) else bytes(given[0]).decode("latin-1")
            scheme, _, token = value.strip().partition(" ")
            if scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), self._expected):
                return continuation(details)
            problem = "the API token is wrong"
        else:
            problem = "this server requires an API token"
        handler = continuation(details)
        if handler is None:
            return None
        return _refusal(handler, problem, details.method)


_HINT = (
    ": send gRPC metadata 'authorization: Bearer <token>' (the facenas CLI sends FACENAS_API_TOKEN, "
    "FACENAS_API_TOKEN_FILE or `facenas search --api-token`)"
)


def _refusal(handler: Any, problem: str, method: str) -> Any:
    def deny(_request: Any, context: grpc.ServicerContext) -> Any:
        log.warning("unauthenticated call refused", extra={"grpc_method": method, "peer": context.peer()})
        context.abort(grpc.StatusCode.UNAUTHENTICATED, problem + _HINT)

    make: Callable[..., Any]
    if handler.unary_unary is not None:
        make = grpc.unary_unary_rpc_method_handler
    elif handler.unary_stream is not None:
        make = grpc.unary_stream_rpc_method_handler
    elif handler.stream_unary is not None:
        make = grpc.stream_unary_rpc_method_handler
    else:
        make = grpc.stream_stream_rpc_method_handler
    return make(
        deny,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


class _BearerToken(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor):  # type: ignore[type-arg]
    """Adds ``authorization: Bearer <token>`` to every call of a channel."""

    def __init__(self, token: str) -> None:
        self._header = ("authorization", f"Bearer {token}")

    def _details(self, details: Any) -> Any:
        metadata = [*(details.metadata or ()), self._header]
        return _CallDetails(
            details.method,
            details.timeout,
            metadata,
            details.credentials,
            details.wait_for_ready,
            details.compression,
        )

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)

    def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)


class _CallDetails(grpc.ClientCallDetails):
    def __init__(
        self,
        method: str,
        timeout: Any,
        metadata: Any,
        credentials: Any,
        wait_for_ready: Any,
        compression: Any,
    ) -> None:
        self.method = method
        self.timeout = timeout
        self.metadata = metadata
        self.credentials = credentials
        self.wait_for_ready = wait_for_ready
        self.compression = compression


def with_token(channel: grpc.Channel, token: str | None) -> grpc.Channel:
    """``channel`` sending ``token`` as a bearer token on every call (unchanged when ``None``)."""
    return grpc.intercept_channel(channel, _BearerToken(token)) if token else channel


# --- flags --------------------------------------------------------------------------------------------


def _env(name: str) -> str | None:
    return os.environ.get(name) or None


def add_tls_flags(parser: argparse.ArgumentParser) -> None:
    """``--tls-cert/--tls-key/--tls-ca/--tls-dir/--tls-server-name`` (defaults: ``FACENAS_TLS_*``)."""
    group = parser.add_argument_group("security (mTLS off unless --tls-* or FACENAS_TLS_* are set)")
    group.add_argument("--tls-cert", default=_env(ENV_CERT), help="PEM certificate chain of this process")
    group.add_argument("--tls-key", default=_env(ENV_KEY), help="its PEM private key (unencrypted)")
    group.add_argument("--tls-ca", default=_env(ENV_CA), help="PEM CA bundle that signs peers' certificates")
    group.add_argument("--tls-dir", default=_env(ENV_DIR), help="a directory with tls.crt, tls.key, ca.crt")
    group.add_argument(
        "--tls-server-name",
        default=_env(ENV_SERVER_NAME),
        help="the name clients expect in servers' certificates (default: the host dialled)",
    )


def add_reflection_flag(parser: argparse.ArgumentParser) -> None:
    """``--[no-]reflection`` (default on; ``FACENAS_REFLECTION=0`` turns it off)."""
    parser.add_argument(
        "--reflection",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="serve gRPC reflection (default on; FACENAS_REFLECTION=0 turns it off)",
    )


def add_token_flags(parser: argparse.ArgumentParser) -> None:
    """``--api-token`` / ``--api-token-file``: the bearer token this server's API requires."""
    group = parser.add_argument_group("API token (off unless set)")
    group.add_argument(
        "--api-token", default=_env(ENV_TOKEN), help="require this bearer token (prefer the file)"
    )
    group.add_argument(
        "--api-token-file", default=_env(ENV_TOKEN_FILE), help="require the bearer token in this file"
    )


@dataclass(frozen=True)
class ServerSecurity:
    """What :func:`server_security` resolved from a server's flags."""

    tls: TlsConfig | None
    reflection: bool
    interceptors: tuple[grpc.ServerInterceptor, ...]  # type: ignore[type-arg]
    token: bool

    def describe(self) -> dict[str, Any]:
        """The posture, for the start-up log line."""
        return {"tls": self.tls is not None, "api_token": self.token, "reflection": self.reflection}


def server_security(args: argparse.Namespace, guarded: Sequence[str] = ()) -> ServerSecurity:
    """Resolve the flags of :func:`add_tls_flags`, :func:`add_reflection_flag` and, for ``guarded``
    services, :func:`add_token_flags`.

    Raises :class:`ConfigError` with every problem of every option.
    """
    problems: list[str] = []
    tls = None
    try:
        tls = load_tls(args.tls_cert, args.tls_key, args.tls_ca, args.tls_dir, args.tls_server_name)
    except ConfigError as err:
        problems += err.problems
    reflection = args.reflection
    if reflection is None:
        text = os.environ.get(ENV_REFLECTION, "").strip().lower()
        reflection = text not in _FALSE
        if text and text not in _FALSE + _TRUE:
            problems.append(f"{ENV_REFLECTION}: {text!r} must be one of {', '.join(_TRUE + _FALSE)}")
    token = None
    if guarded:
        try:
            token = load_token(args.api_token, args.api_token_file)
        except ConfigError as err:
            problems += err.problems
    if problems:
        raise ConfigError(problems)
    interceptors = (TokenAuth(token, guarded),) if token else ()
    return ServerSecurity(tls, reflection, interceptors, token is not None)
