"""Why the creators index needed a 32x re-rank, and what searches it faster: the numbers
behind the README's "When PQ codes cannot order the top k".

    python notebooks/creators_index_study.py [N_CREATORS] [KIND ...]
    python notebooks/creators_index_study.py 3500000                  # the full world, ~15 min
    python notebooks/creators_index_study.py 100000 ivf_pq_refine     # a quick look

Over the `full` preset's synthetic world (`haowu bench batch`'s vectors): N creators as
items and product vectors as queries, k=100, 2 threads. It prints the geometry (cosine
span of a good's top 100 creators, the gap between neighbours), then for each index kind
the tuned nprobe / re-rank, recall@100 against exact search on 1,000 held-out queries,
the codes' median score error on the exact top 100, and q/s on 100,000 queries in calls
of 5,000, 20,000 and 100,000, each in their own order and by nearest list.
IVF-Flat and IVF-SQ8 now order every call by nearest list themselves, so their two
columns agree; the README's own-order figures were measured before they did.
"""

from __future__ import annotations

import json
import sys
import time

import faiss
import numpy as np

from features.settings import load_settings
from models.retrieval.index import EmbeddingIndex
from models.retrieval.index_kinds import ann_recall, set_threads
from models.retrieval.synthetic import EmbeddingWorld

K = 100
CALLS = (5_000, 20_000, 100_000)


def code_error(
    index: EmbeddingIndex, queries: np.ndarray, truth: np.ndarray, cosine: np.ndarray
) -> float | None:
    """Median |score from the stored code - exact score| (in cosine) over 50 queries'
    exact top k: how far the codes misplace the creators that matter."""
    if index.kind == "ivf_flat":
        return None
    ivf = faiss.extract_index_ivf(index._index)
    ivf.make_direct_map()
    rows = truth[:50].ravel()
    codes = np.stack([ivf.reconstruct(int(i)) for i in rows])[:, : queries.shape[1]]
    q = np.repeat(queries[:50], K, axis=0)
    norms = np.repeat(np.linalg.norm(queries[:50], axis=1), K)
    return float(np.median(np.abs((codes * q).sum(1) / norms - cosine[:50].ravel())))


def speeds(index: EmbeddingIndex, queries: np.ndarray) -> dict[str, int]:
    """q/s per call size, queries in their own order and sorted by nearest list."""
    ivf = faiss.extract_index_ivf(index._index)
    padded = np.pad(queries, ((0, 0), (0, index._index.d - queries.shape[1])))
    out = {}
    for call in CALLS:
        for by_list in (False, True):
            start = time.perf_counter()
            for lo in range(0, len(queries), call):
                part = queries[lo : lo + call]
                if by_list:
                    _, cell = ivf.quantizer.search(padded[lo : lo + call], 1)
                    part = part[np.argsort(cell[:, 0], kind="stable")]
                index.search(part, K)
            seconds = time.perf_counter() - start
            out[f"{call}{' by list' if by_list else ''}"] = round(len(queries) / seconds)
    return out


def main(n: int, kinds: list[str]) -> None:
    cfg = load_settings("full", overrides=["index.threads=2"])
    data = cfg.data
    set_threads(2)
    world = EmbeddingWorld.make(
        data.n_categories_l1, data.n_categories_l2, data.n_leaf_categories, seed=data.seed
    )
    creators, _ = world.creators(n, seed=data.seed + 2)
    tune_q = world.products(cfg.index.tune_queries, seed=data.seed + 8)[0]
    test_q = world.products(1000, seed=data.seed + 9)[0]
    speed_q = world.products(100_000, seed=data.seed + 10)[0]
    top, truth = faiss.knn(test_q, creators, K, metric=faiss.METRIC_INNER_PRODUCT)
    cosine = top / np.linalg.norm(test_q, axis=1)[:, None]  # creators are unit vectors
    geometry = {
        "creators": n,
        "creator_norms": [float(np.linalg.norm(creators[:200_000], axis=1).min()),
                          float(np.linalg.norm(creators[:200_000], axis=1).max())],
        "top100_cosine_span_median": float(np.median(cosine[:, 0] - cosine[:, -1])),
        "neighbour_gap_median": float(np.median(np.diff(-cosine, axis=1))),
    }  # fmt: skip
    print(json.dumps(geometry), flush=True)
    for kind in kinds:
        icfg = cfg.index.model_copy(update={"kind": kind})
        start = time.perf_counter()
        index = EmbeddingIndex.build(creators, np.arange(n, dtype=np.int64), icfg)
        record = index.tune(tune_q, icfg.target_recall + icfg.tune_margin, K)
        found, _ = index.search(test_q, K)
        print(json.dumps({
            "kind": kind, "nlist": index.params["nlist"], "nprobe": record.nprobe,
            "re-rank": record.k_factor, "recall@100": round(ann_recall(found, truth), 4),
            "code_error_median": code_error(index, test_q, truth, cosine),
            "build_and_tune_s": round(time.perf_counter() - start, 1),
            "mb": round(index.nbytes / 2**20), "q/s": speeds(index, speed_q),
        }), flush=True)  # fmt: skip


if __name__ == "__main__":
    main(
        int(sys.argv[1]) if len(sys.argv) > 1 else 3_500_000,
        sys.argv[2:] or ["ivf_pq_refine", "ivf_sq8", "ivf_flat"],
    )
