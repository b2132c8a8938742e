"""Running the SDK's and adb's command-line tools: bounded in time, cancellable, never left behind.

Every tool runs in its own process group with a timeout; on timeout or cancellation the whole group is
killed (adb's ``shell`` starts children of its own, whose open pipes would otherwise keep a plain
``subprocess.run`` waiting after the timeout).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from facenas.errors import MeasurementError

#: How often a running tool's caller is asked whether to go on.
POLL_S = 0.5
#: Characters of a tool's output quoted in error messages.
TAIL = 1500


@dataclass(frozen=True)
class ToolResult:
    """What a finished tool printed and returned."""

    args: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def output_tail(self) -> str:
        """The end of stderr (or stdout when stderr is empty), for error messages."""
        text = (self.stderr.strip() or self.stdout.strip())[-TAIL:]
        return text or "(no output)"


class ToolError(MeasurementError):
    """A tool exited with an error; ``result`` has its output."""

    def __init__(self, message: str, result: ToolResult) -> None:
        self.result = result
        super().__init__(message)


class ToolTimeout(MeasurementError):  # noqa: N818 - reads as what happened
    """A tool ran past its time limit and was killed."""

    def __init__(self, args: Sequence[str], timeout_s: float) -> None:
        self.args_ = tuple(args)
        self.timeout_s = timeout_s
        super().__init__(f"{Path(args[0]).name} did not finish within {timeout_s:g} s and was killed")


def run_tool(
    args: Sequence[str],
    timeout_s: float,
    check_alive: Callable[[], None] | None = None,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    stdin: str | None = None,
) -> ToolResult:
    """Run ``args`` (fed ``stdin`` when given); return its result whatever the exit status.

    Raises ToolTimeout after ``timeout_s``, MeasurementError when the executable cannot be started, and
    whatever ``check_alive`` raises (the tool is killed first).
    """
    began = time.monotonic()
    try:
        proc = subprocess.Popen(
            list(args),
            stdin=subprocess.DEVNULL if stdin is None else subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            errors="replace",
            cwd=cwd,
            env=dict(env) if env is not None else None,
            start_new_session=True,
        )
    except OSError as err:
        raise MeasurementError(f"cannot run {args[0]}: {err}") from err
    feed = stdin
    try:
        while True:
            left = timeout_s - (time.monotonic() - began)
            if left <= 0:
                raise ToolTimeout(args, timeout_s)
            try:
                stdout, stderr = proc.communicate(feed, timeout=min(POLL_S, left))
                break
            except subprocess.TimeoutExpired:
                feed = None  # sent once; later calls only collect output
                if check_alive is not None:
                    check_alive()
    except BaseException:
        _kill_group(proc)
        raise
    return ToolResult(tuple(args), proc.returncode, stdout, stderr, time.monotonic() - began)


def _kill_group(proc: subprocess.Popen[str]) -> None:
    """SIGKILL the tool's process group and reap it (its pipes are closed, not drained)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        proc.kill()
    for stream in (proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()
    proc.wait()
