"""Threads that fit the cores other processes leave free.

PyTorch's CPU kernels (and FAISS, and BLAS) run on OpenMP, whose threads spin at every
barrier before they sleep. Alone on the machine that is the fastest choice; on a machine
shared with another busy process a spinning thread burns the time slice its partner
needs, and each of the thousands of small parallel kernels of a training step waits for
a descheduled thread. Measured on 204,800 of `small`'s pairs, 2 cores (README):

    2 threads, spinning:   8.3 s alone, 24.9 s beside one CPU-bound process
    2 threads, yielding:  13.2 s alone, 12.6 s beside it (OMP_WAIT_POLICY=PASSIVE)
    1 thread:             12.1 s alone, 12.6 s beside it

So haowu keeps OpenMP's default (spin, then sleep), which is fastest alone, and the
two-tower trainer fits its thread count to the cores other processes leave free before
every epoch (`CpuShare`): beside one busy process it trains on one thread, which no
descheduled partner can stall. A user who wants yielding threads everywhere sets
`OMP_WAIT_POLICY=PASSIVE` themselves (read once, when the OpenMP runtime starts).
"""

from __future__ import annotations

import os
import time

import psutil

BUSY_CORE = 0.5  # another process's load from which a core counts as taken


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def fit_threads(wanted: int, others: float, n_cores: int | None = None) -> int:
    """Threads for the cores the other processes (`others` cores busy) leave free."""
    free = (n_cores or cores()) - others
    return max(1, min(wanted, int(free + 1 - BUSY_CORE)))


class CpuShare:
    """How many cores other processes kept busy since the last call: the machine's busy
    CPU time less this process's, over the wall time."""

    def __init__(self) -> None:
        self._own = psutil.Process()
        self._last = self._sample()

    def _sample(self) -> tuple[float, float, float]:
        times = psutil.cpu_times()
        busy = sum(times) - times.idle - getattr(times, "iowait", 0.0)
        own = self._own.cpu_times()
        return time.monotonic(), busy, own.user + own.system

    def others(self) -> float:
        now = self._sample()
        wall = now[0] - self._last[0]
        busy, own = now[1] - self._last[1], now[2] - self._last[2]
        self._last = now
        return max(0.0, (busy - own) / wall) if wall > 0 else 0.0
