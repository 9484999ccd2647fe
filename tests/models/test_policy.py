"""Policy: exclusions, each request filter, seen goods, Selected Goods boost and share, reasons."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from features.settings import PolicyConfig
from models.retrieval.catalog import IdLookup, ProductCatalog, RequestFilters, price_bands
from models.retrieval.index import RetrievalError
from models.retrieval.policy import Policy, RankedLists

N = 600
K = 20
PLAIN = PolicyConfig(
    diversity_method="none", selected_boost=0.0, min_selected_share=0.0, exclude_seen=True
)


@pytest.fixture(scope="module")
def catalog() -> ProductCatalog:
    rng = np.random.default_rng(0)
    l3 = rng.integers(0, 40, N)
    return ProductCatalog(
        product_ids=np.arange(N, dtype=np.int64) * 10 + 5,
        tier=rng.integers(0, 6, N),
        flagged=rng.random(N) < 0.1,
        category_l1=l3 // 10,
        category_l2=l3 // 5,
        category_l3=l3,
        price_band=rng.integers(0, 5, N),
        commission=rng.uniform(0.0, 0.5, N),
    )


@pytest.fixture(scope="module")
def candidates(catalog: ProductCatalog) -> tuple[np.ndarray, np.ndarray]:
    """Every good for 30 creators, shuffled, with random scores."""
    rng = np.random.default_rng(1)
    n = 30
    ids = np.stack([rng.permutation(catalog.product_ids) for _ in range(n)])
    return ids, rng.standard_normal(ids.shape).astype(np.float32)


def _expected_top(ids, scores, allowed: np.ndarray, k: int) -> list[list[int]]:
    """Brute force: the k best-scored goods of each row among `allowed` IDs."""
    out = []
    for row_ids, row_scores in zip(ids, scores, strict=True):
        keep = np.isin(row_ids, allowed)
        order = np.argsort(-row_scores[keep], kind="stable")[:k]
        out.append(row_ids[keep][order].tolist())
    return out


def test_l0_and_flagged_merchants_never_shown(catalog, candidates) -> None:
    ids, scores = candidates
    lists = Policy(PLAIN).apply(ids, scores, catalog, None, None, K)
    pos, found = catalog.positions(lists.product_ids)
    assert found.all() and (lists.lengths == K).all()
    assert (catalog.tier[pos] != 0).all() and not catalog.flagged[pos].any()
    allowed = catalog.product_ids[(catalog.tier != 0) & ~catalog.flagged]
    assert lists.product_ids.tolist() == _expected_top(ids, scores, allowed, K)
    # the exclusions are the config's: switched off, L0 and flagged goods come back
    loose = PLAIN.model_copy(update={"exclude_tiers": [], "exclude_flagged": False})
    pos_all, _ = catalog.positions(
        Policy(loose).apply(ids, scores, catalog, None, None, K).product_ids
    )
    assert (catalog.tier[pos_all] == 0).any() and catalog.flagged[pos_all].any()


FILTERS = {
    "category_l1": (RequestFilters(category_l1=(1, 3)), lambda c: np.isin(c.category_l1, [1, 3])),
    "category_l2": (RequestFilters(category_l2=(4,)), lambda c: c.category_l2 == 4),
    "category_l3": (
        RequestFilters(category_l3=(7, 8, 9)),
        lambda c: np.isin(c.category_l3, [7, 8, 9]),
    ),
    "min_tier": (RequestFilters(min_tier=4), lambda c: c.tier >= 4),
    "price_band": (
        RequestFilters(price_bands=(1, 2)),
        lambda c: (c.price_band >= 1) & (c.price_band <= 2),
    ),
    "min_commission": (RequestFilters(min_commission=0.3), lambda c: c.commission >= 0.3),
}


@pytest.mark.parametrize("name", list(FILTERS))
def test_each_request_filter(name, catalog, candidates) -> None:
    filters, rule = FILTERS[name]
    ids, scores = candidates
    lists = Policy(PLAIN).apply(ids, scores, catalog, None, filters, K)
    pos, _ = catalog.positions(lists.product_ids)
    shown = lists.product_ids >= 0
    assert rule(catalog)[pos][shown].all()
    allowed_mask = rule(catalog) & (catalog.tier != 0) & ~catalog.flagged
    allowed = catalog.product_ids[allowed_mask]
    expected = _expected_top(ids, scores, allowed, K)
    got = [row[row >= 0].tolist() for row in lists.product_ids]
    assert got == expected
    # full lists where the filter leaves at least k goods, a reason where it does not
    assert ((lists.lengths == K) == (allowed_mask.sum() >= K)).all()
    for i in np.flatnonzero(lists.lengths < K):
        assert "pass the policy" in lists.reasons[i]


def test_filters_leaving_nothing_give_empty_lists_with_reason(catalog, candidates) -> None:
    ids, scores = candidates
    filters = RequestFilters(category_l1=(99,))
    lists = Policy(PLAIN).apply(ids, scores, catalog, None, filters, K)
    assert (lists.lengths == 0).all() and (lists.product_ids == -1).all()
    assert all("only 0 of the" in r for r in lists.reasons)
    assert lists.to_frame(np.arange(len(ids))).empty
    with pytest.raises(RetrievalError, match="empty"):
        RequestFilters(price_bands=(3, 1))


def test_seen_goods_excluded_by_default(catalog, candidates) -> None:
    ids, scores = candidates
    plain = Policy(PLAIN).apply(ids, scores, catalog, None, None, K)
    # each creator already promoted its first five goods of the plain list
    rows = np.repeat(np.arange(len(ids)), 5)
    cols, _ = catalog.positions(plain.product_ids[:, :5].ravel())
    seen = sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(ids), N))
    lists = Policy(PLAIN).apply(ids, scores, catalog, seen, None, K)
    assert (lists.lengths == K).all()
    for i in range(len(ids)):
        assert not set(lists.product_ids[i]) & set(plain.product_ids[i, :5])
        assert lists.product_ids[i, :10].tolist() == plain.product_ids[i, 5:15].tolist()
    keep_seen = PLAIN.model_copy(update={"exclude_seen": False})
    again = Policy(keep_seen).apply(ids, scores, catalog, seen, None, K)
    assert (again.product_ids == plain.product_ids).all()
    with pytest.raises(ValueError, match="columns"):
        Policy(PLAIN).apply(ids, scores, catalog, seen[:, :10], None, K)


def test_selected_goods_boost_moves_l5_up(catalog, candidates) -> None:
    ids, scores = candidates
    ranks = []
    for boost in (0.0, 0.5, 1.0, 2.0):
        cfg = PLAIN.model_copy(update={"selected_boost": boost})
        lists = Policy(cfg).apply(ids, scores, catalog, None, None, K)
        assert (lists.selected_goods == (lists.tier == 5)).all()
        ranks.append(lists.selected_goods.mean())
        if boost == 0:
            assert (lists.ranking_scores == lists.scores).all()
        else:
            l5 = lists.selected_goods
            assert (lists.ranking_scores[l5] > lists.scores[l5]).all()
            assert (lists.ranking_scores[~l5] == lists.scores[~l5]).all()
            assert (np.diff(lists.ranking_scores, axis=1) <= 0).all()  # ranked by boosted score
    assert ranks == sorted(ranks) and ranks[-1] > 2 * ranks[0]


def test_minimum_selected_goods_share(catalog, candidates) -> None:
    ids, scores = candidates
    share = 0.3
    cfg = PLAIN.model_copy(update={"min_selected_share": share})
    lists = Policy(cfg).apply(ids, scores, catalog, None, None, K)
    need = math.ceil(share * K)
    assert (lists.lengths == K).all()
    assert (lists.selected_goods.sum(axis=1) >= need).all()
    plain = Policy(PLAIN).apply(ids, scores, catalog, None, None, K)
    forced = lists.selected_slot
    assert (forced.sum(axis=1) == np.maximum(need - plain.selected_goods.sum(axis=1), 0)).all()
    assert forced.any() and (lists.tier[forced] == 5).all()
    for i in range(len(ids)):  # the forced goods take the last places; the rest keep order
        n_forced = int(forced[i].sum())
        assert not forced[i, : K - n_forced].any()
        assert (
            lists.product_ids[i, : K - n_forced].tolist()
            == [g for g in plain.product_ids[i] if g in set(lists.product_ids[i])][: K - n_forced]
        )
        assert "Selected Goods slot" in lists.why(i, K - 1) if n_forced else True


def test_share_only_uses_selected_goods_that_were_retrieved(catalog) -> None:
    """No L5 among the candidates: the lists stay as they were, with no forced slot."""
    non_l5 = catalog.product_ids[(catalog.tier > 0) & (catalog.tier < 5) & ~catalog.flagged]
    ids = np.tile(non_l5[:50], (3, 1))
    scores = np.tile(np.linspace(1, 0, 50, dtype=np.float32), (3, 1))
    cfg = PLAIN.model_copy(update={"min_selected_share": 0.5, "selected_boost": 1.0})
    lists = Policy(cfg).apply(ids, scores, catalog, None, None, K)
    assert (lists.product_ids == non_l5[:K]).all() and not lists.selected_slot.any()


def test_lists_of_k_when_enough_eligible_goods(catalog) -> None:
    """Padding, unknown IDs and NaN scores are dropped; rows still fill up to k."""
    rng = np.random.default_rng(5)
    ids = np.stack([rng.permutation(catalog.product_ids)[:200] for _ in range(10)])
    ids[:, ::7] = -1
    ids[:, 3] = 999_999  # not in the catalog
    scores = rng.standard_normal(ids.shape).astype(np.float32)
    scores[:, 5] = np.nan
    cfg = PolicyConfig(diversity_method="cap", min_selected_share=0.2)
    lists = Policy(cfg).apply(ids, scores, catalog, None, None, K)
    assert (lists.lengths == K).all() and all(r is None for r in lists.reasons)
    assert (lists.product_ids >= 0).all() and np.isfinite(lists.scores).all()
    assert not np.isin(lists.product_ids, [999_999]).any()
    assert all(len(set(row)) == K for row in lists.product_ids)  # no duplicates


def test_fewer_candidates_than_places(catalog) -> None:
    ids = catalog.product_ids[(catalog.tier > 0) & ~catalog.flagged][:5][None, :]
    scores = np.linspace(1, 0, 5, dtype=np.float32)[None, :]
    lists = Policy(PolicyConfig()).apply(ids, scores, catalog, None, None, K)
    assert lists.product_ids.shape == (1, K) and lists.lengths.tolist() == [5]
    assert set(lists.product_ids[0, :5]) == set(ids[0]) and (lists.product_ids[0, 5:] == -1).all()
    assert "only 5 of the" in lists.reasons[0]


def test_reasons_and_long_frame(catalog, candidates) -> None:
    ids, scores = candidates
    cfg = PolicyConfig(
        diversity_method="cap", category_cap_share=0.05, min_selected_share=0.3, selected_boost=0.0
    )
    lists = Policy(cfg).apply(ids, scores, catalog, None, None, K)
    assert lists.diversity_slot.any() and lists.selected_slot.any()
    frame = lists.to_frame(np.arange(len(ids)) + 100, with_why=True)
    assert len(frame) == len(ids) * K
    assert list(frame.columns[:6]) == [
        "creator_id",
        "rank",
        "product_id",
        "score",
        "tier",
        "category_l1",
    ]
    assert frame["rank"].between(1, K).all() and frame["creator_id"].min() == 100
    row = frame.iloc[0]
    assert row["why"].startswith(f"score {row['score']:.4f}; tier L{row['tier']}")
    assert frame.loc[frame.diversity_slot, "why"].str.contains("diversity slot").all()
    assert frame.loc[frame.selected_goods, "why"].str.contains("Selected Goods").all()
    empty = RankedLists.empty(2, 3, "nothing")
    assert empty.reasons == ["nothing", "nothing"] and empty.to_frame(np.array([1, 2])).empty


def test_bad_input(catalog, candidates) -> None:
    ids, scores = candidates
    with pytest.raises(RetrievalError, match="positive"):
        Policy(PLAIN).apply(ids, scores, catalog, None, None, 0)
    with pytest.raises(ValueError, match="same"):
        Policy(PLAIN).apply(ids, scores[:, :5], catalog, None, None, K)


def test_catalog_from_frame_and_lookup() -> None:
    df = pd.DataFrame(
        {
            "product_id": [30, 10, 20],
            "tier": [5, None, 0],
            "flagged_low_quality": [False, True, None],
            "category_l1": [1, 2, 3],
            "price": [1.0, 50.0, np.nan],
            "commission_rate": [0.1, 0.2, 0.3],
        }
    )
    cat = ProductCatalog.from_frame(df, price_edges=np.array([2, 10, 20, 40]))
    assert cat.tier.tolist() == [5, -1, 0] and cat.flagged.tolist() == [False, True, False]
    assert cat.price_band.tolist() == [0, 4, -1] and cat.category_l3.tolist() == [-1, -1, -1]
    assert cat.eligible(None).tolist() == [True, False, False]  # untiered is not L0
    pos, found = cat.positions(np.array([[20, 11], [30, 10]]))
    assert pos.tolist() == [[2, 0], [0, 1]] and found.tolist() == [[True, False], [True, True]]
    sparse = IdLookup(np.array([5, 10**12, -3]))
    assert not sparse.dense and sparse(np.array([10**12, 4]))[0].tolist() == [1, 0]
    assert price_bands(np.arange(10.0)).tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    with pytest.raises(RetrievalError, match="unique"):
        ProductCatalog.from_frame(pd.DataFrame({"product_id": [1, 1]}))
