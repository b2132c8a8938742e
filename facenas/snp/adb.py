"""Android Debug Bridge: listing boards, reading their properties, moving files, running commands.

A failure that means the board is gone (unplugged, offline, unauthorised, the connection closed, or
adb not answering in time) raises :class:`DeviceLost`, so the caller can move the job elsewhere; any
other failure of a command on the board raises :class:`~facenas.snp.process.ToolError`.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from facenas.errors import MeasurementError, Unavailable
from facenas.snp.process import ToolError, ToolResult, ToolTimeout, run_tool

CheckAlive = Callable[[], None]

#: adb's own messages when the connection to a board is gone (not the remote command's failure).
_LOST = re.compile(
    r"device '?[\w.:-]*'? not found|device offline|device unauthorized|no devices/emulators found"
    r"|error: closed|protocol fault|connection reset|device still authorizing|failed to connect",
    re.IGNORECASE,
)
_PROP = re.compile(r"^\[([^\]]+)\]:\s*\[(.*)\]\s*$")


class DeviceLost(Unavailable):
    """The board stopped answering; ``serial`` names it."""

    def __init__(self, serial: str, reason: str) -> None:
        self.serial = serial
        self.reason = reason
        super().__init__(f"board {serial} was lost: {reason}")


@dataclass(frozen=True)
class AttachedDevice:
    """One line of ``adb devices``."""

    serial: str
    state: str  # "device" (usable), "offline", "unauthorized", ...


class Adb:
    """The ``adb`` client; every call is bounded by ``timeout_s`` (pushes by ``transfer_timeout_s``)."""

    def __init__(self, executable: str = "adb", timeout_s: float = 60.0, transfer_timeout_s: float = 600.0):
        self.executable = executable
        self.timeout_s = timeout_s
        self.transfer_timeout_s = transfer_timeout_s

    def devices(self) -> list[AttachedDevice]:
        """Boards adb knows of, whatever their state; Unavailable if adb itself fails."""
        try:
            result = run_tool([self.executable, "devices"], self.timeout_s)
        except MeasurementError as err:  # not installed, or not answering
            raise Unavailable(f"adb devices failed: {err}") from err
        if result.returncode != 0:
            raise Unavailable(f"adb devices failed (exit {result.returncode}): {result.output_tail}")
        return parse_devices(result.stdout)

    def properties(self, serial: str) -> dict[str, str]:
        """All of the board's system properties (``getprop``)."""
        result = self._call(serial, ["shell", "getprop"], self.timeout_s)
        return parse_getprop(result.stdout)

    def push(self, serial: str, local: Path, remote: str, check_alive: CheckAlive | None = None) -> None:
        """Copy a local file to a path on the board."""
        self._call(serial, ["push", str(local), remote], self.transfer_timeout_s, check_alive)

    def pull(self, serial: str, remote: str, local: Path, check_alive: CheckAlive | None = None) -> None:
        """Copy a file from the board."""
        self._call(serial, ["pull", remote, str(local)], self.transfer_timeout_s, check_alive)

    def shell(
        self, serial: str, command: str, timeout_s: float | None = None, check_alive: CheckAlive | None = None
    ) -> ToolResult:
        """Run ``command`` (a shell string) on the board; ToolError if it exits non-zero."""
        return self._call(serial, ["shell", command], timeout_s or self.timeout_s, check_alive)

    def _call(
        self, serial: str, args: list[str], timeout_s: float, check_alive: CheckAlive | None = None
    ) -> ToolResult:
        argv = [self.executable, "-s", serial, *args]
        try:
            result = run_tool(argv, timeout_s, check_alive)
        except ToolTimeout as err:
            raise DeviceLost(serial, f"adb {args[0]} did not answer within {timeout_s:g} s") from err
        if result.returncode == 0:
            return result
        if _LOST.search(result.stderr + "\n" + result.stdout) or not self._present(serial):
            raise DeviceLost(serial, f"adb {args[0]} failed: {result.output_tail}")
        command = shlex.join(args)[:300]
        raise ToolError(
            f"on board {serial}, `{command}` exited {result.returncode}: {result.output_tail}", result
        )

    def _present(self, serial: str) -> bool:
        """Whether the board is still listed as usable (after a failed command)."""
        try:
            return any(d.serial == serial and d.state == "device" for d in self.devices())
        except Unavailable:
            return False


def parse_devices(text: str) -> list[AttachedDevice]:
    """Parse ``adb devices`` (``<serial>\\t<state>`` after the header line)."""
    found = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 2 and not line.startswith(("List of devices", "*")):
            found.append(AttachedDevice(parts[0], parts[1]))
    return found


def parse_getprop(text: str) -> dict[str, str]:
    """Parse ``getprop``'s ``[key]: [value]`` lines."""
    props = {}
    for line in text.splitlines():
        match = _PROP.match(line.strip())
        if match:
            props[match.group(1)] = match.group(2)
    return props
