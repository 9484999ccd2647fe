"""`haowu bench batch`: the batch job end to end on synthetic embeddings of a preset's size.

The world (models/retrieval/synthetic.py: goods with popularity norms, creators near
their categories) is generated once into a work folder: vectors as .npy (workers
memory-map the queries), the tuned index (models/retrieval/index.py) and the synthetic catalog.
Then `write_shards` runs the shard functions below, as the real job would: ANN search
with over-fetch, the policy (seen goods, L0/flagged, Selected Goods, diversity), Parquet.

Reported per direction: the job's wall time, q/s, peak RSS, CPU use; ANN recall@k of the
index against exact FAISS search on a sample; exact q/s on that sample and the job's
speed-up over it, extrapolated to every query. Shard functions are picklable factories
(`HashShards` needs no model at all: tests and cluster smoke runs use it).
"""

from __future__ import annotations

import functools
import gc
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import pandas as pd
import psutil
import scipy.sparse as sp

from features.errors import HaowuError
from features.settings import PolicyConfig, Settings
from models.retrieval.catalog import ProductCatalog
from models.retrieval.directions import GoodsRetriever, creators_for_products
from models.retrieval.index import EmbeddingIndex, ann_recall
from serving.batch.parts import ShardFn
from serving.batch.resources import limit_threads
from serving.batch.shards import write_shards

log = logging.getLogger(__name__)

CATALOG_FIELDS = (
    "product_ids",
    "tier",
    "flagged",
    "category_l1",
    "category_l2",
    "category_l3",
    "price_band",
    "commission",
)


# ------------------------------------------------------------ shard functions
def _hash_rows(
    positions: np.ndarray, k: int, seed: int, delay_s: float, fail_at: int | None
) -> pd.DataFrame:
    if delay_s:
        time.sleep(delay_s)
    if fail_at is not None and fail_at in positions:
        raise HaowuError(f"query {fail_at}: simulated failure")
    rank = np.arange(1, k + 1, dtype=np.int64)
    product = (positions[:, None] * 1_000_003 + rank * 7_919 + seed) % 1_000_000_007
    return pd.DataFrame(
        {
            "creator_id": np.repeat(positions, k),
            "rank": np.tile(rank, len(positions)),
            "product_id": product.ravel(),
            "score": np.tile(1.0 / rank, len(positions)).astype(np.float32),
        }
    )


@dataclass(frozen=True)
class HashShards:
    """Model-free lists: k pseudo-random goods per creator, a pure function of (seed, query).

    `delay_s` slows every shard (to kill a job mid-run in tests); `fail_at` makes the
    shard holding that query fail (to test how errors travel back from workers).
    """

    k: int = 5
    seed: int = 0
    delay_s: float = 0.0
    fail_at: int | None = None

    def __call__(self) -> ShardFn:
        return functools.partial(
            _hash_rows, k=self.k, seed=self.seed, delay_s=self.delay_s, fail_at=self.fail_at
        )


def _seen(positions: np.ndarray, n_goods: int, per_creator: int, seed: int) -> sp.csr_matrix:
    """Goods each creator "already promoted": deterministic in (seed, first position)."""
    rng = np.random.default_rng([seed, int(positions[0]) if len(positions) else 0])
    cols = rng.integers(0, n_goods, len(positions) * per_creator)
    rows = np.repeat(np.arange(len(positions)), per_creator)
    return sp.csr_matrix(
        (np.ones(len(cols), np.int8), (rows, cols)), shape=(len(positions), n_goods)
    )


def _goods_rows(
    retriever: GoodsRetriever,
    queries: np.ndarray,
    k: int,
    per_creator: int,
    seed: int,
    positions: np.ndarray,
) -> pd.DataFrame:
    vectors = np.ascontiguousarray(queries[positions])  # (n, dim) from the memory map
    seen = _seen(positions, len(retriever.catalog), per_creator, seed) if per_creator else None
    lists = retriever.recommend(vectors, k, seen)
    return lists.to_frame(positions, "creator_id")


@dataclass(frozen=True)
class GoodsShards:
    """Creator direction over a bench world: creators.npy -> goods index -> policy."""

    world: str
    k: int
    policy: PolicyConfig
    seen_per_creator: int = 0
    seed: int = 0

    def __call__(self) -> ShardFn:
        folder = Path(self.world)
        index = EmbeddingIndex.load(folder, "goods")
        with np.load(folder / "catalog.npz") as arrays:
            catalog = ProductCatalog(**{name: arrays[name] for name in CATALOG_FIELDS})
        queries = np.load(folder / "creators.npy", mmap_mode="r")
        retriever = GoodsRetriever(index, catalog, self.policy)
        return functools.partial(
            _goods_rows, retriever, queries, self.k, self.seen_per_creator, self.seed
        )


def _creator_rows(
    index: EmbeddingIndex, queries: np.ndarray, k: int, positions: np.ndarray
) -> pd.DataFrame:
    ids, scores = creators_for_products(index, np.ascontiguousarray(queries[positions]), k)
    keep = (ids >= 0).ravel()
    return pd.DataFrame(
        {
            "product_id": np.repeat(positions, k)[keep],
            "rank": np.tile(np.arange(1, k + 1), len(positions))[keep],
            "creator_id": ids.ravel()[keep],
            "score": scores.ravel()[keep],
        }
    )


@dataclass(frozen=True)
class CreatorsShards:
    """Product direction over a bench world: products.npy -> creator index (达人广场)."""

    world: str
    k: int

    def __call__(self) -> ShardFn:
        folder = Path(self.world)
        index = EmbeddingIndex.load(folder, "creators")
        queries = np.load(folder / "products.npy", mmap_mode="r")
        return functools.partial(_creator_rows, index, queries, self.k)


# ------------------------------------------------------------------ the world
def _build(
    name: str, vectors: np.ndarray, tune_queries: np.ndarray, cfg: Settings, folder: Path
) -> dict[str, Any]:
    start = time.perf_counter()
    ids = np.arange(len(vectors), dtype=np.int64)
    index = EmbeddingIndex.build_tuned(vectors, ids, cfg.index, tune_queries)
    seconds = time.perf_counter() - start
    index.save(folder, name)
    record = index.params.get("tune", {})
    return {
        f"{name}_index.kind": index.kind,
        f"{name}_index.kind_reason": index.params.get("kind_reason", "auto by size"),
        f"{name}_index.nprobe": record.get("nprobe"),
        f"{name}_index.k_factor": record.get("k_factor"),
        f"{name}_index.tune_recall@{record.get('k')}": record.get("recall"),
        f"{name}_index.build_and_tune_s": round(seconds, 1),
    }


def prepare_world(cfg: Settings, folder: Path, directions: tuple[str, ...], k: int) -> dict:
    """Vectors, catalog and tuned indexes in `folder`; reused when already there."""
    from models.retrieval.synthetic import EmbeddingWorld, synthetic_catalog

    data = cfg.data
    key = {
        "preset": data.preset,
        "seed": data.seed,
        "creators": data.n_creators,
        "products": data.n_products,
        "k": k,
        "index": cfg.index.model_dump(mode="json"),
    }
    meta_path = folder / "world.json"
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    if meta.get("key") != key:
        meta = {"key": key, "built": {}}
    folder.mkdir(parents=True, exist_ok=True)
    world = EmbeddingWorld.make(
        data.n_categories_l1, data.n_categories_l2, data.n_leaf_categories, seed=data.seed
    )
    limit_threads(cfg.index.threads)
    if "vectors" not in meta["built"]:
        products, leaves = world.products(data.n_products, seed=data.seed + 1)
        np.save(folder / "products.npy", products)
        catalog = synthetic_catalog(
            world, leaves, data.tier_shares, data.flagged_merchant_share, data.seed + 3
        )
        np.savez(folder / "catalog.npz", **{n: getattr(catalog, n) for n in CATALOG_FIELDS})
        del products, leaves, catalog
        creators, _ = world.creators(data.n_creators, seed=data.seed + 2)
        np.save(folder / "creators.npy", creators)
        del creators
        meta["built"]["vectors"] = {}
    for direction, name, items, queries in (
        ("creator", "goods", "products.npy", lambda n: world.creators(n, seed=data.seed + 7)[0]),
        ("product", "creators", "creators.npy", lambda n: world.products(n, seed=data.seed + 8)[0]),
    ):
        if direction in directions and name not in meta["built"]:
            gc.collect()
            vectors = np.load(folder / items)
            meta["built"][name] = _build(
                name, vectors, queries(cfg.index.tune_queries), cfg, folder
            )
            del vectors
        meta_path.write_text(json.dumps(meta, indent=2))
    return {key: value for built in meta["built"].values() for key, value in built.items()}


def ann_vs_exact(
    folder: Path, name: str, items: str, queries: np.ndarray, k: int, threads: int
) -> dict[str, Any]:
    """Recall@k of the saved index against exact FAISS search, and both q/s, on a sample."""
    limit_threads(threads)
    index = EmbeddingIndex.load(folder, name)
    vectors = np.load(folder / items, mmap_mode="r")
    start = time.perf_counter()
    found, _ = index.search(queries, k)
    ann_s = time.perf_counter() - start
    start = time.perf_counter()
    _, truth = faiss.knn(queries, vectors, k, metric=faiss.METRIC_INNER_PRODUCT)
    exact_s = time.perf_counter() - start
    return {
        "sample_queries": len(queries),
        f"ann_recall@{k}": round(ann_recall(found, truth), 4),
        "ann_search_qps": round(len(queries) / ann_s),
        "exact_qps": round(len(queries) / exact_s, 1),
    }


# ---------------------------------------------------------------------- bench
def bench_direction(
    cfg: Settings, folder: Path, direction: str, workers: int, engine: str, k: int
) -> dict[str, Any]:
    """One batch job over every query of a direction, and its comparison with exact."""
    bench = cfg.batch.bench
    n_queries = cfg.data.n_creators if direction == "creator" else cfg.data.n_products
    n_items = cfg.data.n_products if direction == "creator" else cfg.data.n_creators
    k = min(k, n_items)
    seen = bench.seen_per_creator or max(1, round(cfg.data.interactions / cfg.data.n_creators))
    factory: Any = (
        GoodsShards(str(folder), k, cfg.policy, seen, bench.seed)
        if direction == "creator"
        else CreatorsShards(str(folder), k)
    )
    out = folder / "lists" / f"{direction}-w{workers}-{engine}"
    manifest = {"bench": cfg.data.preset, "direction": direction, "k": k}
    result = write_shards(
        n_queries,
        factory,
        out,
        shard_size=cfg.batch.shard_size_for(direction),
        manifest=manifest,
        force=True,
        engine=engine,
        workers=workers,
        cores=cfg.batch.cores or None,
        desc=direction,
    )
    gc.collect()
    rng = np.random.default_rng(bench.seed)
    sample = np.sort(rng.choice(n_queries, min(bench.eval_queries, n_queries), replace=False))
    queries = np.load(
        folder / ("creators.npy" if direction == "creator" else "products.npy"), mmap_mode="r"
    )
    name, items = (
        ("goods", "products.npy") if direction == "creator" else ("creators", "creators.npy")
    )
    compare = ann_vs_exact(
        folder, name, items, np.ascontiguousarray(queries[sample]), k, result["cores"]
    )
    exact_hours = n_queries / compare["exact_qps"] / 3600
    prefix = f"{direction}.w{workers}.{engine}"
    figures = {
        "queries": n_queries,
        "items": n_items,
        "k": k,
        "parts": result["parts"],
        "rows": result["rows"],
        "full_lists_share": round(result["rows"] / (n_queries * k), 4),
        "job_s": result["seconds"],
        "job_min": round(result["seconds"] / 60, 2),
        "job_qps": result["queries_per_s"],
        "peak_rss_gib": result["peak_rss_gib"],
        "cpu_utilisation": result["cpu_utilisation"],
        "cpu_s": result["cpu_seconds"],
        # what the job's CPU work takes with both cores to itself (the machine is shared)
        "job_min_if_idle": round(result["cpu_seconds"] / result["cores"] / 60, 2),
        "load_avg_1m_end": result["load_avg_1m"],
        **compare,
        "exact_hours_extrapolated": round(exact_hours, 2),
        "speedup_vs_exact": round(result["queries_per_s"] / compare["exact_qps"], 1),
        "output_gib": round(sum(p.stat().st_size for p in out.glob("part-*")) / 2**30, 3),
    }
    return {f"{prefix}.{key}": value for key, value in figures.items()}


def run(
    cfg: Settings,
    folder: Path,
    directions: tuple[str, ...],
    workers: tuple[int, ...],
    engine: str = "local",
) -> dict[str, Any]:
    """The whole benchmark; returns flat figures (also printed by the CLI)."""
    k = cfg.batch.bench.k
    started = time.perf_counter()
    metrics: dict[str, Any] = {
        "preset": cfg.data.preset,
        "k": k,
        **{f"{d}.shard_size": cfg.batch.shard_size_for(d) for d in directions},
        "load_avg_1m_start": round(psutil.getloadavg()[0], 2),
    }
    metrics.update(prepare_world(cfg, folder, directions, k))
    metrics["prepare_s"] = round(time.perf_counter() - started, 1)
    for direction in directions:
        for n in workers:
            metrics.update(bench_direction(cfg, folder, direction, n, engine, k))
            log.info("%s", {key: v for key, v in metrics.items() if key.startswith(direction)})
    metrics["load_avg_1m_end"] = round(psutil.getloadavg()[0], 2)
    metrics["wall_s"] = round(time.perf_counter() - started, 1)
    return metrics
