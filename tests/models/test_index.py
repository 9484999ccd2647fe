"""EmbeddingIndex: ANN against exact search, add/remove without retraining, save/load, errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from features.settings import IndexConfig, load_settings
from models.retrieval.index import (
    DimensionMismatchError,
    EmbeddingIndex,
    RetrievalError,
    UnknownIdError,
    ann_recall,
)
from models.retrieval.index_kinds import bitmap, choose_kind, choose_nlist, ivf_of

DIM = 16
IVF_KINDS = ["ivf_flat", "ivf_sq8", "ivf_pq_refine"]


def _clustered(n: int, seed: int, centers: int = 40) -> np.ndarray:
    """Vectors around a few directions with varying norms (what a trained model gives)."""
    rng = np.random.default_rng(seed)
    middle = np.random.default_rng(99).standard_normal((centers, DIM))
    x = middle[rng.integers(0, centers, n)] + 0.5 * rng.standard_normal((n, DIM))
    return (x * rng.lognormal(0.0, 0.4, (n, 1))).astype(np.float32)


def _random(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)


def _cfg(kind: str, **kw) -> IndexConfig:
    return IndexConfig(kind=kind, min_nlist=16, max_nlist=64, threads=1, **kw)


@pytest.fixture(scope="module")
def items() -> tuple[np.ndarray, np.ndarray]:
    vectors = _clustered(6000, seed=1)
    ids = np.arange(len(vectors), dtype=np.int64) * 7 + 1000  # sparse, not positions
    return vectors, ids


@pytest.fixture(scope="module")
def queries() -> np.ndarray:
    return _clustered(300, seed=2)


def _brute_force(vectors: np.ndarray, ids: np.ndarray, q: np.ndarray, k: int) -> np.ndarray:
    scores = q @ vectors.T
    return ids[np.argsort(-scores, axis=1)[:, :k]]


@pytest.mark.parametrize("kind", ["flat", *IVF_KINDS])
def test_tuned_ann_reaches_recall_against_exact(kind, items, queries) -> None:
    vectors, ids = items
    index = EmbeddingIndex.build(vectors, ids, _cfg(kind))
    assert index.kind == kind and len(index) == len(ids)
    record = index.tune(queries[:150], target_recall=0.95, k=20)
    assert record.reached and record.recall >= 0.95
    assert index.params["tune"]["nprobe"] == record.nprobe
    held_out = queries[150:]
    found, scores = index.search(held_out, 20)
    truth, _ = index.exact(held_out, 20)
    assert ann_recall(found, truth) >= 0.9  # held-out queries, tuned on others
    assert (np.diff(scores, axis=1) <= 1e-5).all()  # best first
    # exact search is exact (flat storage) or near it (8-bit codes)
    brute = _brute_force(vectors, ids, held_out, 20)
    assert ann_recall(truth, brute) >= (0.97 if kind == "ivf_sq8" else 0.999)
    if kind != "flat":
        assert 1 <= record.nprobe < index.params["nlist"]  # ANN, not an exhaustive scan


def test_over_fetch_keeps_the_tuned_recall_on_top(items, queries) -> None:
    """The policy fetches 2k: the first k of that fetch keep the recall tuned at k, and
    the refine store re-ranks no more candidates than the tuned budget."""
    vectors, ids = items
    index = EmbeddingIndex.build(vectors, ids, _cfg("ivf_pq_refine", refine_k_factor=2.0))
    record = index.tune(queries[:150], target_recall=0.95, k=20)
    held_out = queries[150:]
    truth, _ = index.exact(held_out, 20)
    fetched, _ = index.search(held_out, 40)
    assert ann_recall(fetched[:, :20], truth) >= 0.9
    tight, _ = index.search(held_out, 20)
    # k_factor * 20 candidates re-ranked either way: the tuned k's list is unchanged
    assert record.k_factor >= 1 and (fetched[:, :20] == tight).mean() > 0.95


def test_ann_on_uniform_random_vectors() -> None:
    """No cluster structure to exploit: tune must still find a probe count that works."""
    vectors, q = _random(4000, 3), _random(200, 4)
    index = EmbeddingIndex.build(vectors, np.arange(4000), _cfg("ivf_flat"))
    record = index.tune(q[:100], 0.9, 10)
    found, _ = index.search(q[100:], 10)
    assert record.reached
    assert ann_recall(found, _brute_force(vectors, np.arange(4000), q[100:], 10)) >= 0.85


def test_tune_keeps_the_best_setting_when_the_target_is_out_of_reach(items, queries) -> None:
    vectors, ids = items
    index = EmbeddingIndex.build(vectors, ids, _cfg("ivf_pq_refine"))
    record = index.tune(queries[:100], target_recall=1.5, k=20)  # unreachable on purpose
    assert not record.reached and record.recall >= 0.95
    assert (index.params["nprobe"], index.params["k_factor"]) == (record.nprobe, record.k_factor)
    assert index.params["tune"]["recall"] == record.recall


def test_more_probes_more_recall(items, queries) -> None:
    vectors, ids = items
    index = EmbeddingIndex.build(vectors, ids, _cfg("ivf_flat"))
    truth, _ = index.exact(queries, 50)
    recalls = []
    for nprobe in (1, 4, 16, 64):
        index.params["nprobe"] = nprobe
        recalls.append(ann_recall(index.search(queries, 50)[0], truth))
    assert recalls == sorted(recalls) and recalls[0] < 0.9 and recalls[-1] == pytest.approx(1.0)


@pytest.mark.parametrize("kind", ["flat", *IVF_KINDS])
def test_add_without_retraining(kind, items, queries) -> None:
    vectors, ids = items
    index = EmbeddingIndex.build(vectors[:5000], ids[:5000], _cfg(kind))
    index.params.update(nprobe=index.params["nlist"], k_factor=8.0)  # exhaustive
    trained = index.params.get("train_s")
    index.add(vectors[5000:], ids[5000:])
    assert len(index) == 6000 and index.params.get("train_s") == trained
    assert index.contains(ids[5000:]).all()
    found, _ = index.search(queries, 10)
    expected = _brute_force(vectors, ids, queries, 10)
    lossy = {"ivf_sq8": 0.95, "ivf_pq_refine": 0.97}  # codes, even with every list probed
    assert ann_recall(found, expected) >= lossy.get(kind, 0.99)
    new_share = np.isin(expected, ids[5000:]).mean()
    assert new_share > 0.1 and np.isin(found, ids[5000:]).mean() == pytest.approx(new_share, 0.1)
    with pytest.raises(RetrievalError, match="already in the index"):
        index.add(vectors[:2], ids[:2])
    with pytest.raises(DimensionMismatchError):
        index.add(vectors[:2, :8], np.array([1, 2]))


@pytest.mark.parametrize("kind", ["flat", *IVF_KINDS])
def test_remove_takes_items_out_at_once(kind, items, queries) -> None:
    vectors, ids = items
    index = EmbeddingIndex.build(vectors, ids, _cfg(kind))
    before, _ = index.exact(queries, 10)
    delisted = np.unique(before[:, :3])  # the best goods of many queries
    assert index.remove(delisted) == len(delisted)
    assert len(index) == len(ids) - len(delisted)
    assert not index.contains(delisted).any()
    for found, _ in (index.search(queries, 10), index.exact(queries, 10)):
        assert not np.isin(found, delisted).any()
    keep = ~np.isin(ids, delisted)
    truth = _brute_force(vectors[keep], ids[keep], queries, 10)
    index.params.update(nprobe=index.params["nlist"], k_factor=8.0)
    assert ann_recall(index.search(queries, 10)[0], truth) >= 0.95
    with pytest.raises(UnknownIdError):
        index.remove(delisted[:1])  # already gone
    # a removed ID can come back (relisted), with its new vector
    index.add(vectors[:1] * 0 + vectors[keep][:1], delisted[:1])
    assert index.contains(delisted[:1]).all()


def test_pq_refine_compacts_after_many_removals(items, queries) -> None:
    vectors, ids = items
    index = EmbeddingIndex.build(vectors, ids, _cfg("ivf_pq_refine"))
    index.params.update(nprobe=index.params["nlist"], k_factor=8.0)
    gone = ids[: len(ids) // 3]  # past the 20% threshold: lists rebuilt, no training
    index.remove(gone)
    assert index._alive.all() and len(index) == len(ids) - len(gone)  # compacted
    found, _ = index.search(queries, 10)
    assert not np.isin(found, gone).any()
    truth = _brute_force(vectors[len(gone) :], ids[len(gone) :], queries, 10)
    assert ann_recall(found, truth) >= 0.95


@pytest.mark.parametrize("kind", ["flat", "ivf_pq_refine"])
def test_save_load_round_trip(kind, items, queries, tmp_path: Path) -> None:
    vectors, ids = items
    index = EmbeddingIndex.build(vectors, ids, _cfg(kind))
    index.tune(queries[:100], 0.95, 10)
    index.remove(ids[:10])
    index.save(tmp_path, "products")
    loaded = EmbeddingIndex.load(tmp_path, "products", threads=1, expect_dim=DIM)
    assert loaded.kind == kind and len(loaded) == len(index)
    assert loaded.params["tune"] == index.params["tune"]
    a, sa = index.search(queries, 10)
    b, sb = loaded.search(queries, 10)
    assert (a == b).all() and np.allclose(sa, sb)
    with pytest.raises(DimensionMismatchError, match="dim 32"):
        EmbeddingIndex.load(tmp_path, "products", expect_dim=32)
    with pytest.raises(RetrievalError, match="missing"):
        EmbeddingIndex.load(tmp_path, "creators")


def test_exact_restricted_to_allowed_ids(items, queries) -> None:
    vectors, ids = items
    index = EmbeddingIndex.build(vectors, ids, _cfg("ivf_flat"))
    allowed = ids[::50]
    found, _ = index.exact(queries, 10, allowed_ids=allowed)
    assert np.isin(found, allowed).all()
    assert (found == _brute_force(vectors[::50], allowed, queries, 10)).mean() > 0.99
    few, scores = index.exact(queries[:2], 10, allowed_ids=allowed[:3])  # fewer than k allowed
    assert few.shape == (2, 3) and np.isfinite(scores).all()
    with pytest.raises(RetrievalError, match="none of the allowed"):
        index.exact(queries, 10, allowed_ids=np.array([-5]))


def test_bad_input_is_a_clear_error(items) -> None:
    vectors, ids = items
    index = EmbeddingIndex.build(vectors[:500], ids[:500], _cfg("flat"))
    q = vectors[:2]
    for k in (0, -1, 2.5, True):
        with pytest.raises(RetrievalError, match="positive integer"):
            index.search(q, k)
    with pytest.raises(RetrievalError, match="exceeds the 500 items"):
        index.search(q, 501)
    with pytest.raises(DimensionMismatchError, match="dim 8"):
        index.search(vectors[:2, :8], 5)
    with pytest.raises(DimensionMismatchError, match="2-D"):
        index.search(vectors[0], 5)
    with pytest.raises(RetrievalError, match="NaN"):
        index.search(np.full((1, DIM), np.nan, np.float32), 5)
    with pytest.raises(UnknownIdError, match="not in the index"):
        index.positions(np.array([-1, ids[0]]))
    with pytest.raises(RetrievalError, match="duplicate"):
        EmbeddingIndex.build(vectors[:3], np.array([1, 1, 2]), _cfg("flat"))
    with pytest.raises(RetrievalError, match="zero vectors"):
        EmbeddingIndex.build(np.empty((0, DIM), np.float32), np.empty(0, np.int64), _cfg("flat"))


def test_kind_and_nlist_follow_catalog_size() -> None:
    cfg = IndexConfig()
    assert choose_kind(10_000, cfg) == "flat"
    assert choose_kind(500_000, cfg) == "ivf_flat"
    assert choose_kind(10_000_000, cfg) == "ivf_pq_refine"
    assert choose_kind(10, IndexConfig(kind="ivf_sq8")) == "ivf_sq8"
    assert choose_nlist(1_000_000, cfg) == 4096 and choose_nlist(200_000, cfg) == 2048
    assert choose_nlist(2000, cfg) == 2000 // 39  # enough training points per list


def test_ann_recall_counts_overlap() -> None:
    truth = np.array([[1, 2, 3, 4], [5, 6, 7, 8]])
    found = np.array([[4, 3, 9, -1], [5, 6, 7, 8]])
    assert ann_recall(found, truth) == pytest.approx((0.5 + 1.0) / 2)


def test_bench_index_command_on_tiny(tmp_path: Path) -> None:
    """`haowu bench index` end to end at the tiny scale, with an IVF index to tune."""
    import json

    from typer.testing import CliRunner

    from cli import app

    out = tmp_path / "bench.json"
    sets = ["index.kind=ivf_flat", "index.tune_queries=200", "index.min_nlist=16"]
    result = CliRunner().invoke(
        app,
        ["bench", "index", "--preset", "tiny", "--queries", "200", "--k", "50",
         "--out", str(out), *sum((["--set", s] for s in sets), [])],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    m = json.loads(out.read_text())
    for side in ("products", "creators"):
        assert m[f"{side}.kind"] == "ivf_flat" and m[f"{side}.recall@50"] >= 0.9
        assert m[f"{side}.nprobe"] < m[f"{side}.nlist"] and m[f"{side}.build_cpu_s"] > 0
    assert m["policy.full_lists_share"] == 1.0 and 0 < m["policy.share_of_query_time"] < 1
    assert m["products.items"] == load_settings("tiny").data.n_products


def test_refine_search_by_nearest_list_equals_faiss_order(items, queries) -> None:
    """The re-ranked index takes its queries in order of their nearest list too: every
    row is the one FAISS gives in the queries' own order, removed items left out."""
    import faiss

    vectors, ids = items
    index = EmbeddingIndex.build(vectors, ids, _cfg("ivf_pq_refine", refine_k_factor=2.0))
    index.params["nprobe"] = 4
    index.remove(ids[::5])
    found, scores = index.search(queries, 30)
    padded = np.pad(queries, ((0, 0), (0, index._index.d - DIM)))
    sel, _bits = bitmap(index._alive)
    params = faiss.IndexRefineSearchParameters(
        k_factor=2.0, base_index_params=faiss.SearchParametersIVF(nprobe=4, sel=sel)
    )
    want_ids, want = index._to_ids(*index._index.search(padded, 30, params=params))
    cells = ivf_of(index._index).quantizer.search(padded, 1)[1][:, 0]
    assert (np.diff(cells) < 0).any()  # the queries' own order is not the lists' order
    np.testing.assert_array_equal(found, want_ids)
    np.testing.assert_array_equal(scores, want)
    assert not np.isin(found, ids[::5]).any()


@pytest.mark.parametrize("kind", ["ivf_flat", "ivf_sq8"])
def test_search_by_nearest_list_equals_faiss_order(kind, items, queries) -> None:
    """Queries are taken in order of their nearest list for speed: every row must be the
    one FAISS gives for the queries in their own order, removed items still left out."""
    import faiss

    vectors, ids = items
    index = EmbeddingIndex.build(vectors, ids, _cfg(kind))
    index.params["nprobe"] = 4
    index.remove(ids[::5])
    found, scores = index.search(queries, 30)
    padded = np.pad(queries, ((0, 0), (0, index._index.d - DIM)))
    params = faiss.SearchParametersIVF(nprobe=4)
    want_scores, want_labels = index._index.search(padded, 30, params=params)
    want_ids, want = index._to_ids(want_scores, want_labels)
    np.testing.assert_array_equal(found, want_ids)
    np.testing.assert_array_equal(scores, want)
    assert not np.isin(found, ids[::5]).any()
    # one list probed: rows run short, padded with -1 in the query's own row
    index.params["nprobe"] = 1
    short, _ = index.search(queries, 400)
    base_scores, base_labels = index._index.search(
        padded, 400, params=faiss.SearchParametersIVF(nprobe=1)
    )
    np.testing.assert_array_equal(short, index._to_ids(base_scores, base_labels)[0])
    assert (short == -1).any()


def _unit_tight(n: int, seed: int, spread: float = 0.1) -> np.ndarray:
    """Unit vectors packed around 8 directions: scores of a query's top k lie closer
    together than 4-bit PQ codes can tell apart (creator vectors at scale)."""
    rng = np.random.default_rng(seed)
    middle = np.random.default_rng(5).standard_normal((8, DIM))
    middle /= np.linalg.norm(middle, axis=1, keepdims=True)
    x = middle[rng.integers(0, 8, n)] + spread * rng.standard_normal((n, DIM))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_pq_needing_a_deep_rerank_is_rebuilt_as_ivf_flat(tmp_path: Path) -> None:
    vectors, queries = _unit_tight(20000, seed=1), _unit_tight(400, seed=2) * 1.3
    cfg = _cfg("auto", flat_max_items=1000, ivf_flat_max_items=10000, tune_k=20)
    assert choose_kind(len(vectors), cfg) == "ivf_pq_refine"
    pq = EmbeddingIndex.build(vectors, np.arange(20000), cfg)
    assert pq.tune(queries[:150], 0.96, 20).k_factor > cfg.max_refine_k_factor

    index = EmbeddingIndex.build_tuned(vectors, np.arange(20000), cfg, queries[:150])
    assert index.kind == "ivf_flat"
    assert "ivf_pq_refine needed a 32x re-rank" in index.params["kind_reason"]
    found, _ = index.search(queries[150:], 20)
    assert ann_recall(found, _brute_force(vectors, np.arange(20000), queries[150:], 20)) >= 0.95
    index.save(tmp_path, "creators")
    assert (
        EmbeddingIndex.load(tmp_path, "creators").params["kind_reason"]
        == index.params["kind_reason"]
    )
    # a looser bound keeps the PQ index
    kept = EmbeddingIndex.build_tuned(
        vectors, np.arange(20000), cfg.model_copy(update={"max_refine_k_factor": 32.0}),
        queries[:150],
    )  # fmt: skip
    assert kept.kind == "ivf_pq_refine" and "kind_reason" not in kept.params


def test_pq_with_a_shallow_rerank_stays_pq(items, queries) -> None:
    vectors, ids = items
    cfg = _cfg("auto", flat_max_items=1000, ivf_flat_max_items=2000, tune_k=20)
    index = EmbeddingIndex.build_tuned(vectors, ids, cfg, queries[:150])
    assert index.kind == "ivf_pq_refine"
    assert index.params["tune"]["k_factor"] <= cfg.max_refine_k_factor


def test_search_with_nprobe_past_nlist_probes_every_list(items, queries) -> None:
    vectors, ids = items
    index = EmbeddingIndex.build(vectors, ids, _cfg("ivf_flat"))
    index.params["nprobe"] = 10_000  # more lists than there are: every list, exact
    np.testing.assert_array_equal(index.search(queries, 10)[0], index.exact(queries, 10)[0])
    assert index.search(queries[:0], 10)[0].shape == (0, 10)


@pytest.mark.parametrize("kind", IVF_KINDS)
def test_vectors_of_one_norm_get_no_norm_column(kind, items, queries) -> None:
    unit = _unit_tight(3000, seed=3, spread=0.5)
    index = EmbeddingIndex.build(unit, np.arange(3000), _cfg(kind))
    assert index.params["stored_dim"] == DIM and index.params["norm_max"] is None
    found, _ = index.search(_unit_tight(50, seed=4, spread=0.5), 10)
    assert (found >= 0).all()
    # varying norms keep it: IVF cells then group items by norm as well as direction
    vectors, ids = items
    varied = EmbeddingIndex.build(vectors, ids, _cfg(kind))
    assert varied.params["stored_dim"] == DIM + 2 and varied.params["norm_max"] > 0
