"""Run facenas services as local processes on free loopback ports (the demo, tests and benches).

Each service is started as ``python -m services.<name> --port 0 --ready-file F``; the launcher waits
until the ready file names its ports and gRPC health says SERVING. Logs go to ``<workdir>/<name>.log``.
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
from grpc_health.v1 import health_pb2, health_pb2_grpc

from facenas.errors import Unavailable


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
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

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
        self.env = {**os.environ, **(env or {})}
        self.env.setdefault("PYTHONUNBUFFERED", "1")
        self.processes: dict[str, ServiceProcess] = {}

    def start(
        self, service: str, args: Sequence[str] = (), name: str | None = None, timeout: float = 120.0
    ) -> ServiceProcess:
        """Start ``services.<service>`` and wait until it serves."""
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
        _wait_serving(started.address, deadline)
        self.processes[name] = started
        return started

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


def _wait_serving(address: str, deadline: float) -> None:
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            try:
                status = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=2).status
                if status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            if time.monotonic() > deadline:
                raise Unavailable(f"{address} is not SERVING")
            time.sleep(0.05)


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""
