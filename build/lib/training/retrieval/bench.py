"""`haowu bench index`: build, tune and time the retrieval index on synthetic embeddings.

The embeddings (models/retrieval/synthetic.py) imitate a trained two-tower model at the
preset's scale: clustered by category, hot categories, popularity-dependent norms. They
are generated in-process, in chunks, so the full preset (10M x 64 floats) needs no files.

Reported per direction: build seconds (train + add), memory (RSS growth over the build
and the index's own bytes), recall@k of the tuned ANN against exact search on held-out
queries, q/s of the ANN and of exact FAISS search on the same queries and their ratio;
for goods, the policy's share of query time at k (over-fetch, filters, boost, diversity).
"""

from __future__ import annotations

import gc
import logging
import math
import resource
import time
from typing import Any

import faiss
import numpy as np
import psutil
import scipy.sparse as sp

from features.settings import IndexConfig, PolicyConfig
from features.synthetic.params import DataConfig
from models.retrieval.catalog import ProductCatalog
from models.retrieval.directions import GoodsRetriever
from models.retrieval.index import EmbeddingIndex, ann_recall
from models.retrieval.policy import Policy
from models.retrieval.synthetic import EmbeddingWorld, synthetic_catalog

logger = logging.getLogger(__name__)


def _rss() -> int:
    return psutil.Process().memory_info().rss


CPU: dict[str, float] = {}  # label -> process CPU seconds (all threads) of the last call


def _timed(fn: Any, *args: Any, label: str = "") -> tuple[Any, float]:
    """(result, wall seconds); the CPU seconds go to CPU[label]. On a shared machine the
    CPU time divided by the threads is what the wall time would be on idle cores."""
    cpu, start = time.process_time(), time.perf_counter()
    out = fn(*args)
    if label:
        CPU[label] = time.process_time() - cpu
    return out, time.perf_counter() - start


def bench_direction(
    name: str, vectors: np.ndarray, queries: np.ndarray, cfg: IndexConfig, k: int, n_eval: int
) -> tuple[EmbeddingIndex, dict[str, Any]]:
    """Build + tune over `vectors`; recall and q/s on `n_eval` held-out queries."""
    gc.collect()
    rss0 = _rss()
    index, build_s = _timed(
        EmbeddingIndex.build, vectors, np.arange(len(vectors)), cfg, label="build"
    )
    rss_build = _rss() - rss0
    tune_q, eval_q = queries[: cfg.tune_queries], queries[cfg.tune_queries :][:n_eval]
    record, tune_s = _timed(index.tune, tune_q, cfg.target_recall + cfg.tune_margin, k)
    index.search(eval_q[:50], k)  # warm caches
    (found, _), ann_s = _timed(index.search, eval_q, k, label="ann")
    (truth_scores, truth), exact_s = _timed(
        lambda: faiss.knn(eval_q, vectors, k, metric=faiss.METRIC_INNER_PRODUCT), label="exact"
    )
    recall = ann_recall(found, truth)
    ann_qps, exact_qps = len(eval_q) / ann_s, len(eval_q) / exact_s
    out = {
        f"{name}.items": len(vectors),
        f"{name}.kind": index.kind,
        f"{name}.nlist": index.params.get("nlist", 0),
        f"{name}.nprobe": record.nprobe,
        f"{name}.k_factor": record.k_factor,
        f"{name}.norm_augment": bool(index.params.get("norm_max")),
        f"{name}.train_s": index.params.get("train_s", 0.0),
        f"{name}.add_s": index.params["add_s"],
        f"{name}.build_s": round(build_s, 1),
        f"{name}.build_cpu_s": round(CPU["build"], 3),
        f"{name}.tune_s": round(tune_s, 1),
        f"{name}.rss_build_gib": round(rss_build / 2**30, 2),
        f"{name}.index_gib": round(index.nbytes / 2**30, 2),
        f"{name}.tune_recall@{k}": record.recall,
        f"{name}.recall@{k}": round(recall, 4),
        f"{name}.ann_qps": round(ann_qps),
        f"{name}.exact_qps": round(exact_qps, 1),
        f"{name}.speedup": round(ann_qps / exact_qps, 1),
        f"{name}.ann_cpu_ms_per_query": round(1e3 * CPU["ann"] / len(eval_q), 3),
        f"{name}.exact_cpu_ms_per_query": round(1e3 * CPU["exact"] / len(eval_q), 2),
        f"{name}.cpu_speedup": round(CPU["exact"] / max(CPU["ann"], 1e-9), 1),
        f"{name}.eval_queries": len(eval_q),
    }
    del truth_scores
    logger.info("%s: %s", name, out)
    return index, out


def bench_policy(
    index: EmbeddingIndex,
    catalog: ProductCatalog,
    queries: np.ndarray,
    cfg: PolicyConfig,
    k: int,
    seen_per_creator: int,
    seed: int,
) -> dict[str, Any]:
    """Policy's share of query time at k: ANN over-fetch vs. Policy.apply on its output."""
    rng = np.random.default_rng(seed)
    n = len(queries)
    cols = rng.integers(0, len(catalog), n * seen_per_creator)
    seen = sp.csr_matrix(
        (np.ones(len(cols), np.int8), (np.repeat(np.arange(n), seen_per_creator), cols)),
        shape=(n, len(catalog)),
    )
    fetch = math.ceil(k * cfg.overfetch)
    index.search(queries[:50], fetch)
    (ids, scores), search_s = _timed(index.search, queries, fetch, label="search")
    policy = Policy(cfg)
    policy.apply(ids[:50], scores[:50], catalog, seen[:50], None, k)
    lists, policy_s = _timed(policy.apply, ids, scores, catalog, seen, None, k, label="policy")
    retriever = GoodsRetriever(index, catalog, cfg)
    full, end_to_end_s = _timed(retriever.recommend, queries, k, seen)
    return {
        "policy.fetch": fetch,
        "policy.search_ms_per_query": round(1e3 * search_s / n, 3),
        "policy.apply_ms_per_query": round(1e3 * policy_s / n, 3),
        "policy.share_of_query_time": round(policy_s / (search_s + policy_s), 3),
        "policy.search_cpu_ms_per_query": round(1e3 * CPU["search"] / n, 3),
        "policy.apply_cpu_ms_per_query": round(1e3 * CPU["policy"] / n, 3),
        # idle cores: search wall ~ its CPU / threads (FAISS), the policy is one thread
        "policy.share_idle_estimate": round(
            CPU["policy"] / (CPU["search"] / max(1, faiss.omp_get_max_threads()) + CPU["policy"]),
            3,
        ),
        "policy.end_to_end_qps": round(n / end_to_end_s),
        "policy.full_lists_share": round(float((full.lengths == k).mean()), 4),
        "policy.selected_goods_share": round(float(full.selected_goods.mean()), 4),
        "policy.diversity_slot_share": round(float(full.diversity_slot.mean()), 4),
        "policy.apply_full_lists_share": round(float((lists.lengths == k).mean()), 4),
    }


def run(
    data: DataConfig,
    index_cfg: IndexConfig,
    policy_cfg: PolicyConfig,
    k: int = 100,
    n_eval: int = 1000,
    directions: tuple[str, ...] = ("products", "creators"),
) -> dict[str, Any]:
    """The whole benchmark for one preset; returns flat metrics."""
    start = time.perf_counter()
    faiss.omp_set_num_threads(index_cfg.threads)
    world = EmbeddingWorld.make(
        data.n_categories_l1, data.n_categories_l2, data.n_leaf_categories, seed=data.seed
    )
    n_queries = index_cfg.tune_queries + n_eval
    metrics: dict[str, Any] = {
        "preset": data.preset,
        "k": k,
        "dim": 64,
        "load_avg_1m_start": round(psutil.getloadavg()[0], 2),
    }
    if "products" in directions:
        products, leaves = world.products(data.n_products, seed=data.seed + 1)
        creators_q, _ = world.creators(n_queries, seed=data.seed + 2)
        index, found = bench_direction("products", products, creators_q, index_cfg, k, n_eval)
        metrics.update(found)
        catalog = synthetic_catalog(
            world, leaves, data.tier_shares, data.flagged_merchant_share, data.seed + 3
        )
        seen_per_creator = max(1, round(data.interactions / data.n_creators))
        metrics.update(
            bench_policy(
                index, catalog, creators_q[-n_eval:], policy_cfg, k, seen_per_creator, data.seed + 4
            )
        )
        del index, products, catalog
        gc.collect()
    if "creators" in directions:
        creators, _ = world.creators(data.n_creators, seed=data.seed + 5)
        products_q, _ = world.products(n_queries, seed=data.seed + 6)
        _, found = bench_direction(
            "creators", creators, products_q, index_cfg, min(k, data.n_creators), n_eval
        )
        metrics.update(found)
    metrics["peak_rss_gib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)
    metrics["load_avg_1m_end"] = round(psutil.getloadavg()[0], 2)
    metrics["wall_s"] = round(time.perf_counter() - start, 1)
    return metrics
