"""Benchmark of `haowu generate`: seconds, rows and rows/s per table, and peak memory."""

from __future__ import annotations

import resource
import sys
import time
from pathlib import Path
from typing import Any

from features.synthetic.generate import run_generation
from features.synthetic.params import DataConfig

KIB_PER_GIB = 2**20


def peak_rss_gib() -> float:
    """Peak resident memory of this process so far (ru_maxrss is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (KIB_PER_GIB * 1024 if sys.platform == "darwin" else KIB_PER_GIB)


def bench_generate(cfg: DataConfig, out: Path, progress: bool = True) -> dict[str, Any]:
    """Generate `cfg` into `out` (replacing it) and time it.

    Peak RSS is the process's lifetime peak: run the benchmark in a fresh process for a
    figure that belongs to generation alone.
    """
    start = time.perf_counter()
    report = run_generation(cfg, Path(out), overwrite=True, progress=progress)
    seconds = time.perf_counter() - start
    tables = {
        name: {
            "rows": rows,
            "seconds": round(report.seconds.get(name, 0.0), 3),
            "rows_per_s": round(rows / report.seconds[name]) if report.seconds.get(name) else None,
        }
        for name, rows in report.rows.items()
    }
    total_rows = sum(report.rows.values())
    return {
        "preset": cfg.preset,
        "seconds": round(seconds, 3),
        "rows": total_rows,
        "rows_per_s": round(total_rows / seconds),
        "peak_rss_gib": round(peak_rss_gib(), 3),
        "workers": cfg.workers,
        "tables": tables,
        "stages": {name: round(s, 3) for name, s in report.seconds.items()},
    }
