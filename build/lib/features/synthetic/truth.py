"""The `truth/` folder: the hidden state behind a synthetic marketplace, for evaluation only.

Training must never read it. Row order of every array is the row order of the matching
table (products, creators; leaves by leaf id).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from features.io import write_json
from features.synthetic.categories import CategoryTree
from features.synthetic.creators import Creators
from features.synthetic.labels import TrueTiers
from features.synthetic.products import Products

TRUTH_DIR = "truth"
PRODUCTS = "products.parquet"
CREATORS = "creators.parquet"
LEAVES = "leaves.parquet"
PRODUCT_LATENT = "product_latent.npy"
CREATOR_LATENT = "creator_latent.npy"
LEAF_LATENT = "leaf_latent.npy"
PARAMS = "params.json"


def write_product_truth(folder: Path, products: Products, tiers: TrueTiers) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(
        {
            "product_id": products.product_id,
            "category_l3": products.leaf,
            "quality": products.quality,
            "popularity": products.popularity,
            "price_band": products.price_band,
            "true_score": tiers.score,
            "true_tier": tiers.tier,
        }
    ).to_parquet(folder / PRODUCTS, index=False)
    np.save(folder / PRODUCT_LATENT, products.latent)


def write_creator_truth(folder: Path, creators: Creators, counts: np.ndarray) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(
        {
            "creator_id": creators.creator_id,
            "primary_leaf": creators.leaves[:, 0],
            "secondary_leaf_1": creators.leaves[:, 1],
            "secondary_leaf_2": creators.leaves[:, 2],
            "price_band": creators.price_band,
            "activity": creators.activity,
            "events": counts,
        }
    ).to_parquet(folder / CREATORS, index=False)
    np.save(folder / CREATOR_LATENT, creators.taste)


def write_leaf_truth(folder: Path, tree: CategoryTree, choice_weight: np.ndarray) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(
        {
            "category_l3": np.arange(tree.n_leaves, dtype=np.int64),
            "category_l2": tree.l2_of_leaf,
            "category_l1": tree.l1_of_leaf,
            "popularity": tree.popularity,
            "choice_weight": choice_weight,
            "median_price": tree.median_price,
        }
    ).to_parquet(folder / LEAVES, index=False)
    np.save(folder / LEAF_LATENT, tree.centroid)


def write_params(folder: Path, params: dict[str, Any]) -> None:
    write_json(params, folder / PARAMS)
