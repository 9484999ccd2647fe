"""Synthetic embeddings and goods for retrieval benchmarks and the diversity curve.

`EmbeddingWorld` imitates what a trained two-tower model produces: leaf categories nested
in l2 and l1 give clustered directions, hot categories hold more goods (Zipf), and a
product's norm grows with its popularity (what makes inner-product search hard for
partitions). Creators are unit vectors near the categories they like.

`diversity_scenario` adds held-out "truth" drawn like the synthetic marketplace's choice
model (features/synthetic): a creator promotes mostly from its primary leaf, often from
two secondary leaves and sometimes from anywhere, while the model's vector leans on the
primary leaf (taste blend 0.8 / 0.2), the gap a diversity re-ranking can close.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from models.retrieval.catalog import ProductCatalog

CHUNK = 1_000_000


@dataclass
class EmbeddingWorld:
    """Category geometry shared by the synthetic product and creator embeddings."""

    leaf_centers: np.ndarray  # (n_leaf, dim), unit
    leaf_weights: np.ndarray  # (n_leaf,), Zipf: hot categories
    leaf_l2: np.ndarray  # (n_leaf,) l2 of each leaf
    leaf_l1: np.ndarray  # (n_leaf,) l1 of each leaf
    basis: np.ndarray  # (rank, dim): directions items vary along inside a leaf
    spread: float = 0.5
    isotropic: float = 0.1

    @classmethod
    def make(
        cls, n_l1: int, n_l2: int, n_leaf: int, dim: int = 64, seed: int = 0, rank: int = 16
    ) -> EmbeddingWorld:
        rng = np.random.default_rng(seed)

        def unit(a: np.ndarray) -> np.ndarray:
            return (a / np.linalg.norm(a, axis=1, keepdims=True)).astype(np.float32)

        l1 = unit(rng.standard_normal((n_l1, dim)))
        l2_parent = np.arange(n_l2) % n_l1
        l2 = unit(l1[l2_parent] + 0.6 * unit(rng.standard_normal((n_l2, dim))))
        leaf_l2 = np.arange(n_leaf) % n_l2
        leaves = unit(l2[leaf_l2] + 0.6 * unit(rng.standard_normal((n_leaf, dim))))
        weights = 1.0 / np.arange(1, n_leaf + 1) ** 0.8
        basis = np.linalg.qr(rng.standard_normal((dim, rank)))[0].T.astype(np.float32)
        return cls(leaves, weights / weights.sum(), leaf_l2, l2_parent[leaf_l2], basis)

    def _points(self, leaves: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        rank, dim = self.basis.shape
        v = self.leaf_centers[leaves]
        v += (self.spread / math.sqrt(rank)) * (
            rng.standard_normal((len(leaves), rank), dtype=np.float32) @ self.basis
        )
        v += (self.isotropic / math.sqrt(dim)) * rng.standard_normal(v.shape, dtype=np.float32)
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        return v  # (n, dim), unit

    def products(self, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """(vectors with popularity-dependent norms, leaf category), generated in chunks."""
        rng = np.random.default_rng(seed)
        out = np.empty((n, self.leaf_centers.shape[1]), np.float32)
        leaves = rng.choice(len(self.leaf_weights), n, p=self.leaf_weights)
        for lo in range(0, n, CHUNK):
            hi = min(n, lo + CHUNK)
            out[lo:hi] = self._points(leaves[lo:hi], rng)
            popularity = rng.lognormal(0.0, 1.0, hi - lo).astype(np.float32)
            out[lo:hi] *= (0.5 + 0.25 * np.log1p(popularity))[:, None]
        return out, leaves

    def creators(self, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """(unit vectors, preferred leaf)."""
        rng = np.random.default_rng(seed)
        leaves = rng.choice(len(self.leaf_weights), n, p=self.leaf_weights)
        out = np.empty((n, self.leaf_centers.shape[1]), np.float32)
        for lo in range(0, n, CHUNK):
            out[lo : lo + CHUNK] = self._points(leaves[lo : lo + CHUNK], rng)
        return out, leaves


def synthetic_catalog(
    world: EmbeddingWorld,
    leaves: np.ndarray,
    tier_shares: list[float],
    flagged_share: float,
    seed: int,
) -> ProductCatalog:
    """Tiers, flags, prices and commissions for synthetic goods (categories from geometry)."""
    rng = np.random.default_rng(seed)
    n = len(leaves)
    shares = np.asarray(tier_shares) / np.sum(tier_shares)
    return ProductCatalog(
        product_ids=np.arange(n, dtype=np.int64),
        tier=rng.choice(6, n, p=shares),
        flagged=rng.random(n) < flagged_share,
        category_l1=world.leaf_l1[leaves],
        category_l2=world.leaf_l2[leaves],
        category_l3=leaves,
        price_band=rng.integers(0, 5, n),
        commission=rng.uniform(0.01, 0.5, n),
    )


@dataclass
class DiversityScenario:
    """Candidate lists of a model, the truth they are judged against, and the catalog."""

    candidate_ids: np.ndarray  # (n, m) product ids, best first
    scores: np.ndarray  # (n, m)
    truth: sp.csr_matrix  # (n, n_products) held-out goods by catalog position
    catalog: ProductCatalog


def diversity_scenario(
    n_products: int = 100_000,
    n_creators: int = 2000,
    depth: int = 300,
    truth_per_creator: int = 10,
    leaf_mix: tuple[float, float, float] = (0.55, 0.30, 0.15),
    n_l1: int = 16,
    n_l2: int = 80,
    n_leaf: int = 400,
    seed: int = 0,
) -> DiversityScenario:
    """A model's top-`depth` candidates and held-out truth for `n_creators` creators."""
    world = EmbeddingWorld.make(n_l1, n_l2, n_leaf, seed=seed)
    products, leaves = world.products(n_products, seed=seed + 1)
    catalog = synthetic_catalog(world, leaves, [0.12, 0.26, 0.24, 0.19, 0.12, 0.07], 0.03, seed + 2)
    rng = np.random.default_rng(seed + 3)
    primary = rng.choice(n_leaf, n_creators, p=world.leaf_weights)
    same_l1 = [np.flatnonzero(world.leaf_l1 == world.leaf_l1[p]) for p in primary]
    secondary = np.stack([rng.choice(pool, 2) for pool in same_l1])  # (n, 2)
    taste = world.leaf_centers[primary] * 0.8 + world.leaf_centers[secondary].mean(axis=1) * 0.2
    taste += 0.3 / math.sqrt(taste.shape[1]) * rng.standard_normal(taste.shape).astype(np.float32)
    taste /= np.linalg.norm(taste, axis=1, keepdims=True)  # the model's creator vector
    order = np.argsort(leaves, kind="stable")
    starts = np.searchsorted(leaves[order], np.arange(n_leaf + 1))
    popularity = np.linalg.norm(products, axis=1)
    rows, cols = [], []
    for i in range(n_creators):
        picks = rng.choice(3, truth_per_creator, p=leaf_mix)
        for pick in picks:
            if pick == 2:  # anywhere, by popularity
                leaf = rng.choice(n_leaf, p=world.leaf_weights)
            else:
                leaf = primary[i] if pick == 0 else secondary[i, rng.integers(2)]
            members = order[starts[leaf] : starts[leaf + 1]]
            if not len(members):
                continue
            weight = (
                np.exp(4.0 * products[members] @ world.leaf_centers[leaf]) * popularity[members]
            )
            rows.append(i)
            cols.append(rng.choice(members, p=weight / weight.sum()))
    truth = sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(n_creators, n_products))
    truth.data[:] = 1.0
    import faiss

    scores, ids = faiss.knn(
        taste.astype(np.float32), products, depth, metric=faiss.METRIC_INNER_PRODUCT
    )
    return DiversityScenario(catalog.product_ids[ids], scores, truth, catalog)
