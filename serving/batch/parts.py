"""One part of a batch job: the shard function's types, its query ranges, one part
computed and written atomically. Shared by every engine (serving/batch/shards.py runs
them locally, serving/batch/ray_engine.py on Ray), so the engines never import each other.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from features.errors import HaowuError
from features.io import write_part

ShardFn = Callable[[np.ndarray], pd.DataFrame]
ShardFactory = Callable[[], ShardFn]
Shard = tuple[int, int, int]  # (part, first query, end query)
OnDone = Callable[[int, int, int], None]  # (part, queries, rows)


class OutputWriteError(HaowuError):
    """The output folder cannot be written (read-only, disk full, not a folder)."""


def part_path(out: Path, part: int) -> Path:
    return Path(out) / f"part-{part:05d}.parquet"


def shards(n_queries: int, shard_size: int) -> list[Shard]:
    """Fixed query ranges: the same job always cuts the same parts."""
    return [
        (i, lo, min(lo + shard_size, n_queries))
        for i, lo in enumerate(range(0, n_queries, shard_size))
    ]


# --------------------------------------------------------------------- one part
def compute_shard(fn: ShardFn, start: int, stop: int) -> pd.DataFrame:
    df = fn(np.arange(start, stop, dtype=np.int64))
    if not isinstance(df, pd.DataFrame):
        raise HaowuError(f"the shard function returned {type(df).__name__}, not a DataFrame")
    return df


def save_part(df: pd.DataFrame, out: Path, part: int) -> int:
    """Write one part atomically; an OSError (disk full, read-only) becomes a clear error."""
    try:
        write_part(df, out, part)
    except OSError as exc:
        raise OutputWriteError(
            f"cannot write {part_path(out, part)}: {exc.strerror or exc}; the finished parts "
            "are kept, rerun the same command to resume"
        ) from None
    return len(df)


def splice(
    frame: pd.DataFrame, query_col: str, taken: set, rows: pd.DataFrame | None
) -> pd.DataFrame:
    """A part's rows with the lists of the `taken` queries replaced by `rows`: the other
    rows as read, the queries in the part's order, each list by rank."""
    order = {q: n for n, q in enumerate(pd.unique(frame[query_col]))}
    frame = frame[~frame[query_col].isin(taken)]
    if rows is not None and len(rows):
        frame = pd.concat([frame, rows], ignore_index=True)
        at = frame[query_col].map(order).to_numpy()
        frame = frame.iloc[np.lexsort((frame["rank"].to_numpy(), at))]
    return frame.reset_index(drop=True)
