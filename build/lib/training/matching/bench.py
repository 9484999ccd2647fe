"""`haowu bench train`: the matching targets, checked on a run's metrics, and the cost of
one training epoch at a preset's full scale (measured on a sample of steps).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import torch

from features.settings import Settings
from models.matching.two_tower import (
    HistoryBatch,
    TowerSpec,
)
from models.matching.two_tower_served import build_two_tower
from training.matching.two_tower_fit import optimizers, train_step

log = logging.getLogger(__name__)

# (metric, reference, factor): metric >= factor * reference
TARGETS = [
    ("recall@50", "als_recall@50", 1.0),
    ("recall@50", "pop_recall@50", 2.0),
    ("recall@50", "oracle_recall@50", 0.7),
    ("cold_recall@50", "cold_pop_recall@50", 3.0),
]


def check_targets(metrics: dict[str, float]) -> dict[str, Any]:
    """One line per target: the ratio reached and whether it passes."""
    out: dict[str, Any] = {}
    for metric, ref, factor in TARGETS:
        if metric in metrics and ref in metrics:
            ratio = metrics[metric] / metrics[ref] if metrics[ref] else float("inf")
            out[f"{metric} / {ref}"] = (
                f"{ratio:.3f} (target >= {factor}) {'PASS' if ratio >= factor else 'MISS'}"
            )
    return out


def bench_epoch(cfg: Settings, steps: int = 20, seed: int = 0) -> dict[str, Any]:
    """Time `steps` training steps with the preset's catalog sizes and extrapolate to one
    epoch over its interactions (or `max_train_pairs`): the ID tables, side features and
    batch are full size, the pairs are drawn at random (Zipf-popular products)."""
    mcfg, data = cfg.matching, cfg.data
    torch.set_num_threads(mcfg.threads)
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    history_rows = data.n_products + 1 if mcfg.creator_history else 0
    creator = TowerSpec(data.n_creators + 1, [data.n_leaf_categories + 1, 6, 40], 3, history_rows)
    product = TowerSpec(
        data.n_products + 1,
        [
            data.n_categories_l1 + 1,
            data.n_categories_l2 + 1,
            data.n_leaf_categories + 1,
            6,
            data.n_merchants + 1,
            3,
            7,
        ],
        9,
    )
    rss0 = psutil.Process().memory_info().rss
    model = build_two_tower(mcfg, creator, product)
    optimisers = optimizers(model, mcfg)
    batch = mcfg.batch_size
    # logQ of a Zipf-popular catalog, as the trainer derives it from the pair counts
    share = 1.0 / np.arange(1, product.n_ids + 1) ** 1.2
    share /= share.sum()
    log_q = torch.from_numpy(
        np.log(batch * share + mcfg.extra_negatives / product.n_ids).astype(np.float32)
    )

    def inputs(spec: TowerSpec, rows: np.ndarray) -> tuple[torch.Tensor, ...]:
        cats = torch.stack([torch.randint(0, c, (len(rows),)) for c in spec.cardinalities], 1)
        return torch.from_numpy(rows), cats, torch.randn(len(rows), spec.n_numeric)

    def history(size: int) -> HistoryBatch | None:
        """Bags as long as a preset creator's history (Poisson around its mean, capped)."""
        if not history_rows:
            return None
        mean = data.interactions / data.n_creators
        lengths = rng.poisson(mean, size)
        if mcfg.history_max_items:
            lengths = np.minimum(lengths, mcfg.history_max_items)
        items = np.minimum(rng.zipf(1.2, int(lengths.sum())), history_rows - 1)
        offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        return HistoryBatch(
            torch.from_numpy(items.astype(np.int64)),
            torch.from_numpy(offsets.astype(np.int64)),
            torch.ones(len(items)),
            torch.from_numpy(lengths.astype(np.float32)),
        )

    timings = []
    for step in range(steps + 2):
        c = rng.integers(1, creator.n_ids, batch)
        p = np.minimum(rng.zipf(1.2, batch), product.n_ids - 1).astype(np.int64)
        bags = history(batch)
        p_keys = torch.from_numpy(p)
        negatives = neg_log_q = None
        if mcfg.extra_negatives:  # as training draws them: uniform over the catalog
            neg = rng.integers(1, product.n_ids, mcfg.extra_negatives)
            negatives, neg_log_q = inputs(product, neg), log_q[neg]
        creator_in, product_in = (*inputs(creator, c), bags), inputs(product, p)
        start = time.perf_counter()
        train_step(
            model,
            optimisers,
            creator_in,
            product_in,
            p_keys,
            log_q[p] if mcfg.logq else None,
            negatives,
            neg_log_q if mcfg.logq else None,
            mcfg,
        )
        if step >= 2:  # the first steps pay for allocation
            timings.append(time.perf_counter() - start)
    pairs = (
        data.interactions
        if not mcfg.max_train_pairs
        else min(data.interactions, mcfg.max_train_pairs)
    )
    per_step = float(np.median(timings))
    return {
        "preset": data.preset,
        "batch_size": batch,
        "steps_timed": steps,
        "seconds_per_step": round(per_step, 4),
        "pairs_per_epoch": pairs,
        "epoch_seconds_estimate": round(per_step * pairs / batch, 1),
        "epoch_minutes_estimate": round(per_step * pairs / batch / 60, 1),
        "model_rss_gib": round((psutil.Process().memory_info().rss - rss0) / 2**30, 2),
    }


def bench_train(cfg: Settings, data_dir: Path | None, out: Path) -> dict[str, Any]:
    """Generate the preset's data if none is given, run train-matching, check targets."""
    from training.matching.job import run

    if data_dir is None:
        from features.synthetic import generate

        data_dir = out / "data"
        generate(cfg.data, data_dir, overwrite=True)
    start = time.perf_counter()
    metrics = run(cfg, data_dir, out / "matching", overwrite=True, register=False)
    result: dict[str, Any] = {
        "job_seconds": round(time.perf_counter() - start, 1),
        "train_seconds (protocol a)": round(metrics.get("random_train_seconds", float("nan")), 1),
        "epoch_seconds (protocol a)": round(metrics.get("random_epoch_seconds", float("nan")), 1),
    }
    result.update({k: round(v, 4) for k, v in metrics.items() if k.endswith("recall@50")})
    result.update(check_targets(metrics))
    return result
