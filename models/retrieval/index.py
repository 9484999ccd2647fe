"""EmbeddingIndex: FAISS inner-product search over one side's embeddings, keyed by int64 IDs.

One wrapper serves both directions (creator -> goods over product vectors, product ->
creators over creator vectors). The FAISS structure is chosen by catalog size
(models/retrieval/index_kinds.py):

| kind            | structure                                   | exact fallback                |
|-----------------|---------------------------------------------|-------------------------------|
| `flat`          | IndexFlatIP                                 | the index itself              |
| `ivf_flat`      | IndexIVFFlat                                | probe every list (exact)      |
| `ivf_sq8`       | IndexIVFScalarQuantizer, 8 bit              | probe every list (over codes) |
| `ivf_pq_refine` | IndexRefineFlat(IndexIVFPQFastScan, 4 bit)  | BLAS over the refine store    |

Inner FAISS labels are *positions* (append order, never reused); the wrapper maps them to
the user's int64 IDs, so callers never see a position. `add` appends without retraining
(the coarse quantizer and codebooks stay); `remove` takes items out of search at once.
`ivf_pq_refine` masks removed items with a selector (FAISS 1.15 fast-scan lists break on
`remove_ids`) and rebuilds its lists, still without training, once a fifth is removed.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from features.io import write_json
from features.settings import IndexConfig
from models.retrieval.index_kinds import (
    KINDS,
    DimensionMismatchError,
    RetrievalError,
    TuneRecord,
    UnknownIdError,
    ann_recall,
    as_ids,
    as_matrix,
    augment,
    bitmap,
    ivf_of,
    make_index,
    set_threads,
    squared_norms,
)

logger = logging.getLogger(__name__)

__all__ = [
    "DimensionMismatchError",
    "EmbeddingIndex",
    "RetrievalError",
    "TuneRecord",
    "UnknownIdError",
    "ann_recall",
]

FORMAT_VERSION = 1
COMPACT_DEAD_SHARE = 0.2


class EmbeddingIndex:
    """Top-k inner-product search over embeddings with int64 IDs; see the module doc."""

    def __init__(
        self, index: faiss.Index, kind: str, ids: np.ndarray, alive: np.ndarray, params: dict
    ) -> None:
        self._index, self.kind, self.params = index, kind, params
        self._ids, self._alive = ids, alive  # (stored,) by position
        self._lookup: tuple[np.ndarray, np.ndarray] | None = None

    @classmethod
    def build(cls, vectors: np.ndarray, ids: np.ndarray, cfg: IndexConfig) -> EmbeddingIndex:
        """Choose the kind for `len(vectors)`, train on a sample, add in batches."""
        set_threads(cfg.threads)
        vectors = as_matrix(vectors, None, "vectors")
        if len(vectors) == 0:
            raise RetrievalError("cannot build an index over zero vectors")
        ids = as_ids(ids, len(vectors))
        kind, index, params = make_index(vectors, cfg)
        out = cls(index, kind, np.empty(0, np.int64), np.empty(0, bool), params)
        start = time.perf_counter()
        out._append(vectors, ids, cfg.add_batch)
        params["add_s"] = round(time.perf_counter() - start, 2)
        logger.info("built %s index over %d vectors in %.1fs add", kind, len(ids), params["add_s"])
        return out

    @classmethod
    def build_tuned(
        cls, vectors: np.ndarray, ids: np.ndarray, cfg: IndexConfig, queries: np.ndarray
    ) -> EmbeddingIndex:
        """Built, then tuned to `target_recall + tune_margin` on `queries` (none: untuned).

        A PQ index whose codes need a re-rank deeper than `max_refine_k_factor` to reach
        the target cannot order its top k: their score error exceeds the gaps between
        neighbours (as for millions of unit-norm creator vectors packed around a few
        hundred tastes). It is rebuilt as IVF-Flat, which holds the same vectors its
        refine store held, and the reason is kept in `params["kind_reason"]`.
        """
        index = cls.build(vectors, ids, cfg)
        if index.kind == "flat" or not len(queries):
            return index
        queries = np.asarray(queries, np.float32)
        target, k = min(1.0, cfg.target_recall + cfg.tune_margin), min(cfg.tune_k, len(index))
        record = index.tune(queries, target, k)
        if index.kind != "ivf_pq_refine" or record.k_factor <= cfg.max_refine_k_factor:
            return index
        reason = (
            f"ivf_pq_refine needed a {record.k_factor:g}x re-rank for recall@{k} "
            f"{record.recall:.3f} (index.max_refine_k_factor {cfg.max_refine_k_factor:g})"
        )
        logger.info("%s: rebuilding as ivf_flat", reason)
        index = cls.build(vectors, ids, cfg.model_copy(update={"kind": "ivf_flat"}))
        index.tune(queries, target, k)
        index.params["kind_reason"] = reason
        return index

    def _append(self, vectors: np.ndarray, ids: np.ndarray, batch: int) -> None:
        start = len(self._ids)  # positions are never reused, even after removals
        for lo in range(0, len(vectors), batch):
            chunk = augment(vectors[lo : lo + batch], self.params)
            labels = np.arange(start + lo, start + lo + len(chunk), dtype=np.int64)
            if self.kind == "flat":
                self._index.add(chunk)  # IndexFlat numbers rows in order; remove() keeps that true
            elif self.kind == "ivf_pq_refine":
                # base and store apart: base labels must be store rows even after compaction
                ivf_of(self._index).add_with_ids(chunk, labels)
                store = faiss.downcast_index(self._index.refine_index)
                store.add(chunk)
                self._index.ntotal = store.ntotal
            else:
                self._index.add_with_ids(chunk, labels)
        self._ids = np.concatenate([self._ids, ids])
        self._alive = np.concatenate([self._alive, np.ones(len(ids), bool)])
        self._lookup = None

    def _consistent(self) -> bool:
        live = int(self._alive.sum())
        if self.kind == "flat":
            return self._index.ntotal == len(self._ids) == live
        if self.kind == "ivf_pq_refine":
            return ivf_of(self._index).ntotal == self._index.ntotal == len(self._ids)
        return self._index.ntotal == live

    # ------------------------------------------------------------- properties
    @property
    def dim(self) -> int:
        """Width of the embeddings it takes (the stored width may add a norm column)."""
        return int(self.params.get("dim", self._index.d))

    def __len__(self) -> int:
        return int(self._alive.sum())

    @property
    def ids(self) -> np.ndarray:
        """IDs currently searchable, in append order."""
        return self._ids[self._alive]

    @property
    def nbytes(self) -> int:
        """Approximate memory: the FAISS structure, its coarse centroids and the ID map."""
        d = int(self._index.d)
        codes = int(ivf_of(self._index).pq.M) // 2 if self.kind == "ivf_pq_refine" else 0
        per_item = {"flat": 4 * d, "ivf_flat": 4 * d + 8, "ivf_sq8": d + 8}.get(
            self.kind, 4 * d + codes + 8
        )
        return len(self._ids) * (per_item + 9) + int(self.params.get("nlist", 0)) * d * 4

    # ----------------------------------------------------------------- lookup
    def _find(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self._lookup is None:
            live = np.flatnonzero(self._alive)
            order = np.argsort(self._ids[live], kind="stable")
            self._lookup = (self._ids[live][order], live[order])
        keys, pos = self._lookup
        ids = np.asarray(ids, dtype=np.int64).ravel()
        if not len(keys):
            return np.zeros(len(ids), np.int64), np.zeros(len(ids), bool)
        at = np.minimum(np.searchsorted(keys, ids), len(keys) - 1)
        return pos[at], keys[at] == ids

    def positions(self, ids: np.ndarray) -> np.ndarray:
        """Positions of live IDs; UnknownIdError names the ones that are not there."""
        pos, found = self._find(ids)
        if not found.all():
            bad = np.asarray(ids, dtype=np.int64).ravel()[~found]
            raise UnknownIdError(f"{len(bad)} id(s) not in the index, e.g. {bad[:5].tolist()}")
        return pos

    def list_sizes(self) -> np.ndarray:
        """(nlist,) items per IVF inverted list (empty for `flat`): how balanced the cells
        stay as items are added and removed without retraining."""
        if self.kind == "flat":
            return np.empty(0, np.int64)
        invlists = ivf_of(self._index).invlists
        return np.array([invlists.list_size(i) for i in range(invlists.nlist)], np.int64)

    def contains(self, ids: np.ndarray) -> np.ndarray:
        """(n,) bool: which IDs are live in the index."""
        return self._find(ids)[1]

    # ----------------------------------------------------------------- search
    def _check_query(self, queries: np.ndarray, k: int) -> np.ndarray:
        queries = as_matrix(queries, self.dim, "queries")
        if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 1:
            raise RetrievalError(f"k must be a positive integer, got {k!r}")
        if k > len(self):
            raise RetrievalError(f"k={k} exceeds the {len(self)} items in the index")
        extra = int(self._index.d) - queries.shape[1]
        return np.pad(queries, ((0, 0), (0, extra))) if extra else queries

    def _to_ids(self, scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        empty = labels < 0
        ids = np.where(empty, -1, self._ids[np.where(empty, 0, labels)])
        return ids, np.where(empty, -np.inf, scores).astype(np.float32)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Approximate top-k: (ids, scores), both (n, k), best first.

        A row can end in -1 / -inf slots when the probed lists hold fewer than k items.
        """
        queries = self._check_query(queries, k)
        nprobe, k_factor = int(self.params["nprobe"]), float(self.params["k_factor"])
        if self.kind == "flat":
            return self._to_ids(*self._index.search(queries, k))
        masked = self.kind == "ivf_pq_refine" and not self._alive.all()
        sel, _bits = bitmap(self._alive) if masked else (None, None)
        params: Any = faiss.SearchParametersIVF(nprobe=nprobe, sel=sel)
        if self.kind != "ivf_pq_refine":
            return self._to_ids(*self._search_by_cell(queries, k, params))
        # the refine budget was tuned for k_tuned results (k_factor * k_tuned exact
        # re-ranks); an over-fetch beyond it re-ranks within the same budget, so its
        # first k_tuned keep the tuned recall and the rest is the policy's reserve
        k_tuned = int(self.params.get("tune", {}).get("k", k))
        if k > k_tuned:
            k_factor = max(1.0, k_factor * k_tuned / k)
        params = faiss.IndexRefineSearchParameters(k_factor=k_factor, base_index_params=params)
        # in order of the nearest list: the probed lists' codes and the re-ranked goods'
        # vectors are still in cache for the next query (20,000 creators over the 10M
        # goods, one thread: 4,291 -> 5,527 q/s, the same results)
        order, back = by_nearest_list(ivf_of(self._index).quantizer.search(queries, 1)[1])
        scores, labels = self._index.search(np.ascontiguousarray(queries[order]), k, params=params)
        return self._to_ids(scores[back], labels[back])

    def _search_by_cell(
        self, queries: np.ndarray, k: int, params: Any
    ) -> tuple[np.ndarray, np.ndarray]:
        """IVF search with the queries taken in order of their nearest list: queries that
        probe the same lists run one after another while those lists are in cache (the
        same results; 100,000 product queries over 3.5M creators: 7,567 -> 11,167 q/s)."""
        ivf = ivf_of(self._index)
        params.nprobe = min(int(params.nprobe), int(ivf.nlist))  # the width of `cells`
        dist, cells = ivf.quantizer.search(queries, params.nprobe)
        order, back = by_nearest_list(cells)
        x, cells, dist = (np.ascontiguousarray(a[order]) for a in (queries, cells, dist))
        n = len(x)
        scores, labels = np.empty((n, k), np.float32), np.empty((n, k), np.int64)
        # the C++ call: FAISS's Python wrapper of search_preassigned takes no parameters
        ivf.search_preassigned_c(
            n, faiss.swig_ptr(x), k, faiss.swig_ptr(cells), faiss.swig_ptr(dist),
            faiss.swig_ptr(scores), faiss.swig_ptr(labels), False, params,
        )  # fmt: skip
        return scores[back], labels[back]

    def exact(
        self, queries: np.ndarray, k: int, allowed_ids: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-k over all live items, or only over `allowed_ids` (a pre-filter).

        For `ivf_sq8` "exact" means exhaustive over the stored 8-bit codes.
        """
        mask = self._alive
        if allowed_ids is not None:
            allowed_ids = np.asarray(allowed_ids, dtype=np.int64)
            pos, found = self._find(allowed_ids)
            mask = np.zeros(len(self._ids), bool)
            mask[pos[found]] = True
            if not mask.any():
                raise RetrievalError("none of the allowed ids is in the index")
            k = min(k, int(mask.sum()))
        queries = self._check_query(queries, k)
        # only the refine store keeps removed rows; IVF lists and IndexFlat dropped them
        masked = allowed_ids is not None or (self.kind == "ivf_pq_refine" and not mask.all())
        sel, _bits = bitmap(mask) if masked else (None, None)
        if self.kind == "ivf_pq_refine":
            store = faiss.downcast_index(self._index.refine_index)
            params = faiss.SearchParameters(sel=sel) if sel is not None else None
            return self._to_ids(*store.search(queries, k, params=params))
        if self.kind == "flat":
            params = faiss.SearchParameters(sel=sel) if sel is not None else None
        else:  # every list probed: exact for flat storage
            params = faiss.SearchParametersIVF(nprobe=int(self.params["nlist"]), sel=sel)
        return self._to_ids(*self._index.search(queries, k, params=params))

    def tune(self, sample_queries: np.ndarray, target_recall: float, k: int) -> TuneRecord:
        """Smallest nprobe (then k_factor) whose recall@k against `exact` reaches the target.

        The choice and its measured recall are recorded in `params["tune"]` (and saved).
        """
        self._check_query(sample_queries, k)  # fail early; search() pads its own copy
        truth, _ = self.exact(sample_queries, k)
        n = len(sample_queries)
        if self.kind == "flat":
            record = TuneRecord(0, 1.0, 1.0, target_recall, k, n, True, 0.0)
            self.params["tune"] = asdict(record)
            return record
        nlist = int(self.params["nlist"])
        grid = sorted({min(2**i, nlist) for i in range(int(math.log2(nlist)) + 2)})
        factors = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0] if self.kind == "ivf_pq_refine" else [1.0]
        record = best = None
        for nprobe in grid:
            previous = -1.0
            for k_factor in factors:
                self.params.update(nprobe=nprobe, k_factor=k_factor)
                start = time.perf_counter()
                found, _ = self.search(sample_queries, k)
                qps = n / max(time.perf_counter() - start, 1e-9)
                recall = ann_recall(found, truth)
                record = TuneRecord(
                    nprobe, k_factor, round(recall, 5), target_recall, k, n,
                    recall >= target_recall, round(qps, 1),
                )  # fmt: skip
                logger.debug("tune %s", record)
                if best is None or record.recall > best.recall:
                    best = record
                # a deeper re-rank stops paying once the probed lists are the limit
                if record.reached or recall - previous < 0.002:
                    break
                previous = recall
            if record is not None and record.reached:
                break
        assert record is not None and best is not None
        if not record.reached:
            logger.warning("tune: best recall %.4f < target %.3f", best.recall, target_recall)
            record = best
        self.params.update(nprobe=record.nprobe, k_factor=record.k_factor, tune=asdict(record))
        logger.info("tuned %s: %s", self.kind, record)
        return record

    # ---------------------------------------------------------------- updates
    def add(self, vectors: np.ndarray, ids: np.ndarray, batch: int = 1_000_000) -> None:
        """Append new items with their IDs; the trained structure is reused as is."""
        vectors = as_matrix(vectors, self.dim, "vectors")
        ids = as_ids(ids, len(vectors))
        clash = self.contains(ids)
        if clash.any():
            raise RetrievalError(
                f"{int(clash.sum())} id(s) already in the index, e.g. {ids[clash][:5].tolist()}"
            )
        norm_max = self.params.get("norm_max")
        longest = float(np.sqrt(squared_norms(vectors).max())) if len(vectors) else 0.0
        if norm_max and longest > norm_max * 1.001:
            # the norm column clips at 0: such items are still found, but cells fit them less
            logger.warning(
                "added vectors reach norm %.3g, beyond the %.3g seen at build; "
                "rebuild the index if many do",
                longest,
                norm_max,
            )
        self._append(vectors, ids, batch)

    def remove(self, ids: np.ndarray) -> int:
        """Take items (e.g. delisted goods) out of search at once; returns how many."""
        pos = self.positions(np.unique(np.asarray(ids, dtype=np.int64)))
        if self.kind == "flat":  # IndexFlat compacts and keeps order: mirror it on the ID map
            self._index.remove_ids(pos)
            keep = np.ones(len(self._ids), bool)
            keep[pos] = False
            self._ids, self._alive = self._ids[keep], self._alive[keep]
        elif self.kind == "ivf_pq_refine":
            self._alive[pos] = False
            if 1.0 - self._alive.mean() > COMPACT_DEAD_SHARE:
                self.compact()
        else:
            self._index.remove_ids(pos)
            self._alive[pos] = False
        self._lookup = None
        return len(pos)

    def compact(self) -> None:
        """ivf_pq_refine: drop removed vectors and rebuild the lists (no training)."""
        if self.kind != "ivf_pq_refine" or self._alive.all():
            return
        store = faiss.downcast_index(self._index.refine_index)
        width = int(store.d)
        xb = faiss.rev_swig_ptr(store.get_xb(), store.ntotal * width).reshape(-1, width)
        live = np.flatnonzero(self._alive)
        vectors, ids = xb[live, : self.dim].copy(), self._ids[live]  # the raw embeddings
        store.reset()
        ivf_of(self._index).reset()
        self._index.ntotal = 0
        self._ids, self._alive = np.empty(0, np.int64), np.empty(0, bool)
        self._append(vectors, ids, 1_000_000)
        logger.info("compacted %s index to %d items", self.kind, len(ids))

    # ------------------------------------------------------------ persistence
    def save(self, folder: Path, name: str = "index") -> Path:
        """Write NAME.faiss, NAME.ids.npy and NAME.json (kind, params, dim, count)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{name}.faiss.tmp"
        faiss.write_index(self._index, str(tmp))
        os.replace(tmp, folder / f"{name}.faiss")
        np.save(folder / f"{name}.ids.npy", np.stack([self._ids, self._alive.astype(np.int64)]))
        meta = {
            "format": FORMAT_VERSION,
            "kind": self.kind,
            "dim": self.dim,
            "count": len(self),
            "stored": len(self._ids),
            "params": self.params,
            "faiss": faiss.__version__,
        }
        return write_json(meta, folder / f"{name}.json")

    @classmethod
    def load(
        cls,
        folder: Path,
        name: str = "index",
        threads: int | None = None,
        expect_dim: int | None = None,
    ) -> EmbeddingIndex:
        """Rebuild what `save` wrote; `expect_dim` guards against a model of another width."""
        folder = Path(folder)
        paths = [folder / f"{name}{suffix}" for suffix in (".json", ".faiss", ".ids.npy")]
        missing = [str(p) for p in paths if not p.is_file()]
        if missing:
            raise RetrievalError(f"index files missing: {', '.join(missing)}")
        meta = json.loads(paths[0].read_text())
        if meta.get("kind") not in KINDS:
            raise RetrievalError(f"{paths[0]}: unknown index kind {meta.get('kind')!r}")
        if threads is not None:
            set_threads(threads)
        index = faiss.read_index(str(paths[1]))
        stacked = np.load(paths[2])
        out = cls(index, meta["kind"], stacked[0].copy(), stacked[1].astype(bool), meta["params"])
        if index.d != meta["params"].get("stored_dim", meta["dim"]) or not out._consistent():
            raise RetrievalError(f"{folder}/{name}: index, ids and metadata disagree")
        if expect_dim is not None and expect_dim != out.dim:
            raise DimensionMismatchError(
                f"the model embeds in dim {expect_dim}, the index holds dim {out.dim}"
            )
        return out


def by_nearest_list(cells: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(order, back): the queries grouped by their nearest list (`cells[:, 0]`, from the
    coarse quantizer), and the permutation that puts results taken in that order back."""
    order = np.argsort(cells[:, 0], kind="stable")
    back = np.empty_like(order)
    back[order] = np.arange(len(order))
    return order, back
