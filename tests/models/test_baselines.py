import numpy as np
import pytest
import scipy.sparse as sp

from models.matching.baselines import (
    ALSRecommender,
    EASERecommender,
    ItemKNNRecommender,
    PopularityRecommender,
)
from models.matching.recommender import EmbeddingRecommender, Recommender, RecommenderError
from tests.models.recommender_contract import RecommenderContract, contract_matrix


class TestPopularity(RecommenderContract):
    def make(self) -> Recommender:
        return PopularityRecommender()

    def test_most_popular_first(self) -> None:
        train = sp.csr_matrix(np.array([[1, 1, 0], [0, 1, 0], [0, 1, 1]], dtype=np.float32))
        positions, _ = PopularityRecommender().fit(train).recommend(np.array([0]), 1)
        assert positions[0, 0] == 1

    @pytest.mark.parametrize("with_candidates", [False, True])
    def test_ranking_the_row_once_equals_ranking_every_creator(self, with_candidates) -> None:
        """The fast path (one ranked row, exclusions dropped per creator) returns what the
        general path (a score per creator and good, masked, top-k) returns, including
        creators whose exclusions leave fewer than k goods (-inf padding)."""
        rng = np.random.default_rng(3)
        n_products = 60
        model = PopularityRecommender()
        model.popularity = rng.permutation(n_products).astype(np.float32)  # no ties
        model.n_products = n_products
        exclude = sp.random(8, n_products, density=0.3, random_state=4, format="csr")
        exclude[7] = 1.0  # one creator has seen every good
        candidates = rng.choice(n_products, 25, replace=False) if with_candidates else None
        for k in (5, 30):
            fast = model.recommend(np.arange(8), k, exclude=exclude, candidates=candidates)
            general = Recommender.recommend(model, np.arange(8), k, exclude, candidates)
            finite = np.isfinite(general[1])
            np.testing.assert_array_equal(np.isfinite(fast[1]), finite)
            np.testing.assert_array_equal(fast[0][finite], general[0][finite])
            np.testing.assert_array_equal(fast[1][finite], general[1][finite])
        assert not np.isfinite(fast[1][7]).any()


class TestALS(RecommenderContract):
    def make(self) -> Recommender:
        return ALSRecommender(factors=8, iterations=5, threads=1)

    def test_learns_the_groups(self) -> None:
        train = contract_matrix()
        model = ALSRecommender(factors=8, iterations=10, alpha=1.0, threads=1).fit(train)
        positions, _ = model.recommend(np.arange(20), 5, exclude=train[:20])
        same_group = (positions % 2) == (np.arange(20) % 2)[:, None]
        assert same_group.mean() > 0.75


class TestEASE(RecommenderContract):
    def make(self) -> Recommender:
        return EASERecommender(lambda_=10.0)

    def test_too_many_products_is_a_clear_error(self) -> None:
        with pytest.raises(RecommenderError, match="ItemKNN"):
            EASERecommender(max_products=10).fit(contract_matrix())

    def test_weights_are_the_closed_form_in_memory_order(self, tmp_path) -> None:
        """B = I - P diagMat(1 / diag(P)), P = (X'X + lambda I)^-1 (Steck 2019), computed in
        float64 with a general inverse; ours (float32 Cholesky) agrees, and its rows lie
        in memory order (C-contiguous) after fitting and after loading."""
        train = contract_matrix()
        x = (train > 0).astype(np.float64).toarray()
        p = np.linalg.inv(x.T @ x + 10.0 * np.eye(x.shape[1]))
        expected = -p / np.diag(p)[None, :]
        np.fill_diagonal(expected, 0.0)
        model = EASERecommender(lambda_=10.0).fit(train)
        np.testing.assert_allclose(model.weights, expected, atol=1e-5)
        assert model.weights.flags.c_contiguous
        loaded = Recommender.load(model.save(tmp_path / "ease"))
        assert loaded.weights.flags.c_contiguous


class TestItemKNN(RecommenderContract):
    def make(self) -> Recommender:
        return ItemKNNRecommender(neighbors=10, threads=1)


class TestEmbedding(RecommenderContract):
    def make(self) -> Recommender:
        return _FittableEmbedding()


class _FittableEmbedding(EmbeddingRecommender):
    """EmbeddingRecommender is exported, not fitted; for the contract, 'fit' = SVD."""

    kind = "test_embedding"

    def fit(self, train, val=None):
        u, s, vt = np.linalg.svd(train.toarray(), full_matrices=False)
        self.creator_vectors = (u[:, :4] * s[:4]).astype(np.float32)
        self.product_vectors = vt[:4].T.astype(np.float32).copy()
        self.n_products = train.shape[1]
        return self


def test_embedding_recommender_refuses_fit() -> None:
    with pytest.raises(RecommenderError, match="exported"):
        EmbeddingRecommender().fit(contract_matrix())


def test_load_unknown_folder(tmp_path) -> None:
    with pytest.raises(RecommenderError, match="no saved recommender"):
        Recommender.load(tmp_path)
