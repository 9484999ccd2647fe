"""Threads and resource accounting for batch jobs: thread limits, peak RSS, CPU use.

`limit_threads` gives FAISS, torch and the BLAS/OpenMP pools the cores a worker owns,
so two workers on a 2-core machine do not each start two threads. `ResourceMonitor`
samples the process tree (the driver, its worker processes, a local Ray cluster it
started) so the peak RSS and CPU use it reports cover the whole job, not the driver only.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import resource
import signal
import sys
import threading
import time
from typing import Any

import psutil

log = logging.getLogger(__name__)

_THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def available_cores() -> int:
    """Cores this process may run on (the affinity mask, not the host's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def limit_threads(threads: int) -> None:
    """FAISS, torch and BLAS/OpenMP pools use `threads` threads in this process.

    Environment variables cover libraries loaded later (torch reads them at import);
    threadpoolctl and the libraries' own setters cover those already loaded.
    """
    threads = max(1, int(threads))
    for name in _THREAD_ENV:
        os.environ[name] = str(threads)
    with contextlib.suppress(ImportError):
        from threadpoolctl import threadpool_limits

        threadpool_limits(threads)
    with contextlib.suppress(ImportError):
        import faiss

        faiss.omp_set_num_threads(threads)
    if "torch" in sys.modules:  # importing torch only to limit it costs seconds
        sys.modules["torch"].set_num_threads(threads)


def die_with_parent(parent: int) -> None:
    """Linux: the kernel kills this process when its parent dies (e.g. SIGKILLed), so a
    killed job leaves no orphan worker still writing parts behind it. `parent` is the
    parent's pid: one that died before this call is caught by the check after it."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL)
    if os.getppid() != parent:
        os._exit(1)


class ResourceMonitor:
    """Samples RSS and CPU time of this process and its descendants in a daemon thread.

    `peak_rss` is the largest sum of RSS over the tree seen at one sample (shared pages
    counted once per process, so it errs high); `cpu_utilisation` is CPU seconds used by
    the tree over wall seconds times `cores`.
    """

    def __init__(self, cores: int, interval_s: float = 0.5) -> None:
        self.cores, self.interval_s = cores, interval_s
        self.peak_rss = 0
        self._cpu_start: dict[int, float] = {}
        self._cpu_last: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="resource-monitor", daemon=True)
        self._started = 0.0
        self._wall = 0.0

    def __enter__(self) -> ResourceMonitor:
        self._started = time.perf_counter()
        self._sample(initial=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()
        self._wall = time.perf_counter() - self._started

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample()

    def _sample(self, initial: bool = False) -> None:
        me = psutil.Process()
        try:
            tree = [me, *me.children(recursive=True)]
        except psutil.Error:
            tree = [me]
        rss = 0
        for proc in tree:
            try:
                with proc.oneshot():
                    rss += proc.memory_info().rss
                    times = proc.cpu_times()
            except psutil.Error:
                continue  # exited between listing and reading
            cpu = times.user + times.system
            # processes alive at the start count from then, those born later from zero
            self._cpu_start.setdefault(proc.pid, cpu if initial else 0.0)
            self._cpu_last[proc.pid] = cpu
        self.peak_rss = max(self.peak_rss, rss)

    @property
    def cpu_seconds(self) -> float:
        return sum(self._cpu_last[pid] - self._cpu_start[pid] for pid in self._cpu_last)

    def summary(self) -> dict[str, Any]:
        """Figures for a manifest: peak RSS (tree and driver), CPU utilisation, load."""
        wall = self._wall or (time.perf_counter() - self._started)
        driver_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
        return {
            "peak_rss_gib": round(max(self.peak_rss, driver_peak) / 2**30, 3),
            "driver_peak_rss_gib": round(driver_peak / 2**30, 3),
            "cpu_seconds": round(self.cpu_seconds, 1),
            "cpu_utilisation": round(self.cpu_seconds / max(wall * self.cores, 1e-9), 3),
            "cores": self.cores,
            "load_avg_1m": round(os.getloadavg()[0], 2),
        }
