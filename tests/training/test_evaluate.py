"""The masked full-ranking protocol."""

import numpy as np
import pytest
import scipy.sparse as sp

from features.matching_data import IdIndex, Interactions
from models.matching.recommender import Recommender
from training.evaluation.evaluate import EvalTask, evaluate, make_task


class FixedScores(Recommender):
    """Scores from a fixed matrix (for protocol tests)."""

    kind = "test_fixed"

    def __init__(self, scores: np.ndarray) -> None:
        self.scores = scores.astype(np.float32)
        self.n_products = scores.shape[1]

    def fit(self, train, val=None):
        return self

    def score(self, creators):
        return self.scores[creators].copy()

    def _save(self, path):
        return {}

    @classmethod
    def _load(cls, path, meta):
        raise NotImplementedError


# 2 creators x 6 products; the model loves products 0, 1 (which creator 0 already has)
SCORES = np.array([[9, 8, 7, 6, 5, 4], [9, 8, 7, 6, 5, 4]], dtype=np.float32)
TRAIN = sp.csr_matrix(np.array([[1, 1, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0]], dtype=np.float32))
TEST = sp.csr_matrix(np.array([[0, 0, 1, 0, 0, 0], [0, 0, 0, 0, 0, 1]], dtype=np.float32))


def test_known_pairs_are_masked_before_ranking() -> None:
    task = EvalTask("t", np.array([0, 1]), TEST, TRAIN)
    result = evaluate(FixedScores(SCORES), task, [1, 2])
    # creator 0: 0, 1 masked -> top-1 is 2 (a hit); creator 1: top-2 is 0, 1 (miss)
    assert result.metrics["recall@1"] == pytest.approx(0.5)
    assert result.metrics["recall@2"] == pytest.approx(0.5)
    unmasked = evaluate(FixedScores(SCORES), EvalTask("t", np.array([0, 1]), TEST, None), [1])
    assert unmasked.metrics["recall@1"] == 0.0
    assert result.recall_curve.shape == (2,)


def test_candidate_slice_ranks_only_candidates() -> None:
    task = EvalTask("cold", np.array([1]), TEST, None, candidates=np.array([4, 5]))
    result = evaluate(FixedScores(SCORES), task, [1, 2])
    assert result.metrics["recall@2"] == 1.0
    assert result.metrics["coverage@2"] == 1.0  # both candidates recommended


def test_make_task_from_pair_masks() -> None:
    inter = Interactions(
        IdIndex(np.array([10, 20])),
        IdIndex(np.arange(6) + 100),
        np.array([0, 0, 0, 1]),
        np.array([0, 1, 2, 5]),
        None,
    )
    task = make_task(
        "test", inter, np.array([False, False, True, True]), np.array([True, True, False, False])
    )
    assert task.creators.tolist() == [0, 1]
    assert task.exclude.toarray()[0, :2].tolist() == [1, 1]
    result = evaluate(FixedScores(SCORES), task, [1], categories=np.array([0, 0, 1, 1, 2, 2]))
    assert result.metrics["recall@1"] == 0.5
    assert result.metrics["category_coverage@1"] == pytest.approx(2 / 3)
    sliced = make_task(
        "cold", inter, np.array([False, False, True, True]), None, candidates=np.array([5])
    )
    assert sliced.creators.tolist() == [1]


def test_oracle_ranks_in_its_own_column_order_as_in_ours(tiny_data) -> None:
    """The oracle scores every good in the truth's leaf order and maps columns back;
    it must rank exactly what gathering its scores into our positions ranks, with
    known pairs masked, and score a slice's columns like the full matrix."""
    from features.matching_data import load_interactions
    from training.evaluation.oracle_model import OracleRecommender

    inter = load_interactions(tiny_data)
    oracle = OracleRecommender(tiny_data, inter.creators, inter.products)
    creators = np.arange(min(40, len(inter.creators)))
    seen = inter.csr()[creators]
    gathered = FixedScores(oracle.score(np.arange(len(inter.creators))))
    got = oracle.recommend(creators, 20, exclude=seen)
    want = gathered.recommend(creators, 20, exclude=seen)
    np.testing.assert_allclose(got[1], want[1], rtol=1e-6)
    assert (got[0] == want[0]).mean() > 0.99  # ties may swap
    assert not seen.toarray()[np.arange(len(creators))[:, None], got[0]].any()
    columns = np.arange(0, len(inter.products), 7)
    scores, positions = oracle.score_columns(creators, columns)
    assert positions.tolist() == columns.tolist()
    np.testing.assert_allclose(scores, oracle.score(creators)[:, columns], rtol=1e-6)
