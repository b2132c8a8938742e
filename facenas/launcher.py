"""Run facenas services as local processes on free loopback ports (the demo, tests and benches).

Each service is started as ``python -m services.<name> --port 0 --ready-file F``; the launcher waits
until the ready file names its ports and gRPC health says SERVING. A service that answers NOT_SERVING
(a dependency is missing: its dataset, database, boards...) for ``not_serving_s`` seconds is stopped and
reported with the reason it gives. Logs go to ``<workdir>/<name>.log``.
The processes share a quiet gate (``FACENAS_QUIET_LOCK``, default ``<workdir>/quiet.lock``): CPU latency
measurements pause training steps on this host instead of timing next to them. The cluster's TLS is
``FACENAS_TLS_*`` of its environment (or the TLS this process was configured with, passed on to the
services): the services serve mTLS and the health checks here dial with it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import grpc

from facenas.errors import Unavailable
from facenas.hostgate import ENV as QUIET_LOCK_ENV
from facenas.rpc import security
from facenas.rpc.client import make_channel
from facenas.rpc.health import wait_serving

#: How long a starting service may answer NOT_SERVING before the launcher gives up on it.
NOT_SERVING_S = 15.0


@dataclass
class ServiceProcess:
    """A started service process."""

    name: str
    service: str
    proc: subprocess.Popen[bytes]
    port: int
    metrics_port: int | None
    log_path: Path
    args: list[str] = field(default_factory=list)

    @property
    def host(self) -> str:
        """The listen address its ``--host`` argument gave (127.0.0.1 by default)."""
        hosts = [self.args[i + 1] for i, a in enumerate(self.args[:-1]) if a == "--host"]
        return hosts[-1] if hosts else "127.0.0.1"

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL: no drain, no goodbye (for failure tests)."""
        if self.alive:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=30)

    def terminate(self, grace: float = 15.0) -> int | None:
        """SIGTERM and wait for the graceful drain, then SIGKILL."""
        if self.alive:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.proc.returncode


class LocalCluster:
    """Starts and stops service processes; a context manager that always stops what it started."""

    def __init__(self, workdir: str | Path, env: dict[str, str] | None = None) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.env = {**os.environ, **security.client_tls_env(), **(env or {})}
        self.env.setdefault("PYTHONUNBUFFERED", "1")
        #: what the services serve and every channel to them needs (None = plaintext)
        self.tls = security.tls_from_env(self.env)
        # one quiet gate for the processes of this run: CPU latency is never measured during a training step
        self.env.setdefault(QUIET_LOCK_ENV, str(self.workdir / "quiet.lock"))
        self.processes: dict[str, ServiceProcess] = {}

    def start(
        self,
        service: str,
        args: Sequence[str] = (),
        name: str | None = None,
        timeout: float = 120.0,
        require_serving: bool = True,
        not_serving_s: float = NOT_SERVING_S,
    ) -> ServiceProcess:
        """Start ``services.<service>`` and wait until it serves: its health SERVING, or with
        ``require_serving=False`` any health answer. Unavailable names the service and why it is not
        serving (the process is stopped then)."""
        name = name or service
        if name in self.processes and self.processes[name].alive:
            raise ValueError(f"{name} is already running")
        ready = self.workdir / f"{name}.ready"
        ready.unlink(missing_ok=True)
        log_path = self.workdir / f"{name}.log"
        argv = [sys.executable, "-m", f"services.{service}", "--port", "0", "--ready-file", str(ready), *args]
        with log_path.open("ab") as log:
            proc = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, env=self.env, cwd=self.workdir
            )
        deadline = time.monotonic() + timeout
        while not ready.exists():
            if proc.poll() is not None:
                raise Unavailable(
                    f"{name} exited with {proc.returncode} at start-up; see {log_path}:\n{_tail(log_path)}"
                )
            if time.monotonic() > deadline:
                proc.kill()
                raise Unavailable(f"{name} did not start within {timeout:.0f} s; see {log_path}")
            time.sleep(0.05)
        info = json.loads(ready.read_text())
        started = ServiceProcess(
            name, service, proc, int(info["port"]), info.get("metrics_port"), log_path, list(args)
        )
        try:
            _wait_serving(started.address, deadline, name, require_serving, not_serving_s, self.tls)
        except Unavailable as err:
            started.terminate()
            raise Unavailable(f"{err}; see {log_path}") from None
        self.processes[name] = started
        return started

    def channel(self, address: str, token: str | None = None) -> grpc.Channel:
        """A channel to a service of this cluster: its TLS, and ``token`` as the bearer token."""
        return make_channel(address, tls=self.tls, token=token)

    def restart(self, name: str, timeout: float = 120.0) -> ServiceProcess:
        """Start a stopped (or killed) process again with the same arguments, on a new port."""
        old = self.processes[name]
        old.terminate()
        return self.start(old.service, old.args, name, timeout)

    def stop_all(self, grace: float = 15.0) -> None:
        """Stop in reverse start order (the searcher before its workers and store)."""
        for process in reversed(list(self.processes.values())):
            process.terminate(grace)

    def __enter__(self) -> LocalCluster:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, err: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop_all()


def _wait_serving(
    address: str,
    deadline: float,
    name: str,
    serving: bool,
    not_serving_s: float,
    tls: security.TlsConfig | None,
) -> None:
    with make_channel(address, tls=tls) as channel:
        wait_serving(channel, deadline, not_serving_s, f"{name} at {address}", any_answer=not serving)


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""
