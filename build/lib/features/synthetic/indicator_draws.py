"""The 30-day indicators of product_stats (DESIGN §2), drawn from hidden quality and popularity.

Each indicator comes twice: the `observed` value written to product_stats (cold products have
no sales or service history yet, and a few values are missing at random), and the `true` value
the hidden tier is computed from (for cold products: what their hidden quality implies).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from features.contract import HISTORY
from features.synthetic.merchants import Merchants
from features.synthetic.params import DataConfig
from features.synthetic.products import Products
from features.synthetic.sampling import sigmoid
from features.synthetic.window import DAY, Window

PRICE = ("price_index", "price_vs_platform_low")
RATE_DECIMALS = 4  # rates and ratios as the platform reports them (also keeps Parquet small)
STATS_COLUMNS = PRICE + HISTORY


@dataclass(frozen=True)
class Indicators:
    observed: pd.DataFrame  # the product_stats table
    true: pd.DataFrame  # all 11 indicators, complete, products-table order
    cold: np.ndarray  # bool


def _logit_rate(
    coefs: list[float],
    driver: np.ndarray,
    noise: np.ndarray | None,
    offset: np.ndarray | float = 0.0,
) -> np.ndarray:
    intercept, slope, sd = coefs
    logit = intercept + slope * driver + offset
    if noise is None:
        return sigmoid(logit)
    return np.round(sigmoid(logit + sd * noise), RATE_DECIMALS)


def _history(
    cfg: DataConfig,
    products: Products,
    merchants: Merchants,
    exposure: np.ndarray,
    rng: np.random.Generator | None,
) -> dict[str, np.ndarray]:
    """Sales and service indicators; `rng=None` gives their expected values (no noise)."""
    p = cfg.indicators
    n = len(products)
    z_quality = products.quality / np.sqrt(1.0 + cfg.catalog.merchant_quality_sd**2)
    z_merchant = merchants.quality[products.merchant] / cfg.catalog.merchant_quality_sd

    def noise() -> np.ndarray | None:
        return None if rng is None else rng.standard_normal(n)

    relative_popularity = products.popularity / products.popularity.mean()
    promoter_rate = (
        p.promoters_mean
        * relative_popularity
        * np.exp(p.promoters_quality_coef * z_quality)
        * exposure
    )
    promoters = promoter_rate if rng is None else rng.poisson(promoter_rate).astype(np.float64)
    unit_rate = promoters * p.units_per_promoter * np.exp(p.units_quality_coef * z_quality)
    units = unit_rate if rng is None else rng.poisson(unit_rate).astype(np.float64)
    cheapness = p.conversion_price_coef * np.log(products.price_index)
    conversion = _logit_rate(p.conversion_logit, z_quality, noise(), offset=cheapness)
    return {
        "active_promoters_30d": promoters,
        "positive_review_rate": _logit_rate(p.positive_review_logit, z_quality, noise()),
        "refund_rate": _logit_rate(p.refund_logit, z_quality, noise()),
        "ship_48h_rate": _logit_rate(p.ship_48h_logit, z_merchant, noise()),
        "gmv_30d": np.round(units * products.price, 2),
        "conversion_rate": conversion,
    }


def build_indicators(
    cfg: DataConfig,
    products: Products,
    merchants: Merchants,
    window: Window,
    rng: np.random.Generator,
) -> Indicators:
    p = cfg.indicators
    n = len(products)
    cold = products.cold(window, cfg.cold_days)
    stats_span = p.stats_window_days * DAY
    exposure = np.clip((window.end - products.listed_at) / stats_span, 0.0, 1.0)

    markup = cfg.catalog.platform_markup_median * np.exp(
        cfg.catalog.platform_markup_sigma * rng.standard_normal(n)
    )
    is_low = rng.random(n) < cfg.catalog.platform_low_share
    price_values = {
        "price_index": products.price_index,
        "price_vs_platform_low": np.where(is_low, 1.0, np.round(1.0 + markup, RATE_DECIMALS)),
    }
    drawn = _history(cfg, products, merchants, exposure, rng)
    expected = _history(cfg, products, merchants, np.ones(n), None)

    true = {
        "brand_awareness": merchants.brand_awareness[products.merchant],
        "is_official_brand": merchants.is_official_brand[products.merchant].astype(np.float64),
        "commission_rate": products.commission_rate,
        **price_values,
        **{name: np.where(cold, expected[name], drawn[name]) for name in HISTORY},
    }
    observed = {"product_id": products.product_id}
    for name in STATS_COLUMNS:
        values = price_values[name] if name in PRICE else np.where(cold, np.nan, drawn[name])
        missing = rng.random(n) < p.stats_missing_share
        observed[name] = np.where(missing, np.nan, values).astype(np.float64)
    return Indicators(observed=pd.DataFrame(observed), true=pd.DataFrame(true), cold=cold)
