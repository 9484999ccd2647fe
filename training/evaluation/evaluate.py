"""Full-ranking evaluation: every creator is ranked against every product (or every
candidate of a slice), with the products it already has in training (and, for test,
validation) masked out, so a model is never rewarded for re-finding known pairs.

The same function evaluates every recommender (the two-tower model, the baselines, the
synthetic oracle), in batches of creators, so memory stays at batch x n_products.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from features.matching_data import Interactions
from models.matching.recommender import Recommender, reused_scores
from training.evaluation.ranking_metrics import (
    category_coverage_at_k,
    hit_rate_of_hits,
    hits,
    item_coverage_at_k,
    ndcg_of_hits,
    recall_of_hits,
    truth_counts,
)


@dataclass
class EvalTask:
    """Which creators to rank, what counts as a hit, what to mask and what may be ranked."""

    name: str
    creators: np.ndarray  # (n,) creator positions with a non-empty truth
    truth: sp.csr_matrix  # (n_creators, n_products) held-out pairs
    exclude: sp.csr_matrix | None  # (n_creators, n_products) pairs to mask (known ones)
    candidates: np.ndarray | None = None  # product positions that may be ranked (a slice)


@dataclass
class EvalResult:
    metrics: dict[str, float]
    recall_curve: np.ndarray  # (max_k,) mean recall@1..max_k


def make_task(
    name: str,
    inter: Interactions,
    truth_mask: np.ndarray,
    exclude_mask: np.ndarray | None,
    max_creators: int = 0,
    seed: int = 0,
    candidates: np.ndarray | None = None,
) -> EvalTask:
    """Build a task from pair masks; `max_creators` > 0 samples that many creators."""
    truth = inter.csr(truth_mask)
    if candidates is not None:
        keep = np.zeros(truth.shape[1], dtype=np.float32)
        keep[candidates] = 1.0
        truth = (truth @ sp.diags(keep)).tocsr()
        truth.eliminate_zeros()
    creators = np.flatnonzero(truth_counts(truth) > 0)
    if max_creators and len(creators) > max_creators:
        rng = np.random.default_rng(seed)
        creators = np.sort(rng.choice(creators, max_creators, replace=False))
    exclude = inter.csr(exclude_mask) if exclude_mask is not None else None
    return EvalTask(name, creators, truth, exclude, candidates)


def top_k(model: Recommender, task: EvalTask, k: int, batch: int = 1024) -> np.ndarray:
    """(n, k) ranked product positions for the task's creators (-1 where none is left)."""
    out = []
    with reused_scores():  # each batch is ranked before the next is scored
        for start in range(0, len(task.creators), batch):
            chunk = task.creators[start : start + batch]
            exclude = task.exclude[chunk] if task.exclude is not None else None
            positions, scores = model.recommend(
                chunk, k, exclude=exclude, candidates=task.candidates
            )
            out.append(np.where(np.isfinite(scores), positions, -1))
    return np.concatenate(out) if out else np.empty((0, k), dtype=np.int64)


def evaluate(
    model: Recommender,
    task: EvalTask,
    ks: list[int],
    categories: np.ndarray | None = None,
    batch: int = 1024,
) -> EvalResult:
    """Recall/NDCG/HitRate@k averaged over the task's creators, plus coverage."""
    if len(task.creators) == 0:
        return EvalResult({}, np.zeros(max(ks)))
    max_k = max(ks)
    recommended = top_k(model, task, max_k, batch)
    truth = task.truth[task.creators]
    catalog = len(task.candidates) if task.candidates is not None else task.truth.shape[1]
    found, counts = hits(recommended, truth), truth_counts(truth)
    metrics: dict[str, float] = {}
    for k in sorted(ks):
        h = found[:, :k]
        metrics[f"recall@{k}"] = float(recall_of_hits(h, counts).mean())
        metrics[f"ndcg@{k}"] = float(ndcg_of_hits(h, counts).mean())
        metrics[f"hit_rate@{k}"] = float(hit_rate_of_hits(h).mean())
        metrics[f"coverage@{k}"] = item_coverage_at_k(recommended, k, catalog)
        if categories is not None:
            pool = categories if task.candidates is None else categories[task.candidates]
            n_cats = len(np.unique(pool[pool >= 0]))
            metrics[f"category_coverage@{k}"] = category_coverage_at_k(
                recommended, k, categories, n_cats
            )
    curve = np.cumsum(found, axis=1) / np.maximum(counts, 1)[:, None]
    return EvalResult(metrics, curve.mean(axis=0))
