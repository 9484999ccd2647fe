"""The hidden true tier of every product and the auditors' noisy labels on a few of them.

The true score weighs the five dimensions of DESIGN §2 unequally, computed from the
indicators a model can observe, with two non-linearities a good tier model must find:
a saturating sales dimension (plus a min(service, sales) interaction) and a service veto
(a refund rate past a threshold sinks the score by a fixed amount). It is strictly monotone in every
indicator's good direction. Tiers are quantile cuts of it to `tier_shares`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from features.contract import DIMENSIONS
from features.synthetic.params import DataConfig
from features.synthetic.sampling import seconds_to_timestamps, sigmoid
from features.synthetic.window import DAY, Window

N_TIERS = 6
RATE_EPS = 1e-6  # keeps logits of rates that round to exactly 0 or 1 finite


def _logit(rate: np.ndarray) -> np.ndarray:
    rate = np.clip(rate, RATE_EPS, 1.0 - RATE_EPS)
    return np.log(rate / (1.0 - rate))


# Each indicator mapped to "goodness": increasing in its good direction (DESIGN §2).
GOODNESS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "brand_awareness": np.log1p,
    "is_official_brand": lambda x: x,
    "price_index": lambda x: -np.log(x),
    "price_vs_platform_low": lambda x: -np.log(x),
    "commission_rate": lambda x: x,
    "active_promoters_30d": np.log1p,
    "positive_review_rate": _logit,
    "refund_rate": lambda x: -_logit(x),
    "ship_48h_rate": _logit,
    "gmv_30d": np.log1p,
    "conversion_rate": _logit,
}


@dataclass(frozen=True)
class TrueTiers:
    score: np.ndarray
    tier: np.ndarray  # int64, 0..5; flagged merchants' products are 0
    thresholds: np.ndarray  # (5,) score cuts between tiers
    standardisation: dict[str, tuple[float, float]]  # goodness mean, sd per indicator

    def tier_of(self, score: np.ndarray, flagged: np.ndarray) -> np.ndarray:
        return cut_tiers(self.thresholds, score, flagged)


def cut_tiers(thresholds: np.ndarray, score: np.ndarray, flagged: np.ndarray) -> np.ndarray:
    """Tier 0..5 of each score; products of flagged merchants are L0 whatever their score."""
    tier = np.searchsorted(thresholds, score, side="right").astype(np.int64)
    return np.where(flagged, 0, tier)


def dimension_scores(
    cfg: DataConfig, indicators: pd.DataFrame, standardisation: dict[str, tuple[float, float]]
) -> dict[str, np.ndarray]:
    """Per dimension, the weighted mean of its standardised indicators' goodness."""
    weights = cfg.indicators.indicator_weights
    out = {}
    for dimension, names in DIMENSIONS.items():
        total = sum(weights[name] for name in names)
        score = np.zeros(len(indicators))
        for name in names:
            mean, sd = standardisation[name]
            goodness = GOODNESS[name](indicators[name].to_numpy(dtype=np.float64))
            score += weights[name] / total * (goodness - mean) / sd
        out[dimension] = score
    return out


def true_score(
    cfg: DataConfig, indicators: pd.DataFrame, standardisation: dict[str, tuple[float, float]]
) -> np.ndarray:
    p = cfg.indicators
    dims = dimension_scores(cfg, indicators, standardisation)
    dims["sales"] = p.sales_saturation * np.tanh(dims["sales"] / p.sales_saturation)
    score = sum(p.dimension_weights[d] * dims[d] for d in DIMENSIONS)
    score = score + p.service_sales_interaction * np.minimum(dims["service"], dims["sales"])
    # Service veto: a refund rate past the threshold costs up to `strength` score units; a
    # logistic step, so the score stays strictly monotone and its spread stays bounded.
    refund = indicators["refund_rate"].to_numpy(dtype=np.float64)
    excess = (refund - p.refund_veto_rate) / p.refund_veto_width
    return score - p.refund_veto_strength * sigmoid(excess)


def build_true_tiers(cfg: DataConfig, indicators: pd.DataFrame, flagged: np.ndarray) -> TrueTiers:
    """Score every product; cut so that tier shares (flagged products in L0) match tier_shares."""
    standardisation = {}
    for name in GOODNESS:
        goodness = GOODNESS[name](indicators[name].to_numpy(dtype=np.float64))
        standardisation[name] = (float(goodness.mean()), float(goodness.std()) or 1.0)
    score = true_score(cfg, indicators, standardisation)

    n, n_flagged = len(score), int(flagged.sum())
    cumulative = np.cumsum(cfg.tier_shares)[:-1]
    free = score[~flagged]
    at = np.clip((cumulative * n - n_flagged) / max(len(free), 1), 0.0, 1.0)
    thresholds = np.quantile(free, at) if len(free) else np.zeros(N_TIERS - 1)
    return TrueTiers(score, cut_tiers(thresholds, score, flagged), thresholds, standardisation)


def label_products(
    cfg: DataConfig,
    truth: TrueTiers,
    flagged: np.ndarray,
    cold: np.ndarray,
    listed_at: np.ndarray,
    product_id: np.ndarray,
    window: Window,
    rng: np.random.Generator,
) -> pd.DataFrame:
    """Auditors label ~label_share of products, mostly ones with history; every tier appears."""
    n = len(truth.score)
    noise_sd = cfg.label_noise * truth.score.std()
    labelled_tier = truth.tier_of(truth.score + noise_sd * rng.standard_normal(n), flagged)

    # Weighted sampling without replacement (Efraimidis-Spirakis): top keys log(u) / weight.
    weight = np.where(cold, cfg.indicators.label_cold_weight, 1.0)
    with np.errstate(divide="ignore"):
        key = np.log(rng.random(n)) / weight
    n_labels = min(max(int(round(cfg.label_share * n)), N_TIERS), n)
    chosen = np.zeros(n, dtype=bool)
    chosen[np.argpartition(-key, n_labels - 1)[:n_labels]] = True
    for tier in range(N_TIERS):
        pool = ~chosen & (labelled_tier == tier)
        if not (chosen & (labelled_tier == tier)).any() and pool.any():
            chosen[np.flatnonzero(pool)[np.argmax(key[pool])]] = True

    rows = np.flatnonzero(chosen)
    earliest = np.maximum(listed_at[rows], window.end - cfg.indicators.label_days * DAY)
    labelled_at = earliest + (rng.random(len(rows)) * (window.end - earliest)).astype(np.int64)
    return pd.DataFrame(
        {
            "product_id": product_id[rows],
            "tier": labelled_tier[rows],
            "labelled_at": seconds_to_timestamps(labelled_at),
        }
    )
