"""CPU-burning neighbour processes for latency experiments (benches and tests).

A neighbour is started as a real process and only counts as running once it has said so on stdout
(after its first busy-loop pass, or its first training step), so callers wait on an event, not a guess.

    spinning neighbours:  with neighbours("spin", 2): ...            (one busy loop each)
                          with neighbours("spin", 1, nice=19): ...
                          with neighbours("spin", 2, cpus=[0, 1]): ...  (the i-th pinned to cpus[i])
    training neighbour:   with neighbours("train", 1): ...           (a torch loop, default threads)

The training neighbour goes through :func:`facenas.hostgate.quiet_gate` (``working()`` around the loop,
``yield_point()`` before every step): with ``FACENAS_QUIET_LOCK`` set in its environment it pauses for
gated measurements and prints ``resumed`` after each pause; without it, it never pauses.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator, Sequence

PIN = "import os, sys\nif len(sys.argv) > 1:\n    os.sched_setaffinity(0, {int(sys.argv[1])})\n"

SPIN = PIN + "print('ready', flush=True)\nwhile True:\n    pass\n"

# A small conv net trained on random 64x64 batches with torch's default thread count.
TRAIN = (
    PIN
    + """
import torch
from facenas.hostgate import quiet_gate
torch.manual_seed(0)
net = torch.nn.Sequential(
    torch.nn.Conv2d(3, 32, 3, padding=1), torch.nn.ReLU(),
    torch.nn.Conv2d(32, 32, 3, padding=1), torch.nn.ReLU(),
    torch.nn.Conv2d(32, 18, 1),
)
opt = torch.optim.SGD(net.parameters(), lr=1e-3)
x, y = torch.rand(8, 3, 64, 64), torch.randint(0, 18, (8, 64, 64))
first = True
with quiet_gate().working() as gate:
    while True:
        if gate.yield_point() > 0:
            print('resumed', flush=True)
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
        if first:
            print('ready', flush=True)
            first = False
"""
)

SCRIPTS = {"spin": SPIN, "train": TRAIN}


def start(kind: str, nice: int = 0, cpu: int | None = None) -> subprocess.Popen[str]:
    """Start a neighbour of ``kind`` ("spin" or "train"), pinned to ``cpu`` if given; return once running."""
    prefix = ["nice", "-n", str(nice)] if nice else []
    pin = [] if cpu is None else [str(cpu)]
    proc = subprocess.Popen(
        [*prefix, sys.executable, "-c", SCRIPTS[kind], *pin], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    if proc.stdout.readline().strip() != "ready":
        proc.kill()
        raise RuntimeError(f"{kind} neighbour exited before it started: rc {proc.wait()}")
    return proc


@contextlib.contextmanager
def neighbours(
    kind: str, count: int, nice: int = 0, cpus: Sequence[int] | None = None
) -> Iterator[list[subprocess.Popen[str]]]:
    """Run ``count`` neighbours of ``kind`` (niced by ``nice``, the i-th pinned to ``cpus[i]``)."""
    procs: list[subprocess.Popen[str]] = []
    try:
        for i in range(count):
            procs.append(start(kind, nice, None if cpus is None else cpus[i]))
        yield procs
    finally:
        for proc in procs:
            proc.kill()
        for proc in procs:
            proc.wait()
