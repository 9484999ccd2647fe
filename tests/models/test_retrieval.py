"""GoodsRetriever (ANN + policy, refetch and exact fallback) and creators_for_products."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from features.settings import IndexConfig, PolicyConfig
from models.retrieval.catalog import RequestFilters
from models.retrieval.directions import GoodsRetriever, creators_for_products
from models.retrieval.index import (
    DimensionMismatchError,
    EmbeddingIndex,
    RetrievalError,
    ann_recall,
)
from models.retrieval.synthetic import EmbeddingWorld, synthetic_catalog

K = 30
N_GOODS = 12_000


@pytest.fixture(scope="module")
def world():
    world = EmbeddingWorld.make(6, 20, 60, dim=32, seed=0)
    goods, leaves = world.products(N_GOODS, seed=1)
    creators, _ = world.creators(400, seed=2)
    catalog = synthetic_catalog(world, leaves, [0.1, 0.25, 0.25, 0.2, 0.12, 0.08], 0.05, seed=3)
    ann = EmbeddingIndex.build(goods, catalog.product_ids, IndexConfig(kind="ivf_flat", threads=1))
    ann.tune(creators[:100], 0.96, 100)
    exact = EmbeddingIndex.build(goods, catalog.product_ids, IndexConfig(kind="flat", threads=1))
    return goods, creators[100:], catalog, ann, exact


def _overlap(a: np.ndarray, b: np.ndarray) -> float:
    return ann_recall(a, b)


def test_ann_lists_match_exact_lists_under_the_policy(world) -> None:
    _, creators, catalog, ann, exact = world
    cfg = PolicyConfig()
    got = GoodsRetriever(ann, catalog, cfg).recommend(creators, K)
    want = GoodsRetriever(exact, catalog, cfg).recommend(creators, K)
    assert (got.lengths == K).all() and (want.lengths == K).all()
    assert _overlap(got.product_ids, want.product_ids) >= 0.9
    pos, _ = catalog.positions(got.product_ids)
    assert (catalog.tier[pos] > 0).all() and not catalog.flagged[pos].any()


def test_goods_already_promoted_never_come_back_and_lists_stay_full(world) -> None:
    _, creators, catalog, ann, _ = world
    retriever = GoodsRetriever(ann, catalog, PolicyConfig())
    first = retriever.recommend(creators, K)
    # every creator promoted its 300 best-scored goods: the ANN depth must grow
    top, _ = ann.exact(creators, 300)
    pos, _ = catalog.positions(top)
    rows = np.repeat(np.arange(len(creators)), 300)
    seen = sp.csr_matrix((np.ones(rows.size), (rows, pos.ravel())), shape=(len(creators), N_GOODS))
    lists = retriever.recommend(creators, K, seen=seen)
    assert (lists.lengths == K).all()
    for i in range(len(creators)):
        assert not set(lists.product_ids[i]) & set(top[i])
    assert not (lists.product_ids == first.product_ids).all()


@pytest.mark.parametrize(
    "filters",
    [
        RequestFilters(category_l3=(7,)),  # a few hundred goods: straight to exact search
        RequestFilters(category_l1=(2,), min_tier=3),
        RequestFilters(price_bands=(0, 1), min_commission=0.2),
    ],
)
def test_filtered_lists_are_full_and_obey_the_filter(world, filters) -> None:
    _, creators, catalog, ann, exact = world
    cfg = PolicyConfig()
    lists = GoodsRetriever(ann, catalog, cfg).recommend(creators, K, filters=filters)
    eligible = catalog.eligible(filters, (0,), True)
    assert eligible.sum() >= K and (lists.lengths == K).all()
    pos, _ = catalog.positions(lists.product_ids)
    assert eligible[pos].all()
    want = GoodsRetriever(exact, catalog, cfg).recommend(creators, K, filters=filters)
    assert _overlap(lists.product_ids, want.product_ids) >= 0.9


def test_short_and_empty_lists_carry_a_reason(world) -> None:
    _, creators, catalog, ann, _ = world
    retriever = GoodsRetriever(ann, catalog, PolicyConfig())
    nothing = retriever.recommend(creators[:3], K, filters=RequestFilters(category_l1=(99,)))
    assert (nothing.lengths == 0).all() and all("no goods match" in r for r in nothing.reasons)
    few_ids = catalog.product_ids[catalog.eligible(None, (0,), True)][:7]
    narrow = RequestFilters(category_l3=tuple(np.unique(catalog.category_l3[few_ids[:1]])))
    eligible = int(catalog.eligible(narrow, (0,), True).sum())
    big_k = eligible + 5
    lists = retriever.recommend(creators[:3], big_k, filters=narrow)
    assert (lists.lengths == eligible).all()
    assert all(f"only {eligible} goods match" in r for r in lists.reasons)


def test_added_goods_are_found_and_removed_goods_are_not(world) -> None:
    goods, creators, catalog, _, _ = world
    index = EmbeddingIndex.build(
        goods[:10_000], catalog.product_ids[:10_000], IndexConfig(kind="ivf_flat", threads=1)
    )
    index.tune(creators[:50], 0.95, 50)
    retriever = GoodsRetriever(index, catalog, PolicyConfig())
    before = retriever.recommend(creators, K)
    assert not np.isin(before.product_ids, catalog.product_ids[10_000:]).any()
    index.add(goods[10_000:], catalog.product_ids[10_000:])  # new goods, no retraining
    after = retriever.recommend(creators, K)
    assert np.isin(after.product_ids, catalog.product_ids[10_000:]).any()
    delisted = np.unique(after.product_ids[:, :5])
    index.remove(delisted)
    again = retriever.recommend(creators, K)
    assert (again.lengths == K).all() and not np.isin(again.product_ids, delisted).any()


def test_bad_requests(world) -> None:
    _, creators, catalog, ann, _ = world
    retriever = GoodsRetriever(ann, catalog, PolicyConfig())
    for k in (0, -3):
        with pytest.raises(RetrievalError, match="positive integer"):
            retriever.recommend(creators[:2], k)
    with pytest.raises(RetrievalError, match="exceeds"):
        retriever.recommend(creators[:2], N_GOODS + 1)
    with pytest.raises(DimensionMismatchError):
        retriever.recommend(creators[:2, :8], K)
    with pytest.raises(RetrievalError, match="rows"):
        retriever.recommend(creators[:2], K, seen=sp.csr_matrix((3, N_GOODS)))


def test_creators_for_products(world) -> None:
    goods, creators, _, _, _ = world
    creator_ids = np.arange(len(creators), dtype=np.int64) + 500
    index = EmbeddingIndex.build(creators, creator_ids, IndexConfig(kind="flat", threads=1))
    queries = goods[:20]
    ids, scores = creators_for_products(index, queries, 10)
    assert ids.shape == (20, 10) and (np.diff(scores, axis=1) <= 1e-6).all()
    brute = creator_ids[np.argsort(-(queries @ creators.T), axis=1)[:, :10]]
    assert (ids == brute).mean() > 0.99
    # creators already promoting a good are left out; the rest move up
    rows = np.repeat(np.arange(20), 3)
    cols = (ids[:, :3] - 500).ravel()
    exclude = sp.csr_matrix((np.ones(60), (rows, cols)), shape=(20, len(creators)))
    kept, _ = creators_for_products(index, queries, 10, exclude=exclude, creator_ids=creator_ids)
    assert (kept[:, :7] == ids[:, 3:]).all()
    assert not any(set(kept[i]) & set(ids[i, :3]) for i in range(20))
    with pytest.raises(RetrievalError, match="creator_ids"):
        creators_for_products(index, queries, 10, exclude=exclude)


def test_creators_for_goods_with_few_and_many_promoters(world) -> None:
    """Goods fetched at different depths (0, 3, 60 or every creator already promoting
    them) each get the exact top-k of the creators left, -1 where none is left."""
    goods, creators, _, _, _ = world
    n = len(creators)
    creator_ids = np.arange(n, dtype=np.int64) + 500
    index = EmbeddingIndex.build(creators, creator_ids, IndexConfig(kind="flat", threads=1))
    queries = goods[:8]
    ranked = np.argsort(-(queries @ creators.T), axis=1)
    promoters = [0, 3, 60, 0, n, 3, 60, 1]
    rows = np.concatenate([np.full(c, i) for i, c in enumerate(promoters)])
    cols = np.concatenate([ranked[i, :c] for i, c in enumerate(promoters)])
    exclude = sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(8, n))
    ids, scores = creators_for_products(
        index, queries, 10, exclude=exclude, creator_ids=creator_ids
    )
    for i, c in enumerate(promoters):
        expected = creator_ids[ranked[i, c : c + 10]]
        assert ids[i, : len(expected)].tolist() == expected.tolist()
        assert (ids[i, len(expected) :] == -1).all()
        assert np.isinf(scores[i, len(expected) :]).all()
    with pytest.raises(RetrievalError, match="exceeds"):
        creators_for_products(index, queries, len(creators) + 1)
    with pytest.raises(DimensionMismatchError):
        creators_for_products(index, queries[:, :4], 5)
