"""Which FAISS structure serves a catalog of a given size, and how it is trained.

Kept apart from `EmbeddingIndex` (models/retrieval/index.py), which only wraps the result: this
module owns the size rule, the nlist rule and the training sample; it also holds the
retrieval errors and the small checks shared by the index and the policy.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Any

import faiss
import numpy as np

from features.errors import HaowuError
from features.settings import IndexConfig

logger = logging.getLogger(__name__)

KINDS = ("flat", "ivf_flat", "ivf_sq8", "ivf_pq_refine")


class RetrievalError(HaowuError, ValueError):
    """Retrieval was asked something it cannot answer (bad k, unknown ID, bad shape)."""


class UnknownIdError(RetrievalError):
    """An ID is not in the index (never added, or removed)."""


class DimensionMismatchError(RetrievalError):
    """Vectors of one width were given to an index built for another."""


@dataclass(frozen=True)
class TuneRecord:
    """What `tune` chose and what it measured against exact search."""

    nprobe: int
    k_factor: float
    recall: float
    target_recall: float
    k: int
    n_queries: int
    reached: bool
    queries_per_s: float


def set_threads(threads: int) -> None:
    """FAISS (OpenMP) threads; the platform machine has 2 cores."""
    faiss.omp_set_num_threads(max(1, int(threads)))


def choose_kind(n: int, cfg: IndexConfig) -> str:
    """The configured kind, or by size: exact while it is cheap, IVF beyond."""
    if cfg.kind != "auto":
        return cfg.kind
    if n <= cfg.flat_max_items:
        return "flat"
    return "ivf_flat" if n <= cfg.ivf_flat_max_items else "ivf_pq_refine"


def choose_nlist(n: int, cfg: IndexConfig) -> int:
    """nlist = nlist_per_sqrt * sqrt(n), rounded to a power of two, clipped, <= n / 39."""
    raw = cfg.nlist_per_sqrt * math.sqrt(n)
    nlist = 2 ** round(math.log2(max(raw, 1.0)))
    nlist = min(max(nlist, cfg.min_nlist), cfg.max_nlist)
    return int(max(1, min(nlist, n // 39)))  # FAISS warns below 39 training points per list


def ann_recall(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean |found_i ∩ truth_i| / |truth_i| over rows; -1 marks an empty slot."""
    n, k = truth.shape
    _, inverse = np.unique(np.concatenate([found.ravel(), truth.ravel()]), return_inverse=True)
    width = inverse.max() + 1
    rows_f = np.repeat(np.arange(n), found.shape[1]) * width
    rows_t = np.repeat(np.arange(n), k) * width
    keys_f = rows_f + inverse[: found.size]
    keys_t = rows_t + inverse[found.size :]
    hit = np.isin(keys_t, keys_f) & (truth.ravel() >= 0)
    valid = np.maximum((truth >= 0).sum(axis=1), 1)
    return float((hit.reshape(n, k).sum(axis=1) / valid).mean())


def as_matrix(vectors: np.ndarray, dim: int | None, what: str) -> np.ndarray:
    arr = np.asarray(vectors)
    if arr.ndim != 2:
        raise DimensionMismatchError(f"{what} must be 2-D (n, dim), got shape {arr.shape}")
    if dim is not None and arr.shape[1] != dim:
        raise DimensionMismatchError(f"{what} have dim {arr.shape[1]}, the index holds dim {dim}")
    if not np.isfinite(arr).all():
        raise RetrievalError(f"{what} contain NaN or infinite values")
    return np.ascontiguousarray(arr, dtype=np.float32)


def as_ids(ids: np.ndarray, n: int) -> np.ndarray:
    arr = np.asarray(ids)
    if arr.shape != (n,) or not np.issubdtype(arr.dtype, np.integer):
        raise RetrievalError(
            f"ids must be {n} integers, one per vector, got {arr.dtype} {arr.shape}"
        )
    arr = arr.astype(np.int64)
    uniq, counts = np.unique(arr, return_counts=True)
    if (counts > 1).any():
        raise RetrievalError(f"duplicate ids, e.g. {uniq[counts > 1][:5].tolist()}")
    return arr


def bitmap(mask: np.ndarray) -> tuple[faiss.IDSelectorBitmap, np.ndarray]:
    """A FAISS selector over positions; the packed bits must outlive the search."""
    bits = np.packbits(mask, bitorder="little")
    return faiss.IDSelectorBitmap(len(mask), faiss.swig_ptr(bits)), bits


def ivf_of(index: faiss.Index) -> Any:
    """The IVF inside a kind (the base of a refine index)."""
    if isinstance(index, faiss.IndexRefine):
        return faiss.downcast_index(index.base_index)
    return faiss.extract_index_ivf(index)


def squared_norms(vectors: np.ndarray, batch: int = 1_000_000) -> np.ndarray:
    return np.concatenate(
        [
            np.einsum("ij,ij->i", vectors[lo : lo + batch], vectors[lo : lo + batch])
            for lo in range(0, len(vectors), batch)
        ]
    )


def augment(vectors: np.ndarray, params: dict[str, Any]) -> np.ndarray:
    """Items as stored: [x, sqrt(norm_max^2 - |x|^2), 0 ...] when norm augmentation is on.

    Queries get zeros in the extra columns, so every inner product, and so every score, is
    unchanged; only the partition sees the extra column. It puts all items on one sphere,
    so IVF cells group goods by direction *and* norm and maximum inner product search
    becomes nearest-neighbour search (Bachrach et al., RecSys 2014). Without it, popular
    goods (large norms) are spread over every cell of their region.
    """
    extra = params["stored_dim"] - params["dim"]
    if not extra:
        return vectors
    out = np.zeros((len(vectors), params["stored_dim"]), np.float32)
    out[:, : params["dim"]] = vectors
    if params.get("norm_max"):
        out[:, params["dim"]] = np.sqrt(
            np.maximum(params["norm_max"] ** 2 - squared_norms(vectors), 0)
        )
    return out


def make_index(vectors: np.ndarray, cfg: IndexConfig) -> tuple[str, faiss.Index, dict[str, Any]]:
    """(kind, an empty trained FAISS index, its params) for these vectors under cfg."""
    n, dim = vectors.shape
    kind = choose_kind(n, cfg)
    params: dict[str, Any] = {
        "dim": dim,
        "stored_dim": dim,
        "norm_max": None,
        "quantizer": None,
        "nlist": 0,
        "nprobe": 0,
        "k_factor": 1.0,
    }
    if kind == "flat":
        index: faiss.Index = faiss.IndexFlatIP(dim)
    else:
        # + the norm column, + a zero column to keep the width even; vectors of one norm
        # (unit-normalised towers) would get a column of zeros that only slows the scan
        norms = np.sqrt(squared_norms(vectors)) if cfg.norm_augment else None
        if norms is not None and norms.max() - norms.min() > cfg.norm_augment_min_spread:
            params["norm_max"] = float(norms.max())
            params["stored_dim"] = dim + (2 if dim % 2 == 0 else 1)
        dim = params["stored_dim"]
        nlist = choose_nlist(n, cfg)
        if cfg.coarse_quantizer == "hnsw":
            quantizer: faiss.Index = faiss.IndexHNSWFlat(
                dim, cfg.hnsw_m, faiss.METRIC_INNER_PRODUCT
            )
            quantizer.hnsw.efSearch = cfg.hnsw_ef_search
        else:
            quantizer = faiss.IndexFlatIP(dim)
        ip = faiss.METRIC_INNER_PRODUCT
        if kind == "ivf_flat":
            index = faiss.IndexIVFFlat(quantizer, dim, nlist, ip)
        elif kind == "ivf_sq8":
            index = faiss.IndexIVFScalarQuantizer(
                quantizer, dim, nlist, faiss.ScalarQuantizer.QT_8bit, ip
            )
        else:
            m = dim // cfg.pq_dims_per_code
            if m * cfg.pq_dims_per_code != dim:
                raise RetrievalError(
                    f"pq_dims_per_code={cfg.pq_dims_per_code} does not divide dim {dim}"
                )
            base = faiss.IndexIVFPQFastScan(quantizer, dim, nlist, m, 4, ip)
            index = faiss.IndexRefineFlat(base)
            index.own_fields = True
            base.this.disown()  # the refine index frees it (disown this proxy, not a downcast copy)
        ivf = ivf_of(index)
        ivf.own_fields = True  # the FAISS objects own their parts: no Python lifetimes to track
        quantizer.this.disown()
        clustering = faiss.IndexFlatIP(dim)  # k-means on BLAS even when HNSW assigns
        if cfg.coarse_quantizer == "hnsw":
            ivf.clustering_index = clustering
        if params["norm_max"]:  # items lie on one sphere: keep centroids on it too (cosine k-means)
            ivf.cp.spherical = True
        params.update(
            quantizer=cfg.coarse_quantizer,
            nlist=nlist,
            nprobe=min(cfg.default_nprobe, nlist),
            k_factor=cfg.refine_k_factor if kind == "ivf_pq_refine" else 1.0,
        )
        rng = np.random.default_rng(cfg.seed)
        n_train = min(n, nlist * cfg.train_points_per_list)
        sample = np.sort(rng.choice(n, n_train, replace=False)) if n_train < n else np.arange(n)
        start = time.perf_counter()
        index.train(augment(vectors[sample], params))
        ivf.clustering_index = None
        params["train_s"] = round(time.perf_counter() - start, 2)
        logger.info(
            "trained %s (nlist %d) on %d vectors in %.1fs",
            kind,
            nlist,
            n_train,
            params["train_s"],
        )
    return kind, index, params
