"""`haowu recommend`: the batch job writing top-k lists for every creator (or product).

`make_shard_fn(...)` returns the shard function (query positions -> rows) over a
`RetrievalRun` (serving/retrieval.py): FAISS search (exact with `exact=True`) and, for
goods, the platform's policy (L0 and flagged merchants out, goods already promoted out,
Selected Goods boost and share, category diversity). `run` hands it to
`serving.batch.write_shards`, which writes `OUT/part-NNNNN.parquet` and `OUT/_SUCCESS`
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
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from features.errors import HaowuError
from features.matching_data import IdIndex
from features.settings import Settings, load_settings
from models.recommender import Recommender

log = logging.getLogger(__name__)

SUCCESS = "_SUCCESS"
DIRECTIONS = ("creator", "product")


@dataclass
class MatchingArtifacts:
    """What a matching run folder serves: the recommender and its position <-> ID maps."""

    model: Recommender
    creators: IdIndex
    products: IdIndex
    product_info: pd.DataFrame | None  # by product position: category_l1, tier when known
    path: Path


def load_matching_run(model: Path | str) -> MatchingArtifacts:
    """Load `RUN_DIR` (or `RUN_DIR/model`) written by `haowu train-matching`."""
    import training.two_tower_train  # noqa: F401  (registers the two_tower recommender kind)

    if str(model).startswith("models:/"):
        raise HaowuError(
            "registry URIs (models:/NAME@ALIAS) are not supported yet; pass the run folder"
        )
    folder = Path(model)
    if (folder / "model").is_dir():
        folder = folder / "model"
    if not (folder / "creator_ids.npy").is_file():
        raise HaowuError(f"{model} is not a train-matching run folder (no model/creator_ids.npy)")
    info_path = folder / "products.parquet"
    info = pd.read_parquet(info_path) if info_path.is_file() else None
    return MatchingArtifacts(
        Recommender.load(folder),
        IdIndex(np.load(folder / "creator_ids.npy")),
        IdIndex(np.load(folder / "product_ids.npy")),
        info,
        folder,
    )


# ----------------------------------------------------------------- shard function
def _why_goods(lists_frame: pd.DataFrame, new_product: np.ndarray) -> np.ndarray:
    slot = np.where(
        lists_frame["selected_slot"],
        "Selected Goods share slot",
        np.where(lists_frame["diversity_slot"], "category diversity slot", "score rank"),
    ).astype(object)
    boosted = lists_frame["selected_goods"].to_numpy() & ~lists_frame["selected_slot"].to_numpy()
    slot[boosted] += "; Selected Goods boost"
    slot[new_product] += "; new product, embedded from its features"
    return slot


def _why_creators(new_product: np.ndarray, new_creator: np.ndarray) -> np.ndarray:
    why = np.full(len(new_product), "score rank", dtype=object)
    why[new_product] += "; new product, embedded from its features"
    why[new_creator] += "; new creator, embedded from its features"
    return why


_RUNS: dict[str, Any] = {}  # one loaded RetrievalRun per job and process


class ShardFn:
    """Query positions (0..n_queries-1) -> list rows; loads its `RetrievalRun` on first use
    (shared with the driver when both are one process). Picklable: the run is not pickled."""

    def __init__(
        self,
        data_dir: Path,
        model: Path | str,
        tiers: Path | None,
        k: int,
        direction: str,
        exact: bool,
        cfg: Settings,
    ) -> None:
        if direction not in DIRECTIONS:
            raise HaowuError(f"--direction must be creator or product, got {direction!r}")
        if not isinstance(k, int) or k < 1:
            raise HaowuError(f"--k must be >= 1, got {k}")
        self.data_dir, self.model, self.tiers = Path(data_dir), model, tiers
        self.k, self.direction, self.exact, self.cfg = k, direction, exact, cfg
        self.key = json.dumps(
            [str(self.data_dir.resolve()), str(model), str(tiers), exact,
             cfg.index.model_dump(mode="json"), cfg.policy.model_dump(mode="json")],
            sort_keys=True,
        )  # fmt: skip

    @property
    def run(self) -> Any:
        from serving.retrieval import RetrievalRun

        if self.key not in _RUNS:
            _RUNS.clear()  # one job at a time per process
            _RUNS[self.key] = RetrievalRun.load(
                self.data_dir, self.model, self.tiers, self.cfg.index, self.cfg.policy, self.exact
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
        positions = run.creators.queries[queries]
        lists = run.goods_for_creators(positions, self.k)
        frame = lists.to_frame(run.creators.ids.ids[positions], "creator_id")
        product_pos = run.products.ids.positions(frame["product_id"].to_numpy())
        frame["reason"] = _why_goods(frame, run.products.new[product_pos])
        for column, dtype in (("tier", "Int8"), ("category_l1", "Int32")):  # -1: unknown
            frame[column] = frame[column].astype(dtype).mask(frame[column] < 0)
        frame["creator_id"] = run.external("creator", frame["creator_id"].to_numpy())
        frame["product_id"] = run.external("product", frame["product_id"].to_numpy())
        return frame

    def _creators(self, queries: np.ndarray) -> pd.DataFrame:
        run = self.run
        positions = run.products.queries[queries]
        creator_ids, scores = run.creators_for_products(positions, self.k)
        n, k = creator_ids.shape
        keep = (creator_ids >= 0).ravel()
        product_pos = np.repeat(positions, k)[keep]
        creators = creator_ids.ravel()[keep]
        creator_pos = run.creators.ids.positions(creators)
        return pd.DataFrame(
            {
                "product_id": run.external("product", run.products.ids.ids[product_pos]),
                "rank": np.tile(np.arange(1, k + 1), n)[keep],
                "creator_id": run.external("creator", creators),
                "score": scores.ravel()[keep].astype(np.float32),
                "reason": _why_creators(
                    run.products.new[product_pos], run.creators.new[creator_pos]
                ),
            }
        )

    def __getstate__(self) -> dict[str, Any]:
        return dict(self.__dict__)  # the loaded run lives in _RUNS, never in the pickle


def make_shard_fn(
    data_dir: Path,
    model: Path | str,
    tiers: Path | None = None,
    k: int = 50,
    direction: str = "creator",
    exact: bool = False,
    cfg: Settings | None = None,
) -> ShardFn:
    """The shard function of one `haowu recommend` job: query positions -> rows.

    `functools.partial(make_shard_fn, ...)` is the picklable factory `write_shards`
    calls once per process; the first call in a process loads the run.
    """
    return ShardFn(data_dir, model, tiers, k, direction, exact, cfg or load_settings())


# -------------------------------------------------------------------------- driver
def run(
    data_dir: Path,
    model: Path | str,
    out: Path,
    k: int = 50,
    direction: str = "creator",
    exact: bool = False,
    overwrite: bool = False,
    tiers: Path | None = None,
    cfg: Settings | None = None,
    progress: bool = True,
    engine: str | None = None,
    workers: int | None = None,
    shard_size: int | None = None,
) -> dict[str, Any]:
    """Write top-k lists for every creator (or product); returns the `_SUCCESS` manifest.

    A rerun of the same job resumes (finished parts are kept); `overwrite` starts over.
    """
    from serving.batch import write_shards

    cfg = cfg or load_settings()
    started = time.perf_counter()
    factory = functools.partial(
        make_shard_fn, Path(data_dir), model, tiers, k, direction, exact, cfg
    )
    shard = factory()
    retrieval = shard.run
    n_items = len(retrieval.products) if direction == "creator" else len(retrieval.creators)
    if k > n_items:
        what = "goods" if direction == "creator" else "creators"
        raise HaowuError(f"--k {k} exceeds the {n_items} {what} the model and data hold")
    retrieval.index("products" if direction == "creator" else "creators")  # built once, here
    engine = engine or cfg.batch.engine
    workers = workers or cfg.batch.workers
    manifest = {
        "job": "recommend",
        "model": str(retrieval.folder.resolve()),
        "data": str(Path(data_dir).resolve()),
        "tiers": str(Path(tiers).resolve()) if tiers else None,
        "direction": direction,
        "k": k,
        "exact": exact,
        "policy": cfg.policy.model_dump(mode="json") if direction == "creator" else None,
        **retrieval.describe(),
    }
    n_queries = shard.n_queries
    if engine != "local" or workers > 1:
        _RUNS.clear()  # the workers load their own; the driver need not hold a copy
    result = write_shards(
        n_queries,
        factory,
        Path(out),
        shard_size=shard_size or cfg.batch.shard_size,
        manifest=manifest,
        force=overwrite,
        engine=engine,  # type: ignore[arg-type]
        workers=workers,
        progress=progress,
        cores=cfg.batch.cores or None,
        desc=f"recommend {direction}",
    )
    log.info("recommend %s: %s rows in %.1fs", direction, result.get("rows"),
             time.perf_counter() - started)  # fmt: skip
    return result
