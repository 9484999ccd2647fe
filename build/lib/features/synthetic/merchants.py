"""Merchants: hidden brand strength and quality, the observed store indicators, catalog sizes."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from features.synthetic.categories import CategoryTree
from features.synthetic.params import DataConfig
from features.synthetic.sampling import correlated, draw_categorical

MERCHANT_ID_BASE = 300_000_000


@dataclass(frozen=True)
class Merchants:
    merchant_id: np.ndarray  # (M,) int64
    brand: np.ndarray  # hidden brand strength, N(0, 1)
    quality: np.ndarray  # hidden merchant quality effect (flagged ones pay a penalty)
    is_official_brand: np.ndarray  # bool
    brand_awareness: np.ndarray  # >= 0, heavy-tailed
    store_rating: np.ndarray  # 0..5
    account_age_days: np.ndarray  # int64
    flagged: np.ndarray  # bool
    main_l1: np.ndarray  # int64
    size_weight: np.ndarray  # relative catalog size

    def __len__(self) -> int:
        return len(self.merchant_id)

    def table(self) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "merchant_id": self.merchant_id,
                "is_official_brand": self.is_official_brand,
                "brand_awareness": self.brand_awareness,
                "store_rating": self.store_rating,
                "account_age_days": self.account_age_days,
                "flagged_low_quality": self.flagged,
            }
        )


def _exact_share(n: int, share: float, rng: np.random.Generator) -> np.ndarray:
    """A boolean mask with exactly round(share * n) random True entries."""
    mask = np.zeros(n, dtype=bool)
    mask[rng.choice(n, size=int(round(share * n)), replace=False)] = True
    return mask


def build_merchants(cfg: DataConfig, tree: CategoryTree, rng: np.random.Generator) -> Merchants:
    p = cfg.catalog
    n = cfg.n_merchants
    brand = rng.standard_normal(n)
    flagged = _exact_share(n, cfg.flagged_merchant_share, rng)
    quality = p.merchant_quality_sd * correlated(brand, p.brand_quality_corr, rng)
    quality = quality - p.flagged_quality_penalty * flagged

    noisy_brand = brand + p.official_brand_noise * rng.standard_normal(n)
    official = noisy_brand > np.quantile(noisy_brand, 1.0 - p.official_brand_share)
    awareness = p.brand_awareness_median * np.exp(p.brand_awareness_sigma * brand)
    rating = p.store_rating_mean + p.store_rating_quality_coef * quality
    rating = np.clip(rating + p.store_rating_sd * rng.standard_normal(n), 0.0, 5.0)

    new = _exact_share(n, cfg.new_merchant_share, rng)
    age = np.where(
        new,
        rng.integers(0, p.new_merchant_days, n),
        rng.integers(p.new_merchant_days, max(p.max_merchant_age_days, p.new_merchant_days + 1), n),
    ).astype(np.int64)

    main_l1 = draw_categorical(tree.l1_popularity(), n, rng).astype(np.int64)
    size_weight = np.exp(p.merchant_size_sigma * rng.standard_normal(n))
    size_weight = size_weight * np.where(new, p.new_merchant_size_factor, 1.0)
    return Merchants(
        merchant_id=MERCHANT_ID_BASE + np.arange(n, dtype=np.int64),
        brand=brand,
        quality=quality,
        is_official_brand=official,
        brand_awareness=np.round(awareness, 1),
        store_rating=np.round(rating, 2),
        account_age_days=age,
        flagged=flagged,
        main_l1=main_l1,
        size_weight=size_weight,
    )


def assign_products(merchants: Merchants, n_products: int, rng: np.random.Generator) -> np.ndarray:
    """Merchant row of every product: heavy-tailed catalog sizes, at least one product each."""
    m = len(merchants)
    if n_products < m:
        raise ValueError(f"{n_products} products cannot cover {m} merchants")
    probs = merchants.size_weight / merchants.size_weight.sum()
    counts = 1 + rng.multinomial(n_products - m, probs)
    return rng.permutation(np.repeat(np.arange(m, dtype=np.int64), counts))
