"""The contract every recommender passes: a test class mixes this in and says how to
build its model (`make`). Data: a small random creator x product matrix with structure
(two groups of creators liking two groups of products)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from models.matching.recommender import Recommender, RecommenderError, reused_scores

N_CREATORS, N_PRODUCTS = 60, 40


def contract_matrix(seed: int = 0) -> sp.csr_matrix:
    rng = np.random.default_rng(seed)
    group_c = np.arange(N_CREATORS) % 2
    group_p = np.arange(N_PRODUCTS) % 2
    prob = np.where(group_c[:, None] == group_p[None, :], 0.35, 0.03)
    dense = (rng.random((N_CREATORS, N_PRODUCTS)) < prob).astype(np.float32)
    dense[np.arange(N_CREATORS), np.arange(N_CREATORS) % N_PRODUCTS] = 1.0  # nobody is empty
    return sp.csr_matrix(dense)


class RecommenderContract:
    """Mix into a test class and define `make(self) -> Recommender` (unfitted)."""

    def make(self) -> Recommender:  # pragma: no cover - overridden
        raise NotImplementedError

    @pytest.fixture(scope="class")
    def fitted(self) -> tuple[Recommender, sp.csr_matrix]:
        train = contract_matrix()
        model = self.make()
        assert model.fit(train) is model, "fit returns self"
        return model, train

    def test_score_shape(self, fitted) -> None:
        model, _ = fitted
        scores = model.score(np.array([0, 5, 7]))
        assert scores.shape == (3, N_PRODUCTS)

    def test_recommend_sorted_and_shaped(self, fitted) -> None:
        model, _ = fitted
        positions, scores = model.recommend(np.arange(10), 5)
        assert positions.shape == scores.shape == (10, 5)
        assert positions.min() >= 0 and positions.max() < N_PRODUCTS
        assert np.all(np.diff(scores, axis=1) <= 1e-6), "scores descend"
        for row in positions:
            assert len(set(row)) == 5, "no duplicates in a list"

    def test_exclude_is_respected(self, fitted) -> None:
        model, train = fitted
        creators = np.arange(N_CREATORS)
        positions, scores = model.recommend(creators, 10, exclude=train)
        seen = train.toarray().astype(bool)
        finite = np.isfinite(scores)
        assert not seen[creators[:, None], positions][finite].any()

    def test_reused_score_buffer_changes_no_list(self, fitted) -> None:
        """Batches of 30, 10 and 50 creators ranked inside `reused_scores` (one kept buffer,
        grown when a batch is larger) get the lists they get outside it."""
        model, train = fitted
        batches = (np.arange(30), np.arange(30, 40), np.arange(5, 55))
        expected = [model.recommend(rows, 7, exclude=train[rows]) for rows in batches]
        with reused_scores():
            for rows, (positions, scores) in zip(batches, expected, strict=True):
                model.recommend(rows[::-1], 7)  # leaves other scores in the buffer
                got = model.recommend(rows, 7, exclude=train[rows])
                np.testing.assert_array_equal(got[0], positions)
                np.testing.assert_array_equal(got[1], scores)

    def test_candidates_restrict_ranking(self, fitted) -> None:
        model, _ = fitted
        allowed = np.array([3, 8, 11, 30])
        positions, scores = model.recommend(np.arange(5), 3, candidates=allowed)
        assert np.isin(positions, allowed).all()

    def test_score_columns_agree_with_score(self, fitted) -> None:
        model, _ = fitted
        creators = np.array([0, 5, 7])
        full = np.asarray(model.score(creators), dtype=np.float32)
        columns = np.array([30, 3, 11, 8])
        scores, positions = model.score_columns(creators, columns)
        assert positions.tolist() == columns.tolist()
        np.testing.assert_allclose(scores, full[:, columns], rtol=1e-5, atol=1e-6)
        every, positions = model.score_columns(creators)
        assert sorted(positions[positions >= 0].tolist()) == list(range(N_PRODUCTS))
        held = positions >= 0
        np.testing.assert_allclose(every[:, held], full[:, positions[held]], rtol=1e-5, atol=1e-6)

    def test_k_larger_than_catalog_pads(self, fitted) -> None:
        model, _ = fitted
        positions, scores = model.recommend(np.array([1]), N_PRODUCTS + 5)
        assert positions.shape == (1, N_PRODUCTS + 5)
        assert np.isinf(scores[0, N_PRODUCTS:]).all()

    def test_exclude_rows_must_match(self, fitted) -> None:
        model, train = fitted
        with pytest.raises(RecommenderError, match="rows"):
            model.recommend(np.arange(3), 5, exclude=train[:2])

    def test_save_load_round_trip(self, fitted, tmp_path: Path) -> None:
        model, train = fitted
        model.save(tmp_path / "m")
        loaded = Recommender.load(tmp_path / "m")
        # the same kind; a trainer (e.g. TwoTowerTrainer) loads back as its served class
        assert loaded.kind == model.kind and isinstance(model, type(loaded))
        creators = np.arange(N_CREATORS)
        a = model.recommend(creators, 7, exclude=train)
        b = loaded.recommend(creators, 7, exclude=train)
        np.testing.assert_allclose(a[1], b[1], rtol=1e-5, atol=1e-6)
        assert (a[0] == b[0]).mean() > 0.95  # ties may swap

    def test_unfitted_is_an_error(self) -> None:
        with pytest.raises((RecommenderError, Exception)):
            self.make().score(np.array([0]))
