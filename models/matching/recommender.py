"""One interface for every recommender: fit / score / recommend / save / load.

Creators and products are *positions* (0..n-1), never raw IDs; the data layer maps IDs
once. A model only has to say how it scores a batch of creators against every product
(`score`); the shared `recommend` turns scores into top-k with already-seen goods
excluded and, optionally, ranking restricted to a candidate set. Evaluation and the batch
job never care which model they hold.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp
import torch

from features.errors import HaowuError

MODEL_FILE = "recommender.json"


class RecommenderError(HaowuError):
    """A recommender was used wrongly (not fitted, wrong shapes, unknown kind)."""


class Recommender(ABC):
    """Base class: subclasses implement `fit`, `score`, `_save` and `_load`."""

    kind: ClassVar[str]
    registry: ClassVar[dict[str, type[Recommender]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "kind" in cls.__dict__:
            Recommender.registry[cls.kind] = cls

    n_products: int = 0

    @abstractmethod
    def fit(self, train: sp.csr_matrix, val: sp.csr_matrix | None = None) -> Recommender:
        """Learn from the binary creator x product matrix `train` (val: early stopping)."""

    @abstractmethod
    def score(self, creators: np.ndarray) -> np.ndarray:
        """(len(creators), n_products) float32 scores; higher is better. A fresh array
        (or a read-only view): `recommend` masks it in place."""

    def score_columns(
        self, creators: np.ndarray, columns: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Scores of `creators` against the goods at positions `columns` (None: every
        good), and the product position of each returned column (-1: a column that holds
        no good of ours, scored -inf). Models that can score a subset directly override
        it (factor models: a smaller product; the oracle: its own column order), so
        ranking a slice costs the slice, not the catalog."""
        scores = self.score(creators)
        if columns is None:
            return scores, self._columns(None)
        return scores[:, columns], self._columns(columns)

    def _columns(self, columns: np.ndarray | None) -> np.ndarray:
        """The product positions asked for, as int64 (None: every good)."""
        if columns is None:
            return np.arange(self.n_products)
        return np.asarray(columns, dtype=np.int64)

    def recommend(
        self,
        creators: np.ndarray,
        k: int,
        exclude: sp.csr_matrix | None = None,
        candidates: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k products for each creator: (positions, scores), both (n, k).

        `exclude` has one row per creator (e.g. the goods it already promoted); those
        products score -inf. `candidates` restricts the ranking to these product positions.
        Rows with fewer than k eligible products are padded with -inf scores.
        """
        creators = np.asarray(creators, dtype=np.int64)
        check_exclude(exclude, len(creators))
        if candidates is not None:
            candidates = np.asarray(candidates, dtype=np.int64)
        raw, positions = self.score_columns(creators, candidates)
        raw = np.ascontiguousarray(raw, dtype=np.float32)
        if not raw.flags.writeable:  # masking writes into the scores, never into the model
            raw = raw.copy()
        if raw.shape != (len(creators), len(positions)):
            raise RecommenderError(
                f"scores are {raw.shape}, expected {(len(creators), len(positions))}"
            )
        scores = torch.from_numpy(raw)
        if exclude is not None and exclude.nnz:
            coo = exclude.tocoo()
            column = np.full(self.n_products, -1, dtype=np.int64)  # position -> score column
            held = positions >= 0
            column[positions[held]] = np.flatnonzero(held)
            col = column[coo.col]
            keep = col >= 0
            scores[
                torch.from_numpy(coo.row[keep].astype(np.int64)), torch.from_numpy(col[keep])
            ] = -np.inf
        top, idx = torch.topk(scores, min(k, scores.shape[1]), dim=1)  # (n, k)
        return pad_top(np.maximum(positions[idx.numpy()], 0), top.numpy(), k)

    # --- persistence -------------------------------------------------------------------

    def save(self, path: Path) -> Path:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        meta = {"kind": self.kind, "n_products": self.n_products, **self._save(path)}
        (path / MODEL_FILE).write_text(json.dumps(meta, indent=2) + "\n")
        return path

    @classmethod
    def load(cls, path: Path) -> Recommender:
        """Load any saved recommender (the subclass is read from `recommender.json`)."""
        path = Path(path)
        meta_path = path / MODEL_FILE
        if not meta_path.is_file():
            raise RecommenderError(f"no saved recommender at {path} ({MODEL_FILE} missing)")
        meta = json.loads(meta_path.read_text())
        kind = meta["kind"]
        if kind not in Recommender.registry:
            raise RecommenderError(f"unknown recommender kind {kind!r}")
        target = Recommender.registry[kind]
        if cls is not Recommender and not issubclass(target, cls):
            raise RecommenderError(f"{path} holds a {kind!r}, not a {cls.kind!r}")
        model = target._load(path, meta)
        model.n_products = int(meta["n_products"])
        return model

    @abstractmethod
    def _save(self, path: Path) -> dict[str, Any]:
        """Write the model's arrays under `path`; return extra metadata for the JSON."""

    @classmethod
    @abstractmethod
    def _load(cls, path: Path, meta: dict[str, Any]) -> Recommender:
        """Rebuild from what `_save` wrote."""

    def _check_fitted(self) -> None:
        if not self.n_products:
            raise RecommenderError(f"{type(self).__name__} is not fitted")


class EmbeddingRecommender(Recommender):
    """Serve-time form of any factor model: score = creator_vecs @ product_vecs.T.

    The two-tower model exports to this (torchrec style: train-time towers, serve-time
    embeddings, joined by a small tested export step); so does ALS.
    """

    kind = "embedding"

    def __init__(
        self, creator_vectors: np.ndarray | None = None, product_vectors: np.ndarray | None = None
    ) -> None:
        self.creator_vectors = creator_vectors
        self.product_vectors = product_vectors
        if product_vectors is not None:
            self.n_products = len(product_vectors)

    def fit(self, train: sp.csr_matrix, val: sp.csr_matrix | None = None) -> EmbeddingRecommender:
        raise RecommenderError(
            "an EmbeddingRecommender is exported from a trained model, not fitted"
        )

    def score(self, creators: np.ndarray) -> np.ndarray:
        return self.score_columns(creators)[0]

    def score_columns(
        self, creators: np.ndarray, columns: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        self._check_fitted()
        assert self.creator_vectors is not None and self.product_vectors is not None
        return dot_columns(self.creator_vectors[creators], self.product_vectors, columns)

    def _save(self, path: Path) -> dict[str, Any]:
        np.save(path / "creator_embeddings.npy", self.creator_vectors)
        np.save(path / "product_embeddings.npy", self.product_vectors)
        return {}

    @classmethod
    def _load(cls, path: Path, meta: dict[str, Any]) -> EmbeddingRecommender:
        return cls(
            np.load(path / "creator_embeddings.npy", mmap_mode="r"),
            np.load(path / "product_embeddings.npy"),
        )


def check_exclude(exclude: sp.csr_matrix | None, n_creators: int) -> None:
    if exclude is not None and exclude.shape[0] != n_creators:
        raise RecommenderError(f"exclude has {exclude.shape[0]} rows for {n_creators} creators")


def pad_top(found: np.ndarray, values: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top lists narrower than k (a catalog smaller than k) padded with -inf scores."""
    pad = k - found.shape[1]
    if pad <= 0:
        return found, values
    found = np.pad(found, ((0, 0), (0, pad)), constant_values=0)
    return found, np.pad(values, ((0, 0), (0, pad)), constant_values=-np.inf)


def in_rows(matrix: sp.csr_matrix, positions: np.ndarray) -> np.ndarray:
    """(n, K) bool: is `positions[i, j]` a stored column of row i of `matrix` (n rows)?
    One sorted search over the rows' (row, column) keys, no dense (n, n_products) mask;
    negative positions (no good there) are never found."""
    positions = np.asarray(positions, dtype=np.int64)
    if matrix.shape[0] != len(positions):
        raise ValueError(f"matrix has {matrix.shape[0]} rows, positions has {len(positions)}")
    matrix = matrix.tocsr()
    if not matrix.has_sorted_indices:
        matrix = matrix.sorted_indices()
    width = np.int64(matrix.shape[1])
    rows = np.repeat(np.arange(len(positions), dtype=np.int64), np.diff(matrix.indptr))
    keys = rows * width + matrix.indices.astype(np.int64)  # ascending: CSR order
    if not len(keys):
        return np.zeros(positions.shape, dtype=bool)
    wanted = np.arange(len(positions), dtype=np.int64)[:, None] * width + positions
    at = np.minimum(np.searchsorted(keys, wanted), len(keys) - 1)
    return (keys[at] == wanted) & (positions >= 0)


_SCORES: ContextVar[list[torch.Tensor] | None] = ContextVar("haowu_scores", default=None)


@contextmanager
def reused_scores() -> Iterator[None]:
    """Within it, factor models score each batch into one kept (batch x goods) buffer: a
    fresh one (800 MB for 1,024 creators x 200,000 goods) is faulted into memory and
    unmapped again every batch, about 40% of a batch's time. Only for a caller that is
    done with a batch's scores before it asks for the next (evaluation's top-k)."""
    token = _SCORES.set([])
    try:
        yield
    finally:
        _SCORES.reset(token)


def _scores_out(rows: int, columns: int) -> torch.Tensor | None:
    held = _SCORES.get()
    if held is None:
        return None
    if not held or held[0].numel() < rows * columns:
        held[:] = [torch.empty(rows * columns)]
    return held[0][: rows * columns].view(rows, columns)


def dot_columns(
    creator_vectors: np.ndarray, product_vectors: np.ndarray, columns: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """`score_columns` of a factor model: creator vectors . the chosen goods' vectors."""
    if columns is None:
        columns = np.arange(len(product_vectors))
    else:
        product_vectors = product_vectors[columns]
    u = torch.from_numpy(np.ascontiguousarray(creator_vectors, dtype=np.float32))
    v = torch.from_numpy(np.ascontiguousarray(product_vectors, dtype=np.float32))
    out = _scores_out(len(u), len(v))
    scores = u @ v.T if out is None else torch.mm(u, v.T, out=out)
    return scores.numpy(), np.asarray(columns, dtype=np.int64)
