"""Orchestration: draw every concern in order and write the marketplace atomically."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from features.contract import TABLES
from features.errors import ConfigError
from features.io import atomic_output_dir, write_json, write_table
from features.synthetic import truth
from features.synthetic.brokers import BROKER_ID_BASE, build_brokers
from features.synthetic.categories import build_categories
from features.synthetic.creators import CREATOR_ID_BASE, build_creators
from features.synthetic.indicator_draws import build_indicators
from features.synthetic.interactions import (
    InteractionSampler,
    LeafSortedCatalog,
    event_counts,
    leaf_weight,
    write_interactions,
)
from features.synthetic.labels import (
    DIMENSIONS,
    N_TIERS,
    TrueTiers,
    build_true_tiers,
    label_products,
)
from features.synthetic.merchants import MERCHANT_ID_BASE, build_merchants
from features.synthetic.params import DataConfig
from features.synthetic.products import PRODUCT_ID_BASE, build_products
from features.synthetic.sampling import Stream, stream
from features.synthetic.window import Window

log = logging.getLogger(__name__)

GENERATOR_VERSION = "1.0.0"
META = "_meta.json"
SHARE_TOLERANCE = 1e-6


@dataclass
class GenerationReport:
    """Rows written per table and seconds spent per table (drawing + writing)."""

    rows: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def timed(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        yield
        self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start
        log.info("%s: %.1f s", name, self.seconds[name])


def check_config(cfg: DataConfig) -> None:
    """Fail fast on settings the generator cannot honour."""
    problems = []
    if len(cfg.tier_shares) != N_TIERS or not math.isclose(
        sum(cfg.tier_shares), 1.0, abs_tol=SHARE_TOLERANCE
    ):
        problems.append(f"tier_shares must be {N_TIERS} shares summing to 1, got {cfg.tier_shares}")
    if not math.isclose(sum(cfg.affinity.leaf_mix), 1.0, abs_tol=SHARE_TOLERANCE):
        problems.append(f"affinity.leaf_mix must sum to 1, got {cfg.affinity.leaf_mix}")
    if not cfg.n_categories_l1 <= cfg.n_categories_l2 <= cfg.n_leaf_categories:
        problems.append("need n_categories_l1 <= n_categories_l2 <= n_leaf_categories")
    if cfg.n_merchants > cfg.n_products:
        problems.append(f"n_merchants ({cfg.n_merchants}) > n_products ({cfg.n_products})")
    if cfg.n_brokers and round(cfg.broker_creator_share * cfg.n_creators) < cfg.n_brokers:
        problems.append("broker_creator_share * n_creators must give every broker a creator")
    if cfg.cold_days >= cfg.days:
        problems.append(f"cold_days ({cfg.cold_days}) must be shorter than days ({cfg.days})")
    if problems:
        raise ConfigError("invalid data settings:\n  " + "\n  ".join(problems))


def run_generation(
    cfg: DataConfig, out: Path, overwrite: bool = False, progress: bool = True
) -> GenerationReport:
    """Generate the marketplace under `out`; the report also holds timings per table."""
    check_config(cfg)
    report = GenerationReport()
    window = Window.from_config(cfg)
    seed = cfg.seed
    with atomic_output_dir(Path(out), overwrite) as staging:
        hidden = staging / truth.TRUTH_DIR
        with report.timed("merchants"):
            tree = build_categories(cfg, stream(seed, Stream.CATEGORIES))
            merchants = build_merchants(cfg, tree, stream(seed, Stream.MERCHANTS))
            write_table(merchants.table(), staging, "merchants")
        with report.timed("products"):
            products = build_products(cfg, tree, merchants, window, progress)
            write_table(products.table(tree, merchants), staging, "products")
        with report.timed("product_stats"):
            indicators = build_indicators(
                cfg, products, merchants, window, stream(seed, Stream.INDICATORS)
            )
            write_table(indicators.observed, staging, "product_stats")
        with report.timed("tier_labels"):
            flagged = merchants.flagged[products.merchant]
            tiers = build_true_tiers(cfg, indicators.true, flagged)
            labels = label_products(
                cfg,
                tiers,
                flagged,
                indicators.cold,
                products.listed_at,
                products.product_id,
                window,
                stream(seed, Stream.LABELS),
            )
            write_table(labels, staging, "tier_labels")
        with report.timed("truth"):
            truth.write_product_truth(hidden, products, tiers)
        n_cold = int(indicators.cold.sum())
        del indicators
        brokers = None
        if cfg.n_brokers:
            with report.timed("brokers"):
                brokers = build_brokers(cfg, tree, products, stream(seed, Stream.BROKERS))
                write_table(brokers.table(), staging, "brokers")
            with report.timed("broker_products"):
                write_table(brokers.goods, staging, "broker_products")
        with report.timed("creators"):
            choice_weight = leaf_weight(tree.popularity, products.leaf, tree.n_leaves)
            creators = build_creators(
                cfg, tree, choice_weight, brokers, window, stream(seed, Stream.CREATORS)
            )
            write_table(creators.table(brokers), staging, "creators")
        with report.timed("interactions"):
            catalog = LeafSortedCatalog.build(cfg, products, tree.n_leaves)
            counts = event_counts(cfg, creators)
            sampler = InteractionSampler(
                cfg, products, creators, catalog, choice_weight, counts, window
            )
            report.rows["interactions"] = write_interactions(
                sampler, staging / "interactions", cfg.chunk_rows, cfg.workers, progress
            )
            del sampler, catalog
        with report.timed("truth"):
            truth.write_creator_truth(hidden, creators, counts)
            truth.write_leaf_truth(hidden, tree, choice_weight)
            truth.write_params(hidden, _params(cfg, window, tiers))

        rows = {
            "merchants": len(merchants),
            "products": len(products),
            "product_stats": len(products),
            "tier_labels": len(labels),
            "creators": len(creators),
            "interactions": report.rows["interactions"],
        }
        if brokers is not None:
            rows.update(brokers=len(brokers), broker_products=len(brokers.goods))
        report.rows = {name: rows[name] for name in TABLES if name in rows}
        write_json(_meta(cfg, window, report, n_cold, int(flagged.sum())), staging / META)
    return report


def generate(
    cfg: DataConfig, out: Path, overwrite: bool = False, progress: bool = True
) -> dict[str, int]:
    """Write all contract tables and `truth/` under `out` (atomically); return rows per table."""
    return run_generation(cfg, out, overwrite, progress).rows


def _iso(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S")


def _params(cfg: DataConfig, window: Window, tiers: TrueTiers) -> dict[str, Any]:
    score_sd = float(tiers.score.std())
    return {
        "generator_version": GENERATOR_VERSION,
        "config": cfg.model_dump(mode="json"),
        "window": {"start": _iso(window.start), "end": _iso(window.end), "days": window.days},
        "id_bases": {
            "creator": CREATOR_ID_BASE,
            "product": PRODUCT_ID_BASE,
            "merchant": MERCHANT_ID_BASE,
            "broker": BROKER_ID_BASE,
        },
        "true_score": {
            "dimensions": {name: list(columns) for name, columns in DIMENSIONS.items()},
            "tier_thresholds": tiers.thresholds.tolist(),
            "sd": score_sd,
            "label_noise_sd": cfg.label_noise * score_sd,
            "indicator_standardisation": {k: list(v) for k, v in tiers.standardisation.items()},
            "realised_tier_shares": (
                np.bincount(tiers.tier, minlength=N_TIERS) / len(tiers.tier)
            ).tolist(),
        },
    }


def _meta(
    cfg: DataConfig, window: Window, report: GenerationReport, n_cold: int, n_flagged: int
) -> dict[str, Any]:
    return {
        "preset": cfg.preset,
        "seed": cfg.seed,
        "generator_version": GENERATOR_VERSION,
        "end_date": cfg.end_date.isoformat(),
        "window_start": _iso(window.start),
        "counts": dict(report.rows),
        "cold_products": n_cold,
        "flagged_products": n_flagged,
    }
