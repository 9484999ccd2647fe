"""The two-tower's logits for any (creators x goods) block, keyed by IDs, not positions.

A matching run's served model scores a creator against every product; broker
matchmaking needs small blocks (a roster x a broker's goods, plus a normaliser sample),
so it takes the exported embeddings and does one (n_c, d) @ (d, n_p) product per block.
The creator embeddings are already divided by the temperature, so the dot product is
the logit of the in-batch softmax. IDs the run does not know score NaN.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from features.errors import HaowuError
from features.matching_data import IdIndex
from models.artifacts import open_matching_run


class EmbeddingScorer:
    """`scorer(creator_ids, product_ids) -> (len(creator_ids), len(product_ids))` logits."""

    def __init__(
        self,
        creator_ids: np.ndarray,
        product_ids: np.ndarray,
        creator_vectors: np.ndarray,
        product_vectors: np.ndarray,
    ) -> None:
        if len(creator_ids) != len(creator_vectors) or len(product_ids) != len(product_vectors):
            raise HaowuError(
                f"embedding rows do not match the IDs: {len(creator_vectors)} creator vectors "
                f"for {len(creator_ids)} IDs, {len(product_vectors)} product vectors for "
                f"{len(product_ids)} IDs"
            )
        self.creators = IdIndex(np.asarray(creator_ids, dtype=np.int64))
        self.products = IdIndex(np.asarray(product_ids, dtype=np.int64))
        self.creator_vectors = creator_vectors  # (n_creators, d), may be a memory map
        self.product_vectors = product_vectors  # (n_products, d)

    def __call__(self, creator_ids: np.ndarray, product_ids: np.ndarray) -> np.ndarray:
        c = self.creators.positions(creator_ids, strict=False)
        p = self.products.positions(product_ids, strict=False)
        u = np.asarray(self.creator_vectors[np.maximum(c, 0)], dtype=np.float32)  # (n_c, d)
        v = np.asarray(self.product_vectors[np.maximum(p, 0)], dtype=np.float32)  # (n_p, d)
        out = (u @ v.T).astype(np.float64)  # (n_c, n_p)
        out[c < 0, :] = np.nan
        out[:, p < 0] = np.nan
        return out


def load_scorer(model: Path | str, data_dir: Path | None = None) -> EmbeddingScorer:
    """The scorer of a matching run folder (RUN_DIR or RUN_DIR/model), loaded by the
    artifact contract's opener (a run folder or a registry URI)."""
    run = open_matching_run(model)
    served = run.model.export() if hasattr(run.model, "export") else run.model
    if getattr(served, "creator_vectors", None) is None:
        raise HaowuError(f"{model}: a {run.model.kind} model has no embeddings to score pairs")
    return EmbeddingScorer(
        run.creators.ids, run.products.ids, served.creator_vectors, served.product_vectors
    )
