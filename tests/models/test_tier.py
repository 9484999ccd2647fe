"""The tier model: monotonicity, cut-points, explanations, rules, persistence, baseline."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.metrics import cohen_kappa_score

from features.contract import INDICATORS
from features.indicators import DIMENSIONS, HISTORY
from features.settings import TierModelParams, load_settings
from models.tier.baseline import HandWeightedBaseline
from models.tier.cuts import (
    apply_cuts,
    distribution_cuts,
    fit_cuts,
    fit_qwk_cuts,
    precision_cut,
    quadratic_kappa,
)
from models.tier.model import (
    FEATURES,
    REASON_FLAGGED,
    REASON_MODEL,
    TierModel,
    assign_tiers,
    feature_matrix,
)

SHARES = np.array([0.12, 0.26, 0.24, 0.19, 0.12, 0.07])


def _frame(n: int, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    """Oriented indicators with gaps and new products; labels from a monotone score with
    a within-dimension interaction and noise, cut to a pyramid of tiers."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(rng.standard_normal((n, len(INDICATORS))), columns=list(INDICATORS))
    frame["is_official_brand"] = (frame["is_official_brand"] > 0.8).astype(float)
    score = frame.sum(axis=1) + 0.5 * np.minimum(
        frame["refund_rate"], frame["positive_review_rate"]
    )
    score = score + 2.0 * frame["refund_rate"] + rng.standard_normal(n) * 0.5
    labels = np.searchsorted(np.quantile(score, np.cumsum(SHARES)[:-1]), score)
    history = list(HISTORY)
    frame[history] = frame[history].mask(rng.random((n, len(history))) < 0.03)
    frame.loc[rng.random(n) < 0.03, history] = np.nan  # no sales history yet
    frame.insert(0, "product_id", 5_000_000_000 + 7 * np.arange(n))
    frame["flagged_low_quality"] = False
    frame["has_sales_history"] = frame[history].notna().any(axis=1)
    return frame, labels.astype(np.int64)


def _params(**changes: object) -> TierModelParams:
    base = load_settings("tiny").tier.model.model_dump()
    base["l5_min_support"] = 10
    return TierModelParams.model_validate(base | changes)


@pytest.fixture(scope="module")
def data() -> dict[str, tuple[pd.DataFrame, np.ndarray]]:
    return {"train": _frame(3000, 1), "valid": _frame(1500, 2), "test": _frame(1500, 3)}


@pytest.fixture(scope="module", params=["cumulative", "regression"])
def model(request: pytest.FixtureRequest, data: dict) -> TierModel:
    (train, y_train), (valid, y_valid) = data["train"], data["valid"]
    return TierModel(_params(ordinal=request.param)).fit(train, y_train, valid, y_valid, seed=0)


def test_model_learns_the_ordinal_label(model: TierModel, data: dict) -> None:
    test, labels = data["test"]
    tier = model.predict_tier(test)
    assert cohen_kappa_score(labels, tier, weights="quadratic") > 0.8
    assert np.all(np.diff(model.cuts) >= 0) and len(model.cuts) == 5
    assert len(model.boosters) == (5 if model.cumulative else 1)


def test_explanations_sum_to_the_score(model: TierModel, data: dict) -> None:
    test, _ = data["test"]
    explanation = model.explain(test)
    assert explanation.dimensions.shape == (len(test), len(DIMENSIONS))
    np.testing.assert_allclose(
        explanation.base + explanation.dimensions.sum(axis=1), explanation.score, atol=1e-9
    )
    np.testing.assert_allclose(
        explanation.indicators.sum(axis=1), explanation.dimensions.sum(axis=1), atol=1e-9
    )
    np.testing.assert_allclose(explanation.score, model.predict_score(test), atol=1e-9)
    np.testing.assert_array_equal(explanation.tier, apply_cuts(explanation.score, model.cuts))


def _shap_by_dimension(shap: np.ndarray) -> np.ndarray:
    return np.column_stack(
        [shap[:, [FEATURES.index(n) for n in names]].sum(axis=1) for names in DIMENSIONS.values()]
    )


def test_dimension_contributions_equal_pred_contrib(model: TierModel, data: dict) -> None:
    """With one dimension per tree, LightGBM's TreeSHAP summed by dimension is exact for
    every booster; for regression it is the explanation itself."""
    test, _ = data["test"]
    x = feature_matrix(test)
    for compiled in model.compiled:
        shap = compiled.booster.predict(x, pred_contrib=True)  # (rows, 11 + bias)
        ours = compiled.contributions(x)
        np.testing.assert_allclose(_shap_by_dimension(shap), _shap_by_dimension(ours), atol=1e-9)
        np.testing.assert_allclose(shap[:, -1], compiled.bias, atol=1e-9)
    if not model.cumulative:
        shap = model.boosters[0].predict(x, pred_contrib=True)
        np.testing.assert_allclose(
            _shap_by_dimension(shap), model.explain(test).dimensions, atol=1e-9
        )


def test_lookup_tables_equal_the_leaves_even_at_thresholds(model: TierModel, data: dict) -> None:
    test, _ = data["test"]
    for compiled in model.compiled:
        assert compiled.tables is not None
        x = feature_matrix(test)
        for table in compiled.tables.tables:  # put some values exactly on split thresholds
            for j, feature in enumerate(table.features):
                cuts = table.thresholds[j]
                if len(cuts):
                    x[: len(cuts), feature] = cuts[: len(x)]
        leaves = compiled.booster.predict(x, pred_leaf=True)
        expected = compiled.attribution.from_leaves(np.asarray(leaves, dtype=np.int32), 1000)
        np.testing.assert_allclose(compiled.tables.contributions(x), expected, atol=1e-9)
        np.testing.assert_allclose(
            compiled.bias + expected.sum(axis=1),
            compiled.booster.predict(x, raw_score=True),
            atol=1e-9,
        )


def test_top_indicators_for_and_against(model: TierModel, data: dict) -> None:
    test, _ = data["test"]
    explanation = model.explain(test)
    rows = np.arange(len(test))
    has_for = explanation.top_for >= 0
    assert has_for.any() and (explanation.top_against >= 0).any()
    best = explanation.indicators[rows[has_for], explanation.top_for[has_for]]
    assert np.all(best > 0) and np.allclose(best, explanation.indicators[has_for].max(axis=1))


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    row=st.integers(0, 1499),
    indicator=st.sampled_from(INDICATORS),
    step=st.floats(0.01, 5.0),
)
def test_a_better_indicator_never_lowers_the_tier(
    model: TierModel, data: dict, row: int, indicator: str, step: float
) -> None:
    test, _ = data["test"]
    product = test.iloc[[row]]
    assume(not np.isnan(product[indicator].iloc[0]))
    better = product.copy()
    better[indicator] = better[indicator] + step  # oriented: + is the good direction
    before, after = model.explain(product), model.explain(better)
    assert after.score[0] >= before.score[0] - 1e-12
    assert after.tier[0] >= before.tier[0]
    assert model.predict_tier(better)[0] >= model.predict_tier(product)[0]


def test_new_product_with_excellent_brand_price_service_reaches_a_high_tier(
    model: TierModel, data: dict
) -> None:
    train, _ = data["train"]
    best = train[list(FEATURES)].quantile(0.97).to_frame().T
    best[["gmv_30d", "conversion_rate", "active_promoters_30d"]] = np.nan  # no sales yet
    explanation = model.explain(best)
    assert explanation.tier[0] >= 4
    sales = list(DIMENSIONS).index("sales")
    assert abs(explanation.dimensions[0, sales]) < 0.5  # missing sales is neutral, not zero sales


def test_flagged_merchants_goods_are_l0_with_a_reason() -> None:
    tier, reason = assign_tiers(np.array([5, 3, 0, 4]), np.array([True, False, True, False]))
    assert tier.tolist() == [0, 3, 0, 4]
    assert reason.tolist() == [REASON_FLAGGED, REASON_MODEL, REASON_FLAGGED, REASON_MODEL]


def test_save_and_load_rebuild_the_same_model(model: TierModel, data: dict, tmp_path: Path) -> None:
    test, _ = data["test"]
    model.save(tmp_path / "model")
    again = TierModel.load(tmp_path / "model")
    assert again.params == model.params
    np.testing.assert_array_equal(again.cuts, model.cuts)
    np.testing.assert_allclose(again.explain(test).score, model.explain(test).score, atol=1e-12)


def test_free_interactions_explain_through_the_leaves(data: dict) -> None:
    (train, y_train), (valid, y_valid) = data["train"], data["valid"]
    free = TierModel(_params(interactions="free")).fit(train, y_train, valid, y_valid, seed=0)
    assert all(c.tables is None for c in free.compiled)
    test, _ = data["test"]
    explanation = free.explain(test)
    np.testing.assert_allclose(explanation.score, free.predict_score(test), atol=1e-9)


# -- cut-points ---------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5), st.integers(0, 5)), min_size=2, max_size=60))
def test_quadratic_kappa_matches_sklearn(pairs: list[tuple[int, int]]) -> None:
    y_true, y_pred = map(np.asarray, zip(*pairs, strict=True))
    ours = quadratic_kappa(y_true, y_pred)
    with warnings.catch_warnings():  # undefined for a single class: both give 0
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        theirs = cohen_kappa_score(
            y_true, y_pred, weights="quadratic", labels=range(6), replace_undefined_by=0.0
        )
    assert ours == pytest.approx(theirs, abs=1e-9)


def test_apply_cuts_counts_cuts_at_or_below() -> None:
    cuts = np.array([0.5, 1.5, 2.5, 3.5, 4.5])
    assert apply_cuts(np.array([-1.0, 0.5, 1.0, 4.49, 4.5, 9.0]), cuts).tolist() == [
        0,
        1,
        1,
        4,
        5,
        5,
    ]


def test_qwk_cuts_beat_distribution_cuts() -> None:
    rng = np.random.default_rng(0)
    labels = rng.choice(6, size=3000, p=SHARES)
    score = labels + rng.normal(0, 0.8, size=3000) + 0.3 * (labels == 5)  # biased, noisy
    start = quadratic_kappa(labels, apply_cuts(score, distribution_cuts(score, labels)))
    cuts = fit_qwk_cuts(score, labels, rounds=3, candidates=40)
    assert np.all(np.diff(cuts) >= 0)
    assert quadratic_kappa(labels, apply_cuts(score, cuts)) >= start


def test_distribution_cuts_reproduce_label_shares() -> None:
    rng = np.random.default_rng(1)
    labels = rng.choice(6, size=5000, p=SHARES)
    score = rng.standard_normal(5000)
    shares = np.bincount(apply_cuts(score, distribution_cuts(score, labels)), minlength=6) / 5000
    np.testing.assert_allclose(shares, np.bincount(labels, minlength=6) / 5000, atol=0.002)


def test_precision_cut_is_the_lowest_threshold_reaching_the_target() -> None:
    score = np.arange(10, dtype=float)[::-1]  # 9 .. 0
    is_top = np.array([1, 1, 1, 0, 1, 1, 0, 0, 1, 0], dtype=bool)  # by descending score
    assert precision_cut(score, is_top, target=0.8, min_support=2) == 4.0  # top 6: 5/6
    assert precision_cut(score, is_top, target=1.0, min_support=2) == 7.0  # top 3 only
    assert precision_cut(score, is_top, target=1.0, min_support=4) is None
    ties = np.array([3.0, 3.0, 2.0, 1.0])  # a threshold never splits tied scores
    assert precision_cut(ties, np.array([1, 0, 1, 0], dtype=bool), 1.0, 1) is None


def test_fit_cuts_moves_l5_to_the_target_precision() -> None:
    rng = np.random.default_rng(2)
    labels = rng.choice(6, size=4000, p=SHARES)
    score = labels + rng.normal(0, 0.7, size=4000)
    cuts = fit_cuts(score, labels, rounds=2, candidates=32, top_precision=0.9, top_min_support=20)
    badged = score >= cuts[-1]
    assert (labels[badged] == 5).mean() >= 0.9 and badged.sum() >= 20
    assert cuts[-1] >= cuts[-2]


# -- the hand-weighted baseline -----------------------------------------------------


def test_baseline_weighs_dimensions_equally_and_matches_label_shares(data: dict) -> None:
    (train, labels), (test, _) = data["train"], data["test"]
    baseline = HandWeightedBaseline().fit(train, labels, grid_points=201)
    dims = baseline.scaler.transform(test)
    np.testing.assert_allclose(
        baseline.predict_score(test), dims.mean(axis=1, skipna=True), atol=1e-12
    )
    shares = np.bincount(baseline.predict_tier(train), minlength=6) / len(train)
    np.testing.assert_allclose(shares, np.bincount(labels, minlength=6) / len(train), atol=0.01)
