"""The `ray` engine of `write_shards`: the same shard function in a Ray Data actor pool.

Work splits by part: the driver builds one row per missing part (part, first query, end
query), cuts the rows into several blocks (one pandas block would feed one actor only)
and maps them with `map_batches(..., batch_size=1)` over an `ActorPoolStrategy(size=
workers)`. Each actor calls the shard factory once (loading the model and index once),
then computes its parts and writes them itself, atomically, into OUT, which on a
cluster must be storage every node sees (NFS, a mounted bucket). Only (part, queries,
rows) travel back: the lists never pass through the object store or the driver, whose
memory and bandwidth would otherwise bound the whole cluster.

`ray.init()` connects to the cluster named by `RAY_ADDRESS` when it is set; else a local
Ray over this machine's cores is started, and shut down at the end. A Ray already
initialised by the caller (a test, a notebook) is used as it is. Each actor asks for
`cores // workers` CPUs, `cores` being the cluster's unless given.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from features.errors import HaowuError
from serving.batch.parts import OnDone, Shard, ShardFactory, ShardFn, compute_shard, save_part
from serving.batch.resources import available_cores, limit_threads

log = logging.getLogger(__name__)

BLOCKS_PER_WORKER = 4  # more blocks than actors: a slow part does not hold up the others


class ShardActor:
    """One per Ray worker: builds the shard function once, then writes parts.

    Domain errors (a missing model, a full disk) come back as data, not exceptions: Ray
    Data would wrap them into a UserCodeException holding only a traceback string.
    """

    def __init__(self, factory: ShardFactory, out: str, threads: int) -> None:
        limit_threads(threads)
        self.out = Path(out)
        self.fn: ShardFn | None = None
        self.error = ""
        try:
            self.fn = factory()
        except HaowuError as exc:
            self.error = str(exc)

    def _part(self, part: int, start: int, stop: int) -> tuple[int, str]:
        if self.fn is None:
            return -1, self.error
        try:
            return save_part(compute_shard(self.fn, start, stop), self.out, part), ""
        except HaowuError as exc:
            return -1, str(exc)

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        done = [
            self._part(int(part), int(start), int(stop))
            for part, start, stop in batch[["part", "start", "stop"]].itertuples(index=False)
        ]
        return pd.DataFrame(
            {
                "part": batch["part"].to_numpy(),
                "queries": (batch["stop"] - batch["start"]).to_numpy(),
                "rows": np.asarray([rows for rows, _ in done], dtype=np.int64),
                "error": [error for _, error in done],
            }
        )


def require_ray() -> None:
    """Ray is an extra (`pip install 'haowu[ray]'`): say so before any work starts."""
    try:
        import ray.data  # noqa: F401
    except ImportError:
        raise HaowuError(
            "--engine ray needs Ray, an optional extra: pip install 'haowu[ray]' "
            "(or use --engine local)"
        ) from None


def run_ray(
    factory: ShardFactory,
    out: Path,
    todo: Sequence[Shard],
    workers: int,
    cores: int | None,
    on_done: OnDone,
) -> int:
    """Compute and write the parts in `todo` on Ray; `on_done` as each part lands.

    Each actor gets `cores // workers` CPUs and threads; `cores` defaults to the CPUs of
    the cluster (RAY_ADDRESS, or a Ray the caller started) or of this machine. Returns
    the threads per actor.
    """
    import ray

    started_here = not ray.is_initialized()
    address = os.environ.get("RAY_ADDRESS")
    if started_here and address:
        log.info("connecting to the Ray cluster at %s", address)
        ray.init(address=address, log_to_driver=False)
    elif started_here:
        ray.init(num_cpus=cores or available_cores(), include_dashboard=False, log_to_driver=False)
    cores = cores or int(ray.cluster_resources().get("CPU", 1))
    threads = max(1, cores // workers)
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # ours counts queries; Ray's would count parts
    try:
        frame = pd.DataFrame(list(todo), columns=["part", "start", "stop"])
        n_blocks = min(len(frame), workers * BLOCKS_PER_WORKER)
        cuts = np.array_split(np.arange(len(frame)), n_blocks)
        blocks = [frame.iloc[rows].reset_index(drop=True) for rows in cuts]  # iloc: see module doc
        dataset = ray.data.from_pandas(blocks).map_batches(
            ShardActor,
            fn_constructor_args=(factory, str(Path(out).resolve()), threads),
            batch_size=1,
            batch_format="pandas",
            compute=ray.data.ActorPoolStrategy(size=workers),
            num_cpus=threads,
        )
        for batch in dataset.iter_batches(batch_size=None, batch_format="pandas"):
            for part, queries, rows, error in batch[
                ["part", "queries", "rows", "error"]
            ].itertuples(index=False):
                if error:
                    raise HaowuError(error)
                on_done(int(part), int(queries), int(rows))
    finally:
        if started_here:
            ray.shutdown()
    return threads
