"""Timing a DLC on a board with ``snpe-net-run``, as Archai did: runs, diag logs, re-runs when noisy.

A round is ``runs`` invocations of ``snpe-net-run --profiling_level basic`` over the same inputs; each
leaves an ``SNPEDiag_0.log`` whose ``avg_total_inference_time`` (``snpe-diagview``) is one sample. A
round whose standard deviation exceeds ``max_cv`` of its mean is thrown away and run again, up to
``max_rounds``; the last round's mean is the result, flagged ``stable: false`` if it never settled.
"""

from __future__ import annotations

import logging
import math
import shlex
import statistics
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from facenas.errors import InvalidInput, MeasurementError
from facenas.snp.adb import Adb, DeviceLost
from facenas.snp.boards import Board, hexagon_arch_for
from facenas.snp.process import ToolError
from facenas.snp.sdk import SnpeSdk

log = logging.getLogger(__name__)

CheckAlive = Callable[[], None]

DEVICE_ROOT = "/data/local/tmp/facenas"
#: snpe-net-run flags per runtime; "htp" runs an HTP-prepared DLC on the DSP runtime.
RUNTIMES: dict[str, tuple[str, ...]] = {
    "dsp": ("--use_dsp",),
    "htp": ("--use_dsp",),
    "gpu": ("--use_gpu",),
    "cpu": (),
}
PERF_PROFILES = ("high_performance", "burst", "sustained_high_performance", "balanced", "default")
CLEANUP_TIMEOUT_S = 15.0
MIN_RUNS = 5
DSP_SEARCH_PATH = "/system/lib/rfsa/adsp;/system/vendor/lib/rfsa/adsp;/dsp"


@dataclass(frozen=True)
class ProfilePlan:
    """How a DLC is timed on a board."""

    runtime: str = "dsp"
    runs: int = 5
    max_rounds: int = 3
    max_cv: float = 0.10
    perf_profile: str = "high_performance"
    run_timeout_s: float = 600.0

    def __post_init__(self) -> None:
        problems = []
        if self.runtime not in RUNTIMES:
            problems.append(f"runtime: {self.runtime!r} is not one of {', '.join(RUNTIMES)}")
        if self.runs < MIN_RUNS:
            problems.append(f"runs: {self.runs} must be >= {MIN_RUNS} (Archai's protocol: 5 runs per model)")
        if self.max_rounds < 1:
            problems.append(f"max_rounds: {self.max_rounds} must be >= 1")
        if not 0 < self.max_cv < 1:
            problems.append(f"max_cv: {self.max_cv} must be in (0, 1)")
        if self.perf_profile not in PERF_PROFILES:
            problems.append(f"perf_profile: {self.perf_profile!r} is not one of {', '.join(PERF_PROFILES)}")
        if problems:
            raise InvalidInput("; ".join(problems))

    @property
    def uses_dsp(self) -> bool:
        return "--use_dsp" in RUNTIMES[self.runtime]


@dataclass(frozen=True)
class ProfileResult:
    """Samples (microseconds) of every round, and the figures of the last one."""

    rounds: tuple[tuple[float, ...], ...]
    mean_us: float
    stdev_us: float
    cv: float
    stable: bool

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def summarize(samples: tuple[float, ...]) -> tuple[float, float, float]:
    """(mean, sample standard deviation, stdev / mean)."""
    mean = statistics.fmean(samples)
    stdev = statistics.stdev(samples) if len(samples) > 1 else 0.0
    return mean, stdev, stdev / mean if mean > 0 else math.inf


class BoardRunner:
    """Pushes the SDK and a job to a board, runs ``snpe-net-run`` and reads the diagnostic logs."""

    def __init__(self, adb: Adb, sdk: SnpeSdk, plan: ProfilePlan, hexagon_arch: str | None = None) -> None:
        self.adb = adb
        self.sdk = sdk
        self.plan = plan
        self.hexagon_override = hexagon_arch  # else by each board's SoC
        self.sdk_dir = f"{DEVICE_ROOT}/snpe-{sdk.version}"

    def prepare(self, board: Board, check_alive: CheckAlive) -> None:
        """Push snpe-net-run and the runtime (and DSP) libraries once per board and SDK version."""
        if self.sdk.version in board.prepared:
            return
        hexagon = hexagon_arch_for(board.soc, self.hexagon_override) if self.plan.uses_dsp else None
        files = self.sdk.device_files(hexagon)
        self.adb.shell(
            board.serial, f"rm -rf {self.sdk_dir} && mkdir -p {self.sdk_dir}", check_alive=check_alive
        )
        for subdir, paths in files.items():
            for path in paths:
                self.adb.push(board.serial, path, f"{self.sdk_dir}/{subdir}/{path.name}", check_alive)
        self.adb.shell(board.serial, f"chmod 755 {self.sdk_dir}/bin/snpe-net-run", check_alive=check_alive)
        board.prepared.add(self.sdk.version)
        log.info("board prepared", extra={"serial": board.serial, "sdk": self.sdk.version})

    def profile(
        self, board: Board, dlc: Path, inputs: Path, workdir: Path, check_alive: CheckAlive
    ) -> ProfileResult:
        """Time ``dlc`` on ``board`` over the raw files and ``input_list.txt`` in ``inputs``."""
        work = f"{DEVICE_ROOT}/work/{uuid.uuid4().hex[:12]}"
        lost = False
        try:
            self.adb.shell(board.serial, f"mkdir -p {work}/inputs", check_alive=check_alive)
            self.adb.push(board.serial, dlc, f"{work}/model.dlc", check_alive)
            for raw in sorted(inputs.glob("*.raw")):
                self.adb.push(board.serial, raw, f"{work}/inputs/{raw.name}", check_alive)
            self.adb.push(board.serial, inputs / "input_list.txt", f"{work}/input_list.txt", check_alive)
            return self._rounds(board, work, workdir, check_alive)
        except DeviceLost:
            lost = True
            raise
        finally:
            if not lost:
                self._clean(board, work)

    def _rounds(self, board: Board, work: str, workdir: Path, check_alive: CheckAlive) -> ProfileResult:
        rounds: list[tuple[float, ...]] = []
        for round_index in range(self.plan.max_rounds):
            samples = tuple(
                self._run_once(board, work, workdir / f"r{round_index}-{i}", check_alive)
                for i in range(self.plan.runs)
            )
            rounds.append(samples)
            mean, stdev, cv = summarize(samples)
            if cv <= self.plan.max_cv:
                return ProfileResult(tuple(rounds), mean, stdev, cv, True)
            log.info(
                "noisy round, re-running", extra={"serial": board.serial, "cv": cv, "round": round_index}
            )
        log.warning("never settled", extra={"serial": board.serial, "cv": cv, "rounds": len(rounds)})
        return ProfileResult(tuple(rounds), mean, stdev, cv, False)

    def _run_once(self, board: Board, work: str, local: Path, check_alive: CheckAlive) -> float:
        """One snpe-net-run; returns its average total inference time (microseconds)."""
        self.adb.shell(board.serial, self.net_run_command(work), self.plan.run_timeout_s, check_alive)
        local.mkdir(parents=True, exist_ok=True)
        log_path = local / "SNPEDiag_0.log"
        try:
            self.adb.pull(board.serial, f"{work}/output/SNPEDiag_0.log", log_path, check_alive)
        except ToolError as err:
            raise MeasurementError(f"snpe-net-run on {board.serial} left no diagnostic log: {err}") from err
        return self.sdk.diagview(log_path, local / "diag.csv")

    def net_run_command(self, work: str) -> str:
        """The shell command that runs one profiling pass in ``work`` on the board."""
        exports = [f"export LD_LIBRARY_PATH={self.sdk_dir}/lib"]
        if self.plan.uses_dsp:
            exports.append(
                f"export ADSP_LIBRARY_PATH={shlex.quote(self.sdk_dir + '/dsp;' + DSP_SEARCH_PATH)}"
            )
        net_run = [
            f"{self.sdk_dir}/bin/snpe-net-run",
            "--container", "model.dlc",
            "--input_list", "input_list.txt",
            "--output_dir", "output",
            *RUNTIMES[self.plan.runtime],
            "--perf_profile", self.plan.perf_profile,
            "--profiling_level", "basic",
        ]  # fmt: skip
        return " && ".join([f"cd {work}", "rm -rf output", *exports, " ".join(net_run)])

    def _clean(self, board: Board, work: str) -> None:
        """Remove the job's files from the board (best effort: it may be gone)."""
        try:
            self.adb.shell(board.serial, f"rm -rf {work}", timeout_s=CLEANUP_TIMEOUT_S)
        except Exception as err:  # cleanup must not hide the job's own outcome
            log.info("could not clean board", extra={"serial": board.serial, "error": str(err)})
