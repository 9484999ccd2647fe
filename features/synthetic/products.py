"""Products: leaf, price, commission, listing date; hidden quality, popularity and latent."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from features.logs import progress_bar
from features.synthetic.categories import CategoryTree
from features.synthetic.merchants import Merchants, assign_products
from features.synthetic.params import DataConfig
from features.synthetic.sampling import (
    Stream,
    correlated,
    draw_categorical,
    draw_grouped,
    grouped_cdf,
    seconds_to_timestamps,
    stream,
)
from features.synthetic.window import DAY, Window

PRODUCT_ID_BASE = 5_000_000_000
N_PRICE_BANDS = 5


@dataclass(frozen=True)
class Products:
    """Every product's observed attributes and hidden truth, in products-table row order."""

    product_id: np.ndarray  # (N,) int64
    merchant: np.ndarray  # (N,) merchant row (not id)
    leaf: np.ndarray  # (N,) int64
    price: np.ndarray
    commission_rate: np.ndarray
    listed_at: np.ndarray  # unix seconds
    quality: np.ndarray  # hidden, N(0, 1) + merchant effect
    popularity: np.ndarray  # hidden proposal weight, lognormal
    latent: np.ndarray  # hidden (N, d) float32
    price_index: np.ndarray  # price / observed leaf median price
    price_band: np.ndarray  # quintile of price_index, 0..4

    def __len__(self) -> int:
        return len(self.product_id)

    def cold(self, window: Window, cold_days: int) -> np.ndarray:
        """Listed in the last `cold_days`: no sales history yet."""
        return self.listed_at >= window.end - cold_days * DAY

    def table(self, tree: CategoryTree, merchants: Merchants) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "product_id": self.product_id,
                "merchant_id": merchants.merchant_id[self.merchant],
                "category_l1": tree.l1_of_leaf[self.leaf],
                "category_l2": tree.l2_of_leaf[self.leaf],
                "category_l3": self.leaf,
                "price": self.price,
                "commission_rate": self.commission_rate,
                "listed_at": seconds_to_timestamps(self.listed_at),
            }
        )


def _new_share_of_free(cfg: DataConfig, forced_new: np.ndarray) -> float:
    """Share of new listings among products whose merchant is old enough to have old ones,
    so that the overall share of new products is cfg.new_product_share."""
    n, forced = len(forced_new), int(forced_new.sum())
    if forced >= n:
        return 1.0
    return float(np.clip((cfg.new_product_share * n - forced) / (n - forced), 0.0, 1.0))


def _listing_age(
    cfg: DataConfig, merchant_age_days: np.ndarray, new_share: float, rng: np.random.Generator
) -> np.ndarray:
    """Seconds between listing and the end of the log; never before the merchant existed."""
    p = cfg.catalog
    n = len(merchant_age_days)
    merchant_age = (merchant_age_days + 1) * DAY  # the account opened some time that day
    window = cfg.days * DAY
    new = (merchant_age <= window) | (rng.random(n) < new_share)
    # New listings skew to recent days (the platform is growing): age = span * u ** recency.
    new_span = np.minimum(merchant_age, window)
    new_age = new_span * rng.random(n) ** p.new_product_recency
    old_hi = np.maximum(np.minimum(merchant_age, p.max_product_age_days * DAY), window)
    old_age = window + (old_hi - window) * rng.random(n)
    return 1 + np.where(new, new_age, old_age).astype(np.int64)


def _chunk(
    cfg: DataConfig,
    tree: CategoryTree,
    merchants: Merchants,
    merchant: np.ndarray,
    window: Window,
    new_share: float,
    rng: np.random.Generator,
) -> dict[str, np.ndarray]:
    p = cfg.catalog
    n = len(merchant)
    # Leaf: mostly inside the merchant's main l1 (leaves are sorted by l1), else anywhere.
    in_l1 = grouped_cdf(tree.l1_of_leaf, tree.popularity, tree.n_l1)
    focused = draw_grouped(in_l1, merchants.main_l1[merchant], rng.random(n))
    anywhere = draw_categorical(tree.popularity, n, rng)
    leaf = np.where(rng.random(n) < p.merchant_focus, focused, anywhere).astype(np.int64)

    quality = rng.standard_normal(n) + merchants.quality[merchant]
    z_quality = quality / np.sqrt(1.0 + p.merchant_quality_sd**2)
    popularity = np.exp(p.popularity_sigma * correlated(z_quality, p.popularity_quality_corr, rng))

    log_price = (
        p.price_sigma * rng.standard_normal(n) + p.price_brand_coef * merchants.brand[merchant]
    )
    price = np.maximum(np.round(tree.median_price[leaf] * np.exp(log_price), 2), 0.01)
    low, high = p.commission_range
    commission = p.commission_median * np.exp(
        p.commission_sigma * rng.standard_normal(n) + p.commission_quality_coef * z_quality
    )
    commission = np.round(np.clip(commission, low, high), 3)

    age = _listing_age(cfg, merchants.account_age_days[merchant], new_share, rng)
    noise = rng.standard_normal((n, cfg.latent_dim), dtype=np.float32)
    latent = tree.centroid[leaf] + noise * np.float32(
        p.product_latent_noise / np.sqrt(cfg.latent_dim)
    )
    return {
        "leaf": leaf,
        "price": price,
        "commission_rate": commission,
        "listed_at": window.end - age,
        "quality": quality,
        "popularity": popularity,
        "latent": latent,
    }


def price_index(price: np.ndarray, leaf: np.ndarray, n_leaves: int) -> np.ndarray:
    """Price over the observed median price of its leaf (DESIGN §2 price_index)."""
    medians = pd.Series(price).groupby(leaf).median()
    leaf_median = np.ones(n_leaves)
    leaf_median[medians.index.to_numpy()] = medians.to_numpy()
    return price / leaf_median[leaf]


def build_products(
    cfg: DataConfig,
    tree: CategoryTree,
    merchants: Merchants,
    window: Window,
    progress: bool = True,
) -> Products:
    """Generate products in fixed chunks, each from its own random stream."""
    n = cfg.n_products
    merchant = assign_products(merchants, n, stream(cfg.seed, Stream.PRODUCT_ASSIGNMENT))
    forced_new = (merchants.account_age_days[merchant] + 1) * DAY <= cfg.days * DAY
    new_share = _new_share_of_free(cfg, forced_new)

    columns: dict[str, np.ndarray] = {}
    size = cfg.catalog.product_chunk_rows
    starts = range(0, n, size)
    for index, lo in enumerate(progress_bar(starts, progress, desc="products", unit="chunk")):
        hi = min(lo + size, n)
        rng = stream(cfg.seed, Stream.PRODUCTS, index)
        chunk = _chunk(cfg, tree, merchants, merchant[lo:hi], window, new_share, rng)
        for name, values in chunk.items():
            if name not in columns:
                columns[name] = np.empty((n, *values.shape[1:]), dtype=values.dtype)
            columns[name][lo:hi] = values

    pindex = price_index(columns["price"], columns["leaf"], tree.n_leaves)
    edges = np.quantile(pindex, np.arange(1, N_PRICE_BANDS) / N_PRICE_BANDS)
    return Products(
        product_id=PRODUCT_ID_BASE + np.arange(n, dtype=np.int64),
        merchant=merchant,
        price_index=pindex,
        price_band=np.searchsorted(edges, pindex, side="right").astype(np.int64),
        **columns,
    )
