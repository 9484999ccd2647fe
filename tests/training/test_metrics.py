import math

import numpy as np
import pytest
import scipy.sparse as sp

from training.evaluation.ranking_metrics import (
    category_coverage_at_k,
    hit_rate_at_k,
    hits,
    item_coverage_at_k,
    ndcg_at_k,
    recall_at_k,
)

# creator 0 holds out {1, 4}; creator 1 holds out {0}
TRUTH = sp.csr_matrix(np.array([[0, 1, 0, 0, 1], [1, 0, 0, 0, 0]], dtype=np.float32))
RECOMMENDED = np.array([[1, 2, 3, 4], [3, 2, 1, 0]])


def test_hits() -> None:
    assert hits(RECOMMENDED, TRUTH).tolist() == [
        [True, False, False, True],
        [False, False, False, True],
    ]


def test_padding_is_never_a_hit() -> None:
    assert not hits(np.array([[-1, -1], [-1, 0]]), TRUTH)[:, :1].any()


def test_recall() -> None:
    np.testing.assert_allclose(recall_at_k(RECOMMENDED, TRUTH, 1), [0.5, 0.0])
    np.testing.assert_allclose(recall_at_k(RECOMMENDED, TRUTH, 4), [1.0, 1.0])


def test_ndcg_by_hand() -> None:
    # creator 0 @4: hits at ranks 1 and 4 -> (1 + 1/log2(5)) / (1 + 1/log2(3))
    c0 = (1 + 1 / math.log2(5)) / (1 + 1 / math.log2(3))
    # creator 1 @4: hit at rank 4 -> (1/log2(5)) / 1
    c1 = 1 / math.log2(5)
    np.testing.assert_allclose(ndcg_at_k(RECOMMENDED, TRUTH, 4), [c0, c1])
    np.testing.assert_allclose(ndcg_at_k(RECOMMENDED, TRUTH, 1), [1.0, 0.0])


def test_hit_rate() -> None:
    np.testing.assert_allclose(hit_rate_at_k(RECOMMENDED, TRUTH, 2), [1.0, 0.0])


def test_coverage() -> None:
    assert item_coverage_at_k(RECOMMENDED, 1, 5) == pytest.approx(2 / 5)  # {1, 3}
    categories = np.array([0, 0, 1, 1, 2])  # leaf of each product
    assert category_coverage_at_k(RECOMMENDED, 1, categories) == pytest.approx(2 / 3)  # {0, 1}
    assert category_coverage_at_k(RECOMMENDED, 4, categories) == pytest.approx(1.0)


def test_shape_mismatch_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="rows"):
        hits(RECOMMENDED[:1], TRUTH)


def test_hits_equal_a_dense_lookup() -> None:
    """The sorted-key search finds exactly the truth's goods, in unsorted CSR rows too."""
    rng = np.random.default_rng(0)
    truth = sp.random(50, 300, density=0.05, random_state=1, format="csr")
    truth.indices = truth.indices.copy()
    truth.data[:] = 1.0
    shuffled = truth.copy()
    for row in range(50):  # the same matrix with each row's columns out of order
        lo, hi = shuffled.indptr[row], shuffled.indptr[row + 1]
        shuffled.indices[lo:hi] = shuffled.indices[lo:hi][::-1]
    shuffled.has_sorted_indices = False
    recommended = rng.integers(-1, 300, size=(50, 40))
    dense = truth.toarray() > 0
    expected = np.where(
        recommended >= 0, dense[np.arange(50)[:, None], np.maximum(recommended, 0)], False
    )
    np.testing.assert_array_equal(hits(recommended, truth), expected)
    np.testing.assert_array_equal(hits(recommended, shuffled), expected)
