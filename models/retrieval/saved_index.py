"""The index over a matching model's own vectors, built and tuned once and saved beside
the model (`MODEL/index/NAME.*`), then loaded by every later batch job and the service.

A saved index carries a stamp of what it was built from (IDs, a sample of the vectors,
the index settings), so an index left by another model or config is rebuilt, never
reused; one process builds while the others wait on a file lock, then load it.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from features.settings import IndexConfig
from models.retrieval.index import EmbeddingIndex

log = logging.getLogger(__name__)


def _fingerprint(ids: np.ndarray, vectors: np.ndarray, cfg: IndexConfig) -> str:
    """What a saved index was built from: IDs, a sample of the vectors, the index config."""
    digest = hashlib.sha256(np.ascontiguousarray(ids).tobytes())
    digest.update(np.ascontiguousarray(vectors[:: max(1, len(vectors) // 4096)]).tobytes())
    digest.update(json.dumps(cfg.model_dump(exclude={"threads"}), sort_keys=True).encode())
    return digest.hexdigest()[:20]


@contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """One process builds a saved index; the others wait, then load it."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def model_index(
    folder: Path,
    name: str,
    ids: np.ndarray,
    vectors: np.ndarray,
    tune_queries: np.ndarray,
    cfg: IndexConfig,
) -> EmbeddingIndex:
    """The index over a model's own vectors: `folder/NAME.*` if it was built from these
    vectors under this config, else built, tuned to `target_recall + tune_margin` on
    `tune_queries`, and saved there (kept in memory only if `folder` is read-only)."""
    stamp = _fingerprint(ids, vectors, cfg)
    try:
        with _locked(folder):
            meta = folder / f"{name}.json"
            if meta.is_file() and json.loads(meta.read_text())["params"].get("source") == stamp:
                return EmbeddingIndex.load(folder, name, expect_dim=vectors.shape[1])
            index = _build_tuned(ids, vectors, tune_queries, cfg, stamp)
            index.save(folder, name)
            return index
    except OSError as exc:
        log.warning("cannot keep the %s index in %s (%s): building it in memory", name, folder, exc)
        return _build_tuned(ids, vectors, tune_queries, cfg, stamp)


def _build_tuned(
    ids: np.ndarray, vectors: np.ndarray, queries: np.ndarray, cfg: IndexConfig, stamp: str
) -> EmbeddingIndex:
    index = EmbeddingIndex.build_tuned(vectors, ids, cfg, queries)
    index.params["source"] = stamp
    return index
