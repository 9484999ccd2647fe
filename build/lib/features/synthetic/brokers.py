"""Brokers (招商团长): each recruits goods concentrated in a few l1 categories."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from features.synthetic.categories import CategoryTree
from features.synthetic.params import DataConfig
from features.synthetic.products import Products
from features.synthetic.sampling import draw_grouped, grouped_cdf, gumbel_top_k

BROKER_ID_BASE = 9_000


@dataclass(frozen=True)
class Brokers:
    broker_id: np.ndarray  # (B,) int64
    l1_member: np.ndarray  # (B, L1) bool: the broker's focus categories
    roster_weight: np.ndarray  # (B,) relative roster size
    goods: pd.DataFrame  # broker_products: broker_id, product_id

    def __len__(self) -> int:
        return len(self.broker_id)

    def table(self) -> pd.DataFrame:
        names = pd.array([f"broker_{i}" for i in self.broker_id], dtype="str")
        return pd.DataFrame({"broker_id": self.broker_id, "name": names})


def build_brokers(
    cfg: DataConfig, tree: CategoryTree, products: Products, rng: np.random.Generator
) -> Brokers:
    p = cfg.audience
    n, n_l1 = cfg.n_brokers, tree.n_l1
    product_l1 = tree.l1_of_leaf[products.leaf]
    l1_size = np.bincount(product_l1, minlength=n_l1)
    available = int((l1_size > 0).sum())
    with np.errstate(divide="ignore"):
        log_weight = np.log(l1_size / l1_size.sum())

    # Each broker's 2-4 focus l1s, drawn without replacement by size.
    low, high = p.broker_l1_range
    n_focus = np.minimum(rng.integers(low, high + 1, n), available)
    top = gumbel_top_k(np.broadcast_to(log_weight, (n, n_l1)), int(n_focus.max(initial=1)), rng)
    l1_member = np.zeros((n, n_l1), dtype=bool)
    for k in range(top.shape[1]):
        rows = np.flatnonzero(n_focus > k)
        l1_member[rows, top[rows, k]] = True

    # Heavy-tailed goods counts; each good from a focus l1, by product popularity.
    sizes = np.maximum(
        1, np.round(p.broker_goods_median * np.exp(p.broker_goods_sigma * rng.standard_normal(n)))
    )
    broker = np.repeat(np.arange(n), sizes.astype(np.int64))
    l1 = top[broker, (rng.random(len(broker)) * n_focus[broker]).astype(np.int64)]
    by_l1 = np.argsort(product_l1, kind="stable")
    cdf = grouped_cdf(product_l1[by_l1], products.popularity[by_l1], n_l1)
    row = by_l1[draw_grouped(cdf, l1, rng.random(len(broker)))]
    pairs = np.unique(broker.astype(np.int64) * len(products) + row)
    broker_ids = BROKER_ID_BASE + np.arange(n, dtype=np.int64)
    goods = pd.DataFrame(
        {
            "broker_id": broker_ids[pairs // len(products)],
            "product_id": products.product_id[pairs % len(products)],
        }
    )
    roster_weight = np.exp(p.broker_roster_sigma * rng.standard_normal(n))
    return Brokers(broker_ids, l1_member, roster_weight, goods)
