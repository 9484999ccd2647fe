"""The synthetic marketplace's hidden truth, wrapped as a recommender (evaluation only).

On generated data, `DATA/truth/` holds the affinity the generator sampled interactions
from. Ranking by it is the best any model can do on that data, so `recall / oracle
recall` says how much of the learnable signal a model captured. Training never reads it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from features.matching_data import IdIndex
from features.synthetic.oracle import take_columns
from models.artifacts import CREATOR_IDS, PRODUCT_IDS
from models.matching.recommender import Recommender, RecommenderError

log = logging.getLogger(__name__)


class OracleRecommender(Recommender):
    kind = "oracle"

    def __init__(self, data_dir: Path, creators: IdIndex, products: IdIndex) -> None:
        from features.synthetic.oracle import Oracle

        self.data_dir = Path(data_dir)
        self.creators, self.products = creators, products
        self.oracle = Oracle.load(self.data_dir)
        # the oracle's columns are in its leaf order; ours are sorted-ID positions
        leaf_ordered_ids = np.asarray(self.oracle.product_ids)[self.oracle.leaf_order]
        columns = products.positions(leaf_ordered_ids, strict=False)
        # for each of our positions, the oracle column holding it (-1: not in the truth)
        self.source = np.full(len(products), -1, dtype=np.int64)
        self.source[columns[columns >= 0]] = np.flatnonzero(columns >= 0)
        # for each oracle column, our position (-1: a truth good outside our catalog)
        self.position = columns
        self.n_products = len(products)

    @staticmethod
    def available(data_dir: Path) -> bool:
        try:
            from features.synthetic.oracle import Oracle  # noqa: F401
        except ImportError:
            return False
        return (Path(data_dir) / "truth").is_dir()

    def fit(self, train: sp.csr_matrix, val: sp.csr_matrix | None = None) -> OracleRecommender:
        return self  # the truth needs no fitting

    def score(self, creators: np.ndarray) -> np.ndarray:
        return self.score_columns(creators, np.arange(self.n_products))[0]

    def score_columns(
        self, creators: np.ndarray, columns: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Every good: the truth's own (leaf) column order, with each column's position,
        so a full ranking gathers no (batch x catalog) matrix into our order."""
        raw = self.oracle.scores_by_leaf(self.creators.ids[creators])
        if columns is None:
            outside = self.position < 0
            if outside.any():
                raw[:, outside] = -np.inf
            return raw, self.position
        columns = np.asarray(columns, dtype=np.int64)
        source = self.source[columns]
        out = take_columns(raw, np.maximum(source, 0))
        out[:, source < 0] = -np.inf
        return out, columns

    def _save(self, path: Path) -> dict[str, Any]:
        np.save(path / CREATOR_IDS, self.creators.ids)
        np.save(path / PRODUCT_IDS, self.products.ids)
        return {"data_dir": str(self.data_dir.resolve())}

    @classmethod
    def _load(cls, path: Path, meta: dict[str, Any]) -> OracleRecommender:
        if not cls.available(Path(meta["data_dir"])):
            raise RecommenderError(f"the oracle's data folder {meta['data_dir']} has no truth/")
        return cls(
            Path(meta["data_dir"]),
            IdIndex(np.load(path / CREATOR_IDS)),
            IdIndex(np.load(path / PRODUCT_IDS)),
        )
