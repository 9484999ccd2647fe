"""Creators (达人): audience size, activity, category tastes, price band, broker roster."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from features.synthetic.brokers import Brokers
from features.synthetic.categories import CategoryTree
from features.synthetic.params import DataConfig
from features.synthetic.sampling import (
    correlated,
    draw_categorical,
    draw_grouped,
    grouped_cdf,
    zipf_weights,
)
from features.synthetic.window import DAY, Window

CREATOR_ID_BASE = 1_000_000_000
RESAMPLE_ROUNDS = 8  # redraws of a secondary leaf that collides with another of the creator's


@dataclass(frozen=True)
class Creators:
    creator_id: np.ndarray  # (C,) int64
    followers: np.ndarray  # int64, heavy-tailed
    activity: np.ndarray  # hidden relative promotion rate, correlated with followers
    leaves: np.ndarray  # (C, 3) primary, secondary, secondary leaf
    price_band: np.ndarray  # 0..4
    fans_female_share: np.ndarray
    region: np.ndarray
    account_age_days: np.ndarray
    joined_at: np.ndarray  # unix seconds
    broker: np.ndarray  # broker row, -1 for none
    taste: np.ndarray  # hidden (C, d) float32

    def __len__(self) -> int:
        return len(self.creator_id)

    def table(self, brokers: Brokers | None) -> pd.DataFrame:
        has = self.broker >= 0
        broker_id = np.zeros(len(self), dtype=np.int64)
        if brokers is not None and has.any():
            broker_id[has] = brokers.broker_id[self.broker[has]]
        return pd.DataFrame(
            {
                "creator_id": self.creator_id,
                "followers": self.followers,
                "category_pref": self.leaves[:, 0],
                "price_band": self.price_band,
                "fans_female_share": self.fans_female_share,
                "region": self.region,
                "account_age_days": self.account_age_days,
                "broker_id": pd.arrays.IntegerArray(broker_id, ~has),
            }
        )


def _secondary(
    cfg: DataConfig,
    tree: CategoryTree,
    weight: np.ndarray,
    taken: np.ndarray,
    rng: np.random.Generator,
) -> np.ndarray:
    """A secondary leaf: mostly in the primary's l1, else anywhere; avoids leaves in `taken`."""
    n = len(taken)
    in_l1 = grouped_cdf(tree.l1_of_leaf, weight, tree.n_l1)
    home = tree.l1_of_leaf[taken[:, 0]]
    same = rng.random(n) < cfg.audience.secondary_same_l1
    leaf = np.empty(n, dtype=np.int64)
    todo = np.arange(n)
    for round_ in range(2 * RESAMPLE_ROUNDS):
        local = same[todo] & (round_ < RESAMPLE_ROUNDS)  # then give up on the l1
        leaf[todo] = np.where(
            local,
            draw_grouped(in_l1, home[todo], rng.random(len(todo))),
            draw_categorical(weight, len(todo), rng),
        )
        todo = todo[(taken[todo] == leaf[todo, None]).any(axis=1)]
        if not len(todo):
            break
    return leaf


def _brokers(
    cfg: DataConfig, primary_l1: np.ndarray, brokers: Brokers, rng: np.random.Generator
) -> np.ndarray:
    """Broker row per creator (-1: none). Every broker gets one creator, then rosters grow by
    roster weight, boosted where the creator's l1 is one of the broker's focus l1s."""
    n = len(primary_l1)
    broker = np.full(n, -1, dtype=np.int64)
    if not len(brokers):
        return broker
    members = rng.permutation(n)[: int(round(cfg.broker_creator_share * n))]
    if len(members) < len(brokers):
        raise ValueError(
            f"broker_creator_share gives {len(members)} rostered creators, {len(brokers)} brokers"
        )
    broker[members[: len(brokers)]] = np.arange(len(brokers))
    rest = members[len(brokers) :]
    boost = 1.0 + cfg.audience.broker_l1_affinity * brokers.l1_member
    for l1 in np.unique(primary_l1[rest]):
        rows = rest[primary_l1[rest] == l1]
        broker[rows] = draw_categorical(brokers.roster_weight * boost[:, l1], len(rows), rng)
    return broker


def build_creators(
    cfg: DataConfig,
    tree: CategoryTree,
    leaf_weight: np.ndarray,
    brokers: Brokers | None,
    window: Window,
    rng: np.random.Generator,
) -> Creators:
    """`leaf_weight`: leaf popularity, zero where a leaf has no products."""
    p = cfg.audience
    n, d = cfg.n_creators, cfg.latent_dim
    z_followers = rng.standard_normal(n)
    followers = np.round(p.followers_median * np.exp(p.followers_sigma * z_followers)).astype(
        np.int64
    )
    activity = np.exp(p.activity_sigma * correlated(z_followers, p.activity_followers_corr, rng))

    new = rng.random(n) < p.new_creator_share
    age = np.where(
        new,
        rng.integers(0, cfg.days, n),
        rng.integers(cfg.days, max(p.max_creator_age_days, cfg.days + 1), n),
    ).astype(np.int64)
    joined_at = window.end - ((age + rng.random(n)) * DAY).astype(np.int64)

    primary = draw_categorical(leaf_weight, n, rng).astype(np.int64)
    leaves = np.stack([primary, primary, primary], axis=1)
    leaves[:, 1] = _secondary(cfg, tree, leaf_weight, leaves[:, :1], rng)
    leaves[:, 2] = _secondary(cfg, tree, leaf_weight, leaves[:, :2], rng)

    primary_l1 = tree.l1_of_leaf[primary]
    low, high = p.female_share_range
    l1_female = low + (high - low) * rng.random(tree.n_l1)
    mean = l1_female[primary_l1]
    female = rng.beta(
        mean * p.female_share_concentration, (1 - mean) * p.female_share_concentration
    )

    blend_primary, blend_secondary = p.taste_blend
    taste = (
        blend_primary * tree.centroid[primary]
        + blend_secondary * 0.5 * (tree.centroid[leaves[:, 1]] + tree.centroid[leaves[:, 2]])
        + rng.standard_normal((n, d), dtype=np.float32) * np.float32(p.taste_noise / np.sqrt(d))
    ).astype(np.float32)
    return Creators(
        creator_id=CREATOR_ID_BASE + np.arange(n, dtype=np.int64),
        followers=followers,
        activity=activity,
        leaves=leaves,
        price_band=draw_categorical(np.asarray(p.price_band_shares), n, rng).astype(np.int64),
        fans_female_share=np.round(female, 4),
        region=draw_categorical(zipf_weights(p.n_regions, p.region_zipf, rng), n, rng).astype(
            np.int64
        ),
        account_age_days=age,
        joined_at=joined_at,
        broker=_brokers(cfg, primary_l1, brokers, rng) if brokers is not None else np.full(n, -1),
        taste=taste,
    )
