"""`haowu recommend`: the batch job writing top-k lists for every creator (or product).

`make_shard_fn(...)` returns the shard function (query positions -> rows) over a
`RetrievalRun` (models/retrieval/run.py): FAISS search (exact with `exact=True`) and, for
goods, the platform's policy (L0 and flagged merchants out, goods already promoted out,
Selected Goods boost and share, category diversity). `run` hands it to
`serving.batch.shards.write_shards`, which writes `OUT/part-NNNNN.parquet` and `OUT/_SUCCESS`
last, resumes an interrupted job and runs locally or on Ray.

Rows (DESIGN §6), IDs as the user gave them (maps kept by `haowu import`):

- creator direction: `creator_id, rank, product_id, score, tier, category_l1,
  selected_goods, diversity_slot, selected_slot, reason`;
- product direction: `product_id, rank, creator_id, score, reason`.

`reason` says why the row is there: its score rank, a Selected Goods boost or share
slot, a category-diversity slot, and whether a side is new (embedded from features).
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from features.errors import HaowuError
from features.settings import Settings
from models.artifacts import (
    data_digest,
    is_registry_uri,
    model_digest,
    resolve_matching,
    tiers_digest,
)
from models.retrieval.list_rows import creator_rows, goods_rows
from serving.batch.exposure_pass import give_slots
from serving.batch.shards import write_shards

log = logging.getLogger(__name__)

DIRECTIONS = ("creator", "product")


# ----------------------------------------------------------------- shard function
@dataclass(frozen=True)
class ListsRequest:
    """What one batch job writes: lists of `k` for every creator (or product) of `data`,
    from `model` (a run folder or a registry URI), with `tiers` for the policy."""

    data: Path
    model: str
    tiers: str | None = None
    k: int = 50
    direction: str = "creator"
    exact: bool = False

    def __post_init__(self) -> None:
        if self.direction not in DIRECTIONS:
            raise HaowuError(f"--direction must be creator or product, got {self.direction!r}")
        if not isinstance(self.k, int) or self.k < 1:
            raise HaowuError(f"--k must be >= 1, got {self.k}")
        object.__setattr__(self, "data", Path(self.data))
        object.__setattr__(self, "model", str(self.model))
        if self.tiers is not None:
            object.__setattr__(self, "tiers", str(self.tiers))


def _absolute(ref: str | None) -> str | None:
    """A folder as an absolute path (a registry URI as given), for the job's identity."""
    return ref if ref is None or is_registry_uri(ref) else str(Path(ref).resolve())


_RUNS: dict[str, Any] = {}  # one loaded RetrievalRun per job and process


class ShardFn:
    """Query positions (0..n_queries-1) -> list rows; loads its `RetrievalRun` on first use
    (shared with the driver when both are one process). Picklable: the run is not pickled."""

    def __init__(
        self, request: ListsRequest, cfg: Settings, content: dict[str, Any] | None = None
    ) -> None:
        self.request, self.cfg = request, cfg
        self.k, self.direction = request.k, request.direction
        # `content`: the digests of model, data and tiers, so that a run loaded before a
        # retrain into the same folder is never reused for the new model
        self.key = json.dumps(
            [str(request.data.resolve()), request.model, request.tiers, request.exact,
             cfg.index.model_dump(mode="json"), cfg.policy.model_dump(mode="json"),
             content or {}],
            sort_keys=True,
        )  # fmt: skip

    @property
    def run(self) -> Any:
        from models.retrieval.run import RetrievalRun

        if self.key not in _RUNS:
            _RUNS.clear()  # one job at a time per process
            r = self.request
            _RUNS[self.key] = RetrievalRun.load(
                r.data, r.model, r.tiers, self.cfg.index, self.cfg.policy, r.exact
            )
        return _RUNS[self.key]

    @property
    def n_queries(self) -> int:
        side = self.run.creators if self.direction == "creator" else self.run.products
        return len(side.queries)

    def __call__(self, queries: np.ndarray) -> pd.DataFrame:
        queries = np.asarray(queries, dtype=np.int64)
        if self.direction == "creator":
            return self._goods(queries)
        return self._creators(queries)

    def _goods(self, queries: np.ndarray) -> pd.DataFrame:
        run = self.run
        return goods_rows(run, run.creators.queries[queries], self.k)

    def _creators(self, queries: np.ndarray) -> pd.DataFrame:
        run = self.run
        return creator_rows(run, run.products.queries[queries], self.k)

    def __getstate__(self) -> dict[str, Any]:
        return dict(self.__dict__)  # the loaded run lives in _RUNS, never in the pickle


def make_shard_fn(
    request: ListsRequest, cfg: Settings, content: dict[str, Any] | None = None
) -> ShardFn:
    """The shard function of one `haowu recommend` job: query positions -> rows.

    `functools.partial(make_shard_fn, request, cfg, content)` is the picklable factory
    `write_shards` calls once per process; the first call in a process loads the run.
    """
    return ShardFn(request, cfg, content)


def ids_digest(ids: np.ndarray) -> str:
    """sha256 of a sorted int64 ID set: part of a job's identity, not its listing."""
    return hashlib.sha256(np.ascontiguousarray(ids, np.int64).tobytes()).hexdigest()


def _exposure(
    run: Any, goods: np.ndarray, k: int, slots: tuple[int, int], out: Path
) -> dict[str, Any]:
    counts = give_slots(run, out, goods, k, *slots)
    log.info("exposure slots: %s", counts)
    return {"exposure": counts}


def content_digests(request: ListsRequest) -> dict[str, str | None]:
    """What the lists are computed from, by content: the model (its folder, or the
    version a registry URI names now), the data tables and the tiers."""
    folder = resolve_matching(request.model).info.folder
    return {
        "model_digest": model_digest(folder),
        "data_digest": data_digest(request.data),
        "tiers_digest": tiers_digest(request.tiers),
    }


# -------------------------------------------------------------------------- driver
def run(
    cfg: Settings,
    request: ListsRequest,
    out: Path,
    *,
    overwrite: bool = False,
    progress: bool = True,
    engine: str | None = None,
    workers: int | None = None,
    shard_size: int | None = None,
    expose: np.ndarray | None = None,
) -> dict[str, Any]:
    """Write top-k lists for every creator (or product); returns the `_SUCCESS` manifest.

    A rerun of the same job resumes (finished parts are kept); `overwrite` starts over.
    The same job means the same model content (`model_digest`), data and tiers content,
    k, direction, policy and index: anything else is refused unless `overwrite`.
    `expose` (creator lists): new goods (internal IDs) that no list holds get exposure
    slots (serving/batch/exposure_pass.py, `refresh.new_good_creators`), e.g. the day's
    new goods when a fine-tuned model rewrites every list.
    """
    started = time.perf_counter()
    k, direction = request.k, request.direction
    content = content_digests(request)
    factory = functools.partial(make_shard_fn, request, cfg, content)
    shard = factory()
    retrieval = shard.run
    if model_digest(retrieval.folder) != content["model_digest"]:  # an alias moved meanwhile
        raise HaowuError(f"{request.model} changed while the job started; run it again")
    n_items = len(retrieval.products) if direction == "creator" else len(retrieval.creators)
    if k > n_items:
        what = "goods" if direction == "creator" else "creators"
        raise HaowuError(f"--k {k} exceeds the {n_items} {what} the model and data hold")
    searched = "products" if direction == "creator" else "creators"
    retrieval.index(searched)  # built once, here
    engine = engine or cfg.batch.engine
    workers = workers or cfg.batch.workers
    # the identity covers content, not only paths: a retrain into the same model folder,
    # new data or new tiers make another job, whose lists the old parts are not
    manifest = {
        "job": "recommend",
        "model": str(retrieval.folder.resolve()),
        "model_uri": request.model,  # as asked: a folder or models:/NAME@ALIAS
        "model_version": retrieval.info.label if retrieval.info else None,
        "data": str(request.data.resolve()),
        "tiers": _absolute(request.tiers),
        **content,
        "direction": direction,
        "k": k,
        "exact": request.exact,
        "policy": cfg.policy.model_dump(mode="json") if direction == "creator" else None,
        **retrieval.describe((searched,)),
    }
    finish = None
    slots = cfg.refresh.new_good_creators, cfg.refresh.new_good_slots_per_list
    if expose is not None and len(expose) and direction == "creator" and slots[0]:
        goods = np.unique(np.asarray(expose, np.int64))
        manifest["exposure_goods"] = {"count": len(goods), "digest": ids_digest(goods)}
        finish = functools.partial(_exposure, retrieval, goods, k, slots)
    n_queries = shard.n_queries
    if engine != "local" or workers > 1:
        _RUNS.clear()  # the workers load their own; the driver need not hold a copy
    result = write_shards(
        n_queries,
        factory,
        Path(out),
        shard_size=shard_size or cfg.batch.shard_size_for(direction),
        manifest=manifest,
        force=overwrite,
        engine=engine,  # type: ignore[arg-type]
        workers=workers,
        progress=progress,
        cores=cfg.batch.cores or None,
        desc=f"recommend {direction}",
        finish=finish,
    )
    log.info("recommend %s: %s rows in %.1fs", direction, result.get("rows"),
             time.perf_counter() - started)  # fmt: skip
    return result
