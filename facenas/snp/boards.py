"""The Snapdragon boards attached to this host: discovery, one job per board, health.

:class:`BoardPool` lists boards with ``adb devices``, reads each one's model and SoC, and hands a free,
healthy board to one job at a time. A board whose connection is lost is marked unhealthy (the job moves
to another board); a later discovery that finds it answering again brings it back. A job that finds no
healthy board fails at once with Unavailable, naming every board and why it is out, instead of waiting
for one that may never come. All boards of a pool share one SoC: results are keyed by it.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from prometheus_client import Counter, Gauge

from facenas.errors import InvalidInput, Unavailable
from facenas.snp.adb import Adb, AttachedDevice, DeviceLost

log = logging.getLogger(__name__)

BOARD_UP = Gauge(
    "facenas_snp_board_up", "1 while a Snapdragon board is healthy, 0 once lost.", ["serial", "model", "soc"]
)
BOARD_BUSY = Gauge("facenas_snp_board_busy", "1 while a board runs a measurement.", ["serial"])
BOARD_JOBS = Counter(
    "facenas_snp_board_jobs",
    "Measurements run on a board, by outcome (ok, lost, error).",
    ["serial", "outcome"],
)
BOARD_QUEUE = Gauge("facenas_snp_board_queue", "Jobs waiting for a free Snapdragon board.")

CheckAlive = Callable[[], None]

#: Hexagon DSP architecture of the SoCs we know (for the skeleton libraries pushed to a board).
HEXAGON_ARCH = {
    "SM8350": "v68",  # Snapdragon 888 (Archai's HDK)
    "SM8450": "v69",  # 8 Gen 1
    "SM8475": "v69",  # 8+ Gen 1
    "SM8550": "v73",  # 8 Gen 2
    "SM8650": "v75",  # 8 Gen 3
    "SM8750": "v79",  # 8 Elite
}


@dataclass
class Board:
    """One attached board and what the pool knows of it."""

    serial: str
    model: str
    soc: str
    android: str = ""
    healthy: bool = True
    busy: bool = False
    problem: str = ""
    prepared: set[str] = field(default_factory=set)  # SDK versions whose files are on the board

    def describe(self) -> dict[str, str]:
        return {"serial": self.serial, "model": self.model, "soc": self.soc, "android": self.android}


def soc_of(props: dict[str, str]) -> str:
    """The SoC model from a board's properties (``ro.soc.model``, else the board platform)."""
    return (props.get("ro.soc.model") or props.get("ro.board.platform") or "unknown").upper()


class BoardPool:
    """Boards of one SoC; ``serials`` limits the pool to those boards (default: every board found)."""

    def __init__(
        self,
        adb: Adb,
        soc: str | None = None,
        serials: tuple[str, ...] = (),
        rediscover_s: float = 30.0,
        wait_s: float = 3600.0,
    ) -> None:
        self.adb = adb
        self.soc = soc.upper() if soc else None
        self.serials = serials
        self.rediscover_s = rediscover_s
        self.wait_s = wait_s
        self.boards: dict[str, Board] = {}
        self.ignored: dict[str, str] = {}  # serial -> why it is not in the pool
        self._cond = threading.Condition()
        self._discovered_at = 0.0
        self._waiting = 0

    # --------------------------------------------------------------------------------- discovery

    def discover(self) -> list[Board]:
        """List attached boards; add new ones, mark vanished ones lost, revive returning ones."""
        attached = {d.serial: d for d in self.adb.devices() if not self.serials or d.serial in self.serials}
        with self._cond:
            self._discovered_at = time.monotonic()
            for serial, device in attached.items():
                self._refresh(serial, device)
            for board in self.boards.values():
                if board.serial not in attached and board.healthy:
                    self._mark(board, "no longer listed by adb devices")
            self._cond.notify_all()
            return [b for b in self.boards.values() if b.healthy]

    def _refresh(self, serial: str, device: AttachedDevice) -> None:
        board = self.boards.get(serial)
        if device.state != "device":
            if board is not None and board.healthy:
                self._mark(board, f"adb reports it {device.state}")
            elif board is None:
                self.ignored[serial] = f"adb reports it {device.state}"
            return
        if board is not None and board.healthy:
            return
        try:
            props = self.adb.properties(serial)
        except Unavailable as err:
            self.ignored[serial] = str(err)
            return
        soc = soc_of(props)
        if self.soc is None:
            self.soc = soc
        if soc != self.soc:
            self.ignored[serial] = f"its SoC {soc} is not this pool's {self.soc}"
            return
        fresh = Board(
            serial, props.get("ro.product.model", "unknown"), soc, props.get("ro.build.version.release", "")
        )
        if board is not None:
            fresh.prepared = set()  # a board that came back may have been wiped
        self.boards[serial] = fresh
        self.ignored.pop(serial, None)
        BOARD_UP.labels(serial, fresh.model, soc).set(1)
        BOARD_BUSY.labels(serial).set(0)
        log.info("board ready", extra=fresh.describe())

    def _mark(self, board: Board, reason: str) -> None:
        board.healthy = False
        board.problem = reason
        BOARD_UP.labels(board.serial, board.model, board.soc).set(0)
        log.warning("board unhealthy", extra={**board.describe(), "reason": reason})

    def mark_lost(self, board: Board, reason: str) -> None:
        """Take a board out of service (a later discovery may bring it back)."""
        with self._cond:
            self._mark(board, reason)
            self._cond.notify_all()

    # --------------------------------------------------------------------------------- leasing

    @contextlib.contextmanager
    def lease(self, check_alive: CheckAlive, avoid: frozenset[str] = frozenset()) -> Iterator[Board]:
        """A free healthy board (not in ``avoid``) for the duration of the block.

        A DeviceLost raised in the block takes the board out of service before it propagates.

        Raises Unavailable when no healthy board is left or none frees up within ``wait_s``, and whatever
        ``check_alive`` raises while waiting.
        """
        board = self._acquire(check_alive, avoid)
        outcome = "error"
        try:
            yield board
            outcome = "ok"
        except DeviceLost as err:
            outcome = "lost"
            self.mark_lost(board, err.reason)
            raise
        finally:
            BOARD_JOBS.labels(board.serial, outcome).inc()
            with self._cond:
                board.busy = False
                BOARD_BUSY.labels(board.serial).set(0)
                self._cond.notify_all()

    def _acquire(self, check_alive: CheckAlive, avoid: frozenset[str]) -> Board:
        deadline = time.monotonic() + self.wait_s
        with self._cond:
            self._waiting += 1
            BOARD_QUEUE.set(self._waiting)
            try:
                while True:
                    if time.monotonic() - self._discovered_at > self.rediscover_s:
                        self._cond.release()
                        try:
                            self._rediscover_quietly()
                        finally:
                            self._cond.acquire()
                    usable = [b for b in self.boards.values() if b.healthy and b.serial not in avoid]
                    if not usable:
                        raise Unavailable(self.no_board_message(avoid))
                    free = [b for b in usable if not b.busy]
                    if free:
                        board = free[0]
                        board.busy = True
                        BOARD_BUSY.labels(board.serial).set(1)
                        return board
                    if time.monotonic() > deadline:
                        raise Unavailable(f"no Snapdragon board became free within {self.wait_s:g} s")
                    self._cond.wait(timeout=0.5)
                    self._cond.release()
                    try:
                        check_alive()
                    finally:
                        self._cond.acquire()
            finally:
                self._waiting -= 1
                BOARD_QUEUE.set(self._waiting)

    def _rediscover_quietly(self) -> None:
        try:
            self.discover()
        except Unavailable as err:
            log.warning("board discovery failed", extra={"error": str(err)})
            with self._cond:
                self._discovered_at = time.monotonic()

    def no_board_message(self, avoid: frozenset[str] = frozenset()) -> str:
        """Why no board can take a job: every board and its state."""
        states = [f"{b.serial} ({b.model}): {b.problem}" for b in self.boards.values() if not b.healthy]
        states += [f"{s}: already failed this job" for s in sorted(avoid) if s in self.boards]
        states += [f"{s}: {why}" for s, why in sorted(self.ignored.items())]
        detail = "; ".join(states) if states else "adb devices lists none"
        return (
            f"no healthy Snapdragon board{f' with SoC {self.soc}' if self.soc else ''} is attached ({detail})"
        )

    # --------------------------------------------------------------------------------- facts

    def healthy(self) -> list[Board]:
        with self._cond:
            return [b for b in self.boards.values() if b.healthy]

    def describe(self) -> str:
        """``2 x HDK 888 (SM8350)`` style summary of the healthy boards."""
        boards = self.healthy()
        models = sorted({b.model for b in boards})
        return f"{len(boards)} x {', '.join(models) or 'no board'} ({self.soc or 'unknown SoC'})"


def hexagon_arch_for(soc: str, override: str | None = None) -> str:
    """The DSP architecture of ``soc`` (``override`` wins); InvalidInput when unknown."""
    if override:
        return override
    if soc.upper() in HEXAGON_ARCH:
        return HEXAGON_ARCH[soc.upper()]
    raise InvalidInput(
        f"unknown Hexagon architecture for SoC {soc}; pass --hexagon-arch (e.g. v68 for SM8350)"
    )
