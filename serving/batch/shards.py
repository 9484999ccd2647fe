"""Sharded, resumable batch output: a shard function over query positions -> Parquet parts.

`write_shards` splits queries 0..n-1 into fixed ranges of `shard_size` and writes

    OUT/_job.json            first: the job's identity (the caller's manifest, the query
                             count, the shard size); a folder of another job is refused
                             unless `force`, which deletes its parts and starts over
    OUT/part-NNNNN.parquet   the rows of queries [N * shard_size, (N + 1) * shard_size),
                             written to a temporary name and renamed: a part present is
                             a part complete
    OUT/_SUCCESS             last: the manifest (identity + counts, time, peak RSS, CPU)
    OUT/_lock                while a run is on: one run per folder (serving/batch/folder_lock.py);
                             a second run fails at once naming the holder's pid, host, start

A part depends only on the job and its query range, so a rerun keeps the parts present
and computes the missing ones; a SIGKILL at any point loses only the parts in flight.

Engines. `local` with one worker: one process, FAISS on every core, and a writer thread
that writes part N while part N+1 is computed. `local` with several workers: a pool of
processes, each with its share of the cores, computing and writing its own parts.
`ray` (serving/batch/ray_engine.py): the same shard function in a Ray Data actor pool.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import re
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from datetime import UTC, datetime
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Literal

import pandas as pd
import pyarrow.parquet as pq

from features.errors import HaowuError, OutputExistsError
from features.io import write_json
from features.logs import progress_bar
from models.artifacts import BATCH_LOCK, SUCCESS
from serving.batch.folder_lock import output_lock
from serving.batch.parts import (
    OnDone,
    OutputWriteError,
    Shard,
    ShardFactory,
    compute_shard,
    part_path,
    save_part,
    shards,
)
from serving.batch.ray_engine import require_ray, run_ray
from serving.batch.resources import ResourceMonitor, available_cores, die_with_parent, limit_threads

log = logging.getLogger(__name__)

JOB_FILE = "_job.json"
FORMAT_VERSION = 1
_PART = re.compile(r"part-(\d{5,})\.parquet")


# ------------------------------------------------------------- the job folder
def _is_ours(name: str) -> bool:
    return name in (JOB_FILE, SUCCESS, BATCH_LOCK) or bool(_PART.fullmatch(name)) or _is_temp(name)


def _is_temp(name: str) -> bool:
    """Temporary names of features.io's atomic writers (a killed write leaves them)."""
    return name.startswith(".") and name.endswith(".tmp")


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


# what a reader most needs to know changed comes first in the refusal
_FIRST = ("model_digest", "data_digest", "tiers_digest", "k", "direction", "policy")


def _differences(held: dict[str, Any], wanted: dict[str, Any]) -> str:
    keys = sorted(set(held) | set(wanted), key=lambda k: (_rank(k), str(k)))
    diffs = [
        f"{k}: {held.get(k)!r} vs {wanted.get(k)!r}" for k in keys if held.get(k) != wanted.get(k)
    ]
    return "; ".join(diffs[:4]) or "unknown"


def _rank(key: Any) -> int:
    return _FIRST.index(key) if key in _FIRST else len(_FIRST)


def prepare_output(out: Path, identity: dict[str, Any], force: bool) -> set[int]:
    """Make OUT ready for this job and return the parts already finished.

    Refuses (nothing touched) a folder holding another job's parts, or files of no job,
    unless `force`, which deletes only what a batch job writes and starts over.
    """
    try:
        out.mkdir(parents=True, exist_ok=True)
        entries = {p.name: p for p in out.iterdir()}
    except OSError as exc:
        raise OutputWriteError(f"cannot use output folder {out}: {exc.strerror or exc}") from None
    held = _read_json(out / JOB_FILE)
    parts = {int(m.group(1)): p for name, p in entries.items() if (m := _PART.fullmatch(name))}
    results = bool(parts) or SUCCESS in entries
    if not force:
        foreign = sorted(name for name in entries if not _is_ours(name))
        if held is None and (results or foreign):
            raise OutputExistsError(
                f"output folder {out} holds files of no haowu batch job "
                f"(e.g. {(sorted(parts.values()) or foreign)[0]}); pass --force to use it anyway"
            )
        if held is not None and held.get("identity") != identity and results:
            raise OutputExistsError(
                f"output folder {out} holds {len(parts)} part(s) of another job "
                f"({_differences(held.get('identity') or {}, identity)}); "
                "pass --force to delete them and start over"
            )
    # OUT is this job's now. Drop a stale _SUCCESS and temporary files (a killed write's);
    # with force also the parts, before the job file is replaced: a kill in between leaves
    # a job file without parts, which any job may take over.
    stale = [SUCCESS] if force or (held or {}).get("identity") != identity else []
    stale += [name for name in entries if _is_temp(name)]
    if force:
        stale += [p.name for p in parts.values()]
        parts = {}
    try:
        for name in stale:
            (out / name).unlink(missing_ok=True)
        if force or held is None or held.get("identity") != identity:
            job = {"format": FORMAT_VERSION, "identity": identity, "created_at": _now()}
            write_json(job, out / JOB_FILE)
    except OSError as exc:
        raise OutputWriteError(
            f"cannot write to output folder {out}: {exc.strerror or exc}"
        ) from None
    return set(parts)


def _identity(manifest: dict[str, Any], n_queries: int, shard_size: int) -> dict[str, Any]:
    """What must match for parts to be reused: JSON-normalised, as the job file holds it."""
    doc = {**manifest, "queries": n_queries, "shard_size": shard_size}
    return json.loads(json.dumps(doc, sort_keys=True, default=str))


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


# ---------------------------------------------------------------------- engines
def _run_inline(
    factory: ShardFactory, out: Path, todo: Sequence[Shard], threads: int, on_done: OnDone
) -> None:
    """One process: compute in this thread, write in a writer thread (overlapped)."""
    limit_threads(threads)
    fn = factory()
    handoff: queue.Queue[tuple[int, pd.DataFrame, int] | None] = queue.Queue(maxsize=1)
    failed: list[BaseException] = []

    def writer() -> None:
        while (item := handoff.get()) is not None:
            if failed:
                continue  # keep draining so the producer never blocks
            part, df, n = item
            try:
                on_done(part, n, save_part(df, out, part))
            except BaseException as exc:  # handed to the main thread
                failed.append(exc)

    thread = threading.Thread(target=writer, name="part-writer", daemon=True)
    thread.start()
    try:
        for part, start, stop in todo:
            if failed:
                break
            handoff.put((part, compute_shard(fn, start, stop), stop - start))  # bounded: 1 waiting
    finally:
        handoff.put(None)
        thread.join()
    if failed:
        raise failed[0]


_WORKER: dict[str, Any] = {}


def _init_worker(factory: ShardFactory, threads: int, parent: int) -> None:
    die_with_parent(parent)
    limit_threads(threads)
    _WORKER["factory"] = factory


def _worker_part(out: str, part: int, start: int, stop: int) -> int:
    """In a pool process: the shard function is built on first use, then kept."""
    if "fn" not in _WORKER:
        _WORKER["fn"] = _WORKER["factory"]()
    return save_part(compute_shard(_WORKER["fn"], start, stop), Path(out), part)


def _run_pool(
    factory: ShardFactory,
    out: Path,
    todo: Sequence[Shard],
    workers: int,
    threads: int,
    on_done: OnDone,
) -> None:
    """Processes (spawned: no forked FAISS/OpenMP state), each computing and writing parts."""
    with ProcessPoolExecutor(
        workers,
        mp_context=get_context("spawn"),
        initializer=_init_worker,
        initargs=(factory, threads, os.getpid()),
    ) as pool:
        pending = {pool.submit(_worker_part, str(out), *shard): shard for shard in todo}
        try:
            while pending:
                finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in finished:
                    part, start, stop = pending.pop(future)
                    on_done(part, stop - start, future.result())
        except BrokenProcessPool:
            raise HaowuError(
                "a worker process died (out of memory? lower --shard-size or --workers); "
                "the finished parts are kept, rerun the same command to resume"
            ) from None
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


# ------------------------------------------------------------------------ entry
def write_shards(
    n_queries: int,
    make_shard_fn: ShardFactory,
    out: Path,
    *,
    shard_size: int,
    manifest: dict[str, Any],
    force: bool = False,
    engine: Literal["local", "ray"] = "local",
    workers: int = 2,
    progress: bool = True,
    cores: int | None = None,
    desc: str | None = None,
    finish: Callable[[Path], dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Run `make_shard_fn()` over queries 0..n_queries-1 into OUT's parts; resumable.

    `make_shard_fn` must be picklable; it is called once per process (or Ray actor) and
    returns positions -> rows. `manifest` is the job's identity (model, index, k, ...):
    a rerun with the same identity resumes, another identity is refused unless `force`.
    `cores` (default: this machine's; on Ray the cluster's) are split among `workers`:
    FAISS, torch and BLAS get `cores // workers` threads each. Returns the manifest
    written to OUT/_SUCCESS (identity, counts, seconds, peak RSS, CPU utilisation).
    `finish(OUT)`, when given, runs once every part is written, under the same lock and
    before `_SUCCESS`: a last pass over the parts (it must be safe to run again after a
    crash); what it returns goes into the manifest.
    """
    if n_queries < 0 or shard_size < 1 or workers < 1:
        raise HaowuError(
            "need n_queries >= 0, shard_size >= 1, workers >= 1; "
            f"got {n_queries}, {shard_size}, {workers}"
        )
    if engine not in ("local", "ray"):
        raise HaowuError(f"unknown engine {engine!r}; choose local or ray")
    if engine == "ray":
        require_ray()
    out = Path(out)
    with output_lock(out, desc or "batch job"):  # one run per folder, held to the end
        return _write_shards(
            n_queries, make_shard_fn, out, shard_size, manifest, force, engine, workers,
            progress, cores, desc, finish,
        )  # fmt: skip


def _write_shards(
    n_queries: int,
    make_shard_fn: ShardFactory,
    out: Path,
    shard_size: int,
    manifest: dict[str, Any],
    force: bool,
    engine: Literal["local", "ray"],
    workers: int,
    progress: bool,
    cores: int | None,
    desc: str | None,
    finish: Callable[[Path], dict[str, Any]] | None,
) -> dict[str, Any]:
    """`write_shards` once OUT's lock is held."""
    started, started_at = time.perf_counter(), _now()
    plan = shards(n_queries, shard_size)
    identity = _identity(manifest, n_queries, shard_size)
    finished = prepare_output(out, identity, force)
    success = out / SUCCESS
    if len(finished) == len(plan) and (stored := _read_json(success)) is not None:
        log.info("%s is complete already (%d parts); nothing to do", out, len(plan))
        return stored
    success.unlink(missing_ok=True)
    todo = [shard for shard in plan if shard[0] not in finished]
    local_cores = available_cores()
    threads = max(1, (cores or local_cores) // workers)  # the ray engine decides its own
    resumed = sum(stop - start for part, start, stop in plan if part in finished)
    if finished:
        log.info(
            "resuming %s: %d of %d parts done, %d to go", out, len(finished), len(plan), len(todo)
        )
    bar = progress_bar(
        None,
        progress,
        total=n_queries,
        initial=resumed,
        unit="q",
        unit_scale=True,
        smoothing=0.05,
        desc=desc or out.name,
        dynamic_ncols=True,
    )

    def on_done(part: int, queries: int, rows: int) -> None:
        bar.update(queries)

    with ResourceMonitor(cores or local_cores) as monitor:
        try:
            if todo and engine == "ray":
                threads = run_ray(make_shard_fn, out, todo, workers, cores, on_done)
            elif todo and workers == 1:
                _run_inline(make_shard_fn, out, todo, threads, on_done)
            elif todo:
                _run_pool(make_shard_fn, out, todo, workers, threads, on_done)
        finally:
            bar.close()
    missing = [part for part, _, _ in plan if not part_path(out, part).is_file()]
    if missing:  # an engine returned without writing every part: never claim success
        raise HaowuError(f"{len(missing)} part(s) missing after the run, e.g. {missing[:5]}; rerun")
    finished_with = finish(out) if finish is not None else {}
    seconds = time.perf_counter() - started
    computed = sum(stop - start for _, start, stop in todo)
    result = {
        **identity,
        "format": FORMAT_VERSION,
        "parts": len(plan),
        "rows": sum(pq.read_metadata(part_path(out, p)).num_rows for p, _, _ in plan),
        "resumed_parts": len(finished),
        "computed_parts": len(todo),
        "engine": engine,
        "workers": workers,
        "threads_per_worker": threads,
        "seconds": round(seconds, 2),
        "queries_per_s": round(computed / seconds, 1) if computed else 0.0,
        **monitor.summary(),
        **finished_with,
        "started_at": started_at,
        "finished_at": _now(),
    }
    try:
        write_json(result, success)  # last: its presence means complete
    except OSError as exc:
        raise OutputWriteError(f"cannot write {success}: {exc.strerror or exc}") from None
    log.info(
        "%s: %d parts, %d rows in %.1fs (%.0f q/s), peak RSS %.2f GiB, CPU %.0f%% of %d cores",
        out,
        len(plan),
        result["rows"],
        seconds,
        result["queries_per_s"],
        result["peak_rss_gib"],
        100 * result["cpu_utilisation"],
        result["cores"],
    )
    return result
