"""Interactions: who promoted what, when, with what result — the signal matching must find.

Per event a creator picks a leaf (primary, a secondary, or any leaf by popularity), draws
`candidates` proposal products from it by popularity and keeps one by Gumbel-max on the
hidden affinity a(c, p) = alpha <taste_c, latent_p> - beta |band_p - band_c| + gamma quality_p.
That is sampling-importance-resampling: as candidates grow, P(p | c, leaf) tends to
popularity_p * exp(a(c, p)) / Z(c, leaf), which is what `Oracle` computes exactly.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from features.io import write_part
from features.logs import progress_bar
from features.synthetic.creators import Creators
from features.synthetic.params import DataConfig
from features.synthetic.products import Products
from features.synthetic.sampling import (
    Stream,
    draw_categorical,
    grouped_cdf,
    seconds_to_timestamps,
    stream,
)
from features.synthetic.window import Window

log = logging.getLogger(__name__)

# A leaf whose latents outgrow a core's L2 cache (2 MiB = 32k x 16 float32) is searched and
# gathered in sorted order instead; this changes speed only, never the output.
LOCAL_SEARCH_MAX_PRODUCTS = 32_768


@dataclass(frozen=True)
class LeafSortedCatalog:
    """Products re-ordered by leaf, so that one leaf's products are one contiguous block and
    a proposal from leaf l is `start[l] + searchsorted(within[block], u)`."""

    row: np.ndarray  # sorted position -> products-table row
    start: np.ndarray  # (L + 1,) first sorted position of each leaf
    within: np.ndarray  # cumulative popularity inside each leaf, ending at 1.0
    latent: np.ndarray  # (N, d) float32
    base: np.ndarray  # gamma * quality, float32
    band: np.ndarray  # price band, int8
    listed_at: np.ndarray
    price: np.ndarray

    @classmethod
    def build(cls, cfg: DataConfig, products: Products, n_leaves: int) -> LeafSortedCatalog:
        row = np.argsort(products.leaf, kind="stable")
        leaf = products.leaf[row]
        return cls(
            row=row,
            start=np.searchsorted(leaf, np.arange(n_leaves + 1)),
            within=grouped_cdf(leaf, products.popularity[row], n_leaves) - leaf,
            latent=products.latent[row],
            base=(cfg.affinity.gamma * products.quality[row]).astype(np.float32),
            band=products.price_band[row].astype(np.int8),
            listed_at=products.listed_at[row],
            price=products.price[row],
        )


def leaf_weight(popularity: np.ndarray, leaf: np.ndarray, n_leaves: int) -> np.ndarray:
    """Global leaf-choice weights: leaf popularity, zero for leaves without products; sums to 1."""
    has = np.bincount(leaf, minlength=n_leaves) > 0
    weight = popularity * has
    return weight / weight.sum()


def event_counts(cfg: DataConfig, creators: Creators) -> np.ndarray:
    """Promotions per creator: at least one, heavy-tailed by activity, ~cfg.interactions total."""
    rng = stream(cfg.seed, Stream.EVENT_COUNTS)
    extra = max(cfg.interactions - len(creators), 0)
    return 1 + rng.poisson(extra * creators.activity / creators.activity.sum())


def creator_chunks(counts: np.ndarray, chunk_rows: int) -> list[tuple[int, int]]:
    """Contiguous creator ranges holding about `chunk_rows` events each."""
    total = np.cumsum(counts)
    cuts = np.searchsorted(total, np.arange(chunk_rows, total[-1], chunk_rows), side="left") + 1
    bounds = np.unique(np.concatenate(([0], cuts, [len(counts)])))
    return [(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:], strict=True) if b > a]


class InteractionSampler:
    """Generates one chunk of creators' interactions from that chunk's own random stream."""

    def __init__(
        self,
        cfg: DataConfig,
        products: Products,
        creators: Creators,
        catalog: LeafSortedCatalog,
        leaf_weight: np.ndarray,
        counts: np.ndarray,
        window: Window,
    ) -> None:
        self.cfg, self.products, self.creators = cfg, products, creators
        self.catalog = catalog
        self.leaf_weight = leaf_weight
        self.counts = counts
        self.window = window
        self._band = creators.price_band.astype(np.int8)
        log_followers = np.log1p(creators.followers)
        self.z_followers = (log_followers - log_followers.mean()) / (log_followers.std() or 1.0)

    def _leaves(self, creator: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        primary, secondary, _ = self.cfg.affinity.leaf_mix
        n = len(creator)
        r = rng.random(n)
        pick = rng.integers(1, 3, n)  # which of the two secondaries
        own = self.creators.leaves[creator, np.where(r < primary, 0, pick)]
        anywhere = draw_categorical(self.leaf_weight, n, rng)
        return np.where(r < primary + secondary, own, anywhere)

    def _score(
        self, block: slice, local: np.ndarray, taste: np.ndarray, band: np.ndarray
    ) -> np.ndarray:
        """Affinity of events (taste (n, d), band (n,)) to products block[local] (n, k)."""
        cat, aff = self.catalog, self.cfg.affinity
        dot = np.einsum("nkd,nd->nk", cat.latent[block][local], taste)
        gap = np.abs(cat.band[block][local] - band[:, None]).astype(np.float32)
        return aff.alpha * dot - aff.beta * gap + cat.base[block][local]

    def _propose(self, block: slice, n: int, rng: np.random.Generator) -> np.ndarray:
        """(n, k) candidate positions inside one leaf's block, drawn by popularity."""
        k = self.cfg.candidates
        u = rng.random((n, k))
        within = self.catalog.within[block]
        if len(within) <= LOCAL_SEARCH_MAX_PRODUCTS:
            return np.searchsorted(within, u, side="right")
        # A big leaf's block misses the cache: search (and later gather) in sorted order.
        flat = u.ravel()
        order = np.argsort(flat)
        local = np.empty(n * k, dtype=np.int64)
        local[order] = np.searchsorted(within, flat[order], side="right")
        return local.reshape(n, k)

    def _choose(
        self, creator: np.ndarray, leaf: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        """Sorted-catalog position of each event's chosen product, and its affinity.
        Events are handled leaf by leaf so each leaf's products stay in cache."""
        cat = self.catalog
        n, batch = len(leaf), self.cfg.affinity.score_batch_rows
        by_leaf = np.argsort(
            leaf.astype(np.uint16 if len(cat.start) <= 2**16 else np.int64), kind="stable"
        )
        bounds = np.searchsorted(leaf[by_leaf], np.arange(len(cat.start)))
        pos = np.empty(n, dtype=np.int64)
        affinity = np.empty(n, dtype=np.float32)
        for leaf_id in np.flatnonzero(np.diff(bounds)):
            block = slice(cat.start[leaf_id], cat.start[leaf_id + 1])
            for lo in range(bounds[leaf_id], bounds[leaf_id + 1], batch):
                events = by_leaf[lo : min(lo + batch, bounds[leaf_id + 1])]
                who = creator[events]
                local = self._propose(block, len(events), rng)
                score = self._score(block, local, self.creators.taste[who], self._band[who])
                # Gumbel-max: -log(Exp(1)) is a standard Gumbel draw
                draw = rng.standard_exponential(score.shape, dtype=np.float32)
                noise = np.log(np.maximum(draw, np.finfo(np.float32).tiny))
                pick = np.argmax(score - noise, axis=1)
                at = np.arange(len(events))
                pos[events] = block.start + local[at, pick]
                affinity[events] = score[at, pick]
        return pos, affinity

    def chunk(self, index: int, lo: int, hi: int) -> pd.DataFrame:
        """Interactions of creators [lo, hi), sorted by creator then time."""
        cfg, cat, window = self.cfg, self.catalog, self.window
        rng = stream(cfg.seed, Stream.INTERACTIONS, index)
        creator = np.repeat(np.arange(lo, hi), self.counts[lo:hi])
        leaf = self._leaves(creator, rng)
        n = len(creator)
        pos, affinity = self._choose(creator, leaf, rng)

        # Never before the product was listed or the creator joined: new goods appear late.
        earliest = np.maximum(
            np.maximum(cat.listed_at[pos], self.creators.joined_at[creator]), window.start
        )
        ts = earliest + (rng.random(n) * (window.end - earliest)).astype(np.int64)
        aff = cfg.affinity
        rate = np.exp(
            aff.orders_base
            + aff.orders_followers_coef * self.z_followers[creator]
            + aff.orders_affinity_coef * affinity
        )
        orders = 1 + rng.poisson(rate)
        row = cat.row[pos]

        # Rows sorted by creator then time; one row per (creator, product, ts).
        key = (creator - lo) * (window.end - window.start) + (ts - window.start)
        order = np.argsort(key, kind="stable")
        key, row, creator, ts, orders, pos = (
            a[order] for a in (key, row, creator, ts, orders, pos)
        )
        keep = ~_repeated(key, row)
        return pd.DataFrame(
            {
                "creator_id": self.creators.creator_id[creator[keep]],
                "product_id": self.products.product_id[row[keep]],
                "ts": seconds_to_timestamps(ts[keep]),
                "orders": orders[keep].astype(np.int64),
                "gmv": np.round(orders[keep] * cat.price[pos[keep]], 2),
            }
        )


def _repeated(key: np.ndarray, row: np.ndarray) -> np.ndarray:
    """Rows (sorted by `key`) whose (key, row) pair already occurred; equal keys are rare,
    so only their runs are compared exactly."""
    tied = np.zeros(len(key), dtype=bool)
    same = key[1:] == key[:-1]
    tied[1:] |= same
    tied[:-1] |= same
    out = np.zeros(len(key), dtype=bool)
    if tied.any():
        at = np.flatnonzero(tied)
        out[at] = pd.DataFrame({"key": key[at], "row": row[at]}).duplicated().to_numpy()
    return out


def write_interactions(
    sampler: InteractionSampler, folder: Path, chunk_rows: int, workers: int, progress: bool
) -> int:
    """Generate and write every chunk as `folder/part-NNNNN.parquet`; returns the row count.
    Chunks run on `workers` threads (numpy and Arrow release the GIL); output is the same
    for any number of workers, since each chunk has its own random stream."""
    chunks = creator_chunks(sampler.counts, chunk_rows)
    total = int(sampler.counts.sum())
    rows = 0
    with (
        progress_bar(
            None, progress, total=total, desc="interactions", unit="row", unit_scale=True
        ) as bar,
        ThreadPoolExecutor(max_workers=workers) as pool,
    ):

        def run(index: int, lo: int, hi: int) -> tuple[int, int]:
            frame = sampler.chunk(index, lo, hi)
            write_part(frame, folder, index)
            return len(frame), int(sampler.counts[lo:hi].sum())

        futures = [pool.submit(run, i, lo, hi) for i, (lo, hi) in enumerate(chunks)]
        for future in as_completed(futures):
            written, drawn = future.result()
            rows += written
            bar.update(drawn)
    log.info("interactions: %d rows in %d parts", rows, len(chunks))
    return rows
