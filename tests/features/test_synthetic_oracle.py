"""The oracle: true propensities from the hidden choice model of the synthetic marketplace."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.special import logsumexp

from features.io import read_table
from features.synthetic import Oracle

BATCH = 256


@pytest.fixture(scope="module")
def oracle(tiny_data: Path) -> Oracle:
    return Oracle.load(tiny_data)


def _percentile_ranks(oracle: Oracle, events: pd.DataFrame) -> np.ndarray:
    column = pd.Series(np.arange(len(oracle.product_ids)), index=oracle.product_ids)
    ranks = []
    for start in range(0, len(events), BATCH):
        batch = events.iloc[start : start + BATCH]
        scores = oracle.scores(batch["creator_id"].to_numpy())
        own = scores[np.arange(len(batch)), column[batch["product_id"].to_numpy()].to_numpy()]
        ranks.append((scores > own[:, None]).mean(axis=1))
    return np.concatenate(ranks)


def test_scores_are_log_probabilities_in_products_order(oracle: Oracle, tiny_data: Path) -> None:
    products = read_table(tiny_data, "products", columns=["product_id"])
    assert np.array_equal(oracle.product_ids, products["product_id"].to_numpy())
    creators = oracle.creator_ids[:7]
    scores = oracle.scores(creators)
    assert scores.shape == (7, len(products)) and scores.dtype == np.float32
    assert np.allclose(logsumexp(scores.astype(np.float64), axis=1), 0.0, atol=1e-3)


def test_oracle_ranks_held_out_interactions_far_above_random(
    oracle: Oracle, tiny_data: Path
) -> None:
    events = read_table(tiny_data, "interactions", columns=["creator_id", "product_id"])
    sample = events.sample(1000, random_state=0)
    ranks = _percentile_ranks(oracle, sample)
    assert ranks.mean() < 0.2
    popularity = (
        events["product_id"].value_counts().reindex(oracle.product_ids).fillna(0).to_numpy()
    )
    column = pd.Series(np.arange(len(oracle.product_ids)), index=oracle.product_ids)
    own = popularity[column[sample["product_id"].to_numpy()].to_numpy()]
    pop_ranks = (popularity[None, :] > own[:, None]).mean(axis=1)
    assert ranks.mean() < pop_ranks.mean()


def test_unknown_creators_are_named(oracle: Oracle) -> None:
    with pytest.raises(ValueError, match="123"):
        oracle.scores(np.array([oracle.creator_ids[0], 123]))


def test_missing_truth_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="truth"):
        Oracle.load(tmp_path)


def test_scores_equal_the_choice_model_written_out(oracle: Oracle) -> None:
    """log P = alpha taste.latent + base + price fit of the creator's band, normalised
    within each leaf, plus log P(leaf | creator): the one-matmul form gives the same."""
    creators = oracle.creator_ids[:9]
    rows = oracle._rows(creators)
    o = oracle
    weight = (
        float(o._alpha) * (o._taste[rows].astype(np.float64) @ o._latent.T.astype(np.float64))
        + o._base[None, :]
        + o._price_fit[o._creator_band[rows]]
    )
    leaf_term = o.log_leaf_probability(rows)[:, o._leaf_ids]
    for i, (start, size) in enumerate(zip(o._starts, o._sizes, strict=True)):
        block = weight[:, start : start + size]
        block -= logsumexp(block, axis=1, keepdims=True) - leaf_term[:, i : i + 1]
    np.testing.assert_allclose(o.scores_by_leaf(creators), weight, rtol=1e-4, atol=1e-4)
