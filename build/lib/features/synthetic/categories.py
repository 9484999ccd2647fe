"""The three-level category tree: leaves under l2s under l1s, Zipf popularity, latent centroids."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from features.synthetic.params import DataConfig
from features.synthetic.sampling import zipf_weights


@dataclass(frozen=True)
class CategoryTree:
    """Ids are small ints: l1 0..L1-1, l2 0..L2-1 (global), leaf 0..L3-1 (global).
    l2 ids are contiguous per l1 and leaf ids contiguous per l2, so leaves are sorted by l1."""

    l1_of_l2: np.ndarray  # (L2,) int64
    l2_of_leaf: np.ndarray  # (L3,) int64
    l1_of_leaf: np.ndarray  # (L3,) int64
    popularity: np.ndarray  # (L3,) float64, sums to 1
    centroid: np.ndarray  # (L3, d) float32, siblings close
    median_price: np.ndarray  # (L3,) float64, the hidden price level of each leaf

    @property
    def n_leaves(self) -> int:
        return len(self.l2_of_leaf)

    @property
    def n_l1(self) -> int:
        return int(self.l1_of_l2.max()) + 1

    def l1_popularity(self) -> np.ndarray:
        return np.bincount(self.l1_of_leaf, weights=self.popularity, minlength=self.n_l1)


def _split(n_children: int, n_parents: int, rng: np.random.Generator) -> np.ndarray:
    """Parent of each child: every parent gets at least one, children contiguous per parent."""
    if n_children < n_parents:
        raise ValueError(f"cannot put {n_children} categories under {n_parents} parents")
    counts = 1 + rng.multinomial(n_children - n_parents, np.full(n_parents, 1.0 / n_parents))
    return np.repeat(np.arange(n_parents, dtype=np.int64), counts)


def build_categories(cfg: DataConfig, rng: np.random.Generator) -> CategoryTree:
    """Draw the tree, leaf popularity, hierarchical centroids and leaf price levels."""
    n1, n2, n3 = cfg.n_categories_l1, cfg.n_categories_l2, cfg.n_leaf_categories
    l1_of_l2 = _split(n2, n1, rng)
    l2_of_leaf = _split(n3, n2, rng)
    l1_of_leaf = l1_of_l2[l2_of_leaf]
    popularity = zipf_weights(n3, cfg.zipf_categories, rng)

    # Hierarchical latents scaled by 1/sqrt(d) so that <centroid, centroid> is O(1).
    d = cfg.latent_dim
    s1, s2, s3 = (scale / np.sqrt(d) for scale in cfg.catalog.centroid_scales)
    c1 = rng.standard_normal((n1, d)) * s1
    c2 = c1[l1_of_l2] + rng.standard_normal((n2, d)) * s2
    c3 = c2[l2_of_leaf] + rng.standard_normal((n3, d)) * s3

    median_price = cfg.catalog.leaf_price_median * np.exp(
        cfg.catalog.leaf_price_sigma * rng.standard_normal(n3)
    )
    return CategoryTree(
        l1_of_l2=l1_of_l2,
        l2_of_leaf=l2_of_leaf,
        l1_of_leaf=l1_of_leaf,
        popularity=popularity,
        centroid=c3.astype(np.float32),
        median_price=median_price,
    )
