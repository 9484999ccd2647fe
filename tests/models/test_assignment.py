"""Capacity-limited assignment: feasibility, optimality, pruning, greedy gap, bad input."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import Bounds, LinearConstraint, milp

from models.brokers.assignment import (
    candidate_pairs,
    check_feasible,
    random_feasible,
    solve_exact,
    solve_greedy,
    total_value,
)

SOLVERS = {
    "exact": solve_exact,
    "greedy": solve_greedy,
    "random": lambda v, c, p: random_feasible(v, c, p, np.random.default_rng(0)),
}


def _instance(n_c: int, n_p: int, seed: int, cap_c: int = 3, cap_p: int = 2):
    rng = np.random.default_rng(seed)
    taste = rng.normal(size=(n_c, 8)) @ rng.normal(size=(8, n_p)) / np.sqrt(8)
    values = np.exp(taste) * rng.lognormal(0, 0.5, size=n_p)  # (n_c, n_p), > 0
    return values, np.full(n_c, cap_c), np.full(n_p, cap_p)


def _brute_force(values: np.ndarray, creator_cap: np.ndarray, product_cap: np.ndarray) -> float:
    """Best total over every subset of positive pairs (tiny instances only)."""
    pairs = [(i, j) for i, j in zip(*np.nonzero(values > 0), strict=True)]
    best = 0.0
    for mask in itertools.product((0, 1), repeat=len(pairs)):
        chosen = [p for p, m in zip(pairs, mask, strict=True) if m]
        rows = np.array([i for i, _ in chosen], dtype=np.int64)
        cols = np.array([j for _, j in chosen], dtype=np.int64)
        if (np.bincount(rows, minlength=len(creator_cap)) <= creator_cap).all() and (
            np.bincount(cols, minlength=len(product_cap)) <= product_cap
        ).all():
            best = max(best, float(values[rows, cols].sum()) if chosen else 0.0)
    return best


def test_hand_made_instance_exact_beats_greedy() -> None:
    # Greedy grabs the 5 and is left with nothing; the optimum pairs 4 + 4 = 8.
    values = np.array([[5.0, 4.0], [4.0, 0.0]])
    caps = np.ones(2, dtype=np.int64)
    rows, cols = solve_exact(values, caps, caps)
    assert sorted(zip(rows.tolist(), cols.tolist(), strict=True)) == [(0, 1), (1, 0)]
    assert total_value(values, (rows, cols)) == 8.0
    assert total_value(values, solve_greedy(values, caps, caps)) == 5.0


def test_hand_made_instance_with_capacities() -> None:
    # Creator 0 takes two goods, creator 1 one, each good goes to one creator.
    # Greedy: (0,0) 10, then (0,1) 9 -> 19, creator 1 left empty-handed.
    # Optimum: creator 1 gets good 0 (9.5), creator 0 goods 1 and 2 (9 + 1) -> 19.5.
    values = np.array(
        [
            [10.0, 9.0, 1.0],
            [9.5, 0.0, 0.0],
        ]
    )
    creator_cap, product_cap = np.array([2, 1]), np.array([1, 1, 1])
    rows, cols = solve_exact(values, creator_cap, product_cap)
    assert sorted(zip(rows.tolist(), cols.tolist(), strict=True)) == [(0, 1), (0, 2), (1, 0)]
    assert total_value(values, (rows, cols)) == pytest.approx(19.5)
    assert _brute_force(values, creator_cap, product_cap) == pytest.approx(19.5)
    assert total_value(values, solve_greedy(values, creator_cap, product_cap)) == pytest.approx(
        19.0
    )


@pytest.mark.parametrize("seed", range(6))
def test_exact_matches_brute_force(seed: int) -> None:
    rng = np.random.default_rng(seed)
    values = np.round(rng.uniform(-1, 5, size=(3, 4)), 1)
    values[values < 0.5] = 0.0  # some pairs worth nothing
    creator_cap, product_cap = rng.integers(0, 3, size=3), rng.integers(1, 3, size=4)
    exact = solve_exact(values, creator_cap, product_cap)
    check_feasible(exact, creator_cap, product_cap)
    assert total_value(values, exact) == pytest.approx(
        _brute_force(values, creator_cap, product_cap)
    )


@given(
    n_c=st.integers(1, 12),
    n_p=st.integers(1, 12),
    cap_c=st.integers(0, 4),
    cap_p=st.integers(0, 4),
    seed=st.integers(0, 10_000),
)
@settings(max_examples=60, deadline=None)
def test_capacities_never_exceeded(n_c: int, n_p: int, cap_c: int, cap_p: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    values = rng.normal(size=(n_c, n_p))  # negatives must never be taken
    creator_cap = rng.integers(0, cap_c + 1, size=n_c)
    product_cap = rng.integers(0, cap_p + 1, size=n_p)
    results = {name: solve(values, creator_cap, product_cap) for name, solve in SOLVERS.items()}
    for rows, cols in results.values():
        check_feasible((rows, cols), creator_cap, product_cap)
        assert (values[rows, cols] > 0).all()
    exact = total_value(values, results["exact"])
    assert exact >= total_value(values, results["greedy"]) - 1e-9
    assert exact >= total_value(values, results["random"]) - 1e-9


def _reference_exact(values, creator_cap, product_cap) -> float:
    """The integer programme over every positive pair, no pruning."""
    rows, cols = np.nonzero(values > 0)
    n = len(rows)
    a = np.zeros((len(creator_cap) + len(product_cap), n))
    a[rows, np.arange(n)] = 1
    a[len(creator_cap) + cols, np.arange(n)] = 1
    caps = np.concatenate([creator_cap, product_cap])
    res = milp(
        -values[rows, cols],
        constraints=LinearConstraint(a, -np.inf, caps),
        integrality=np.ones(n),
        bounds=Bounds(0, 1),
    )
    return float(-res.fun)


def _reference_greedy(values, creator_cap, product_cap) -> float:
    c_left, p_left, total = creator_cap.copy(), product_cap.copy(), 0.0
    for flat in np.argsort(-values, axis=None, kind="stable"):
        i, j = np.unravel_index(flat, values.shape)
        if values[i, j] > 0 and c_left[i] and p_left[j]:
            c_left[i] -= 1
            p_left[j] -= 1
            total += values[i, j]
    return total


@given(
    seed=st.integers(0, 10_000),
    cap_c=st.integers(1, 5),
    cap_p=st.integers(1, 4),
    wide=st.booleans(),
)
@settings(max_examples=30, deadline=None)
def test_pruning_keeps_the_optimum_and_the_greedy_result(
    seed: int, cap_c: int, cap_p: int, wide: bool
) -> None:
    shape = (6, 40) if wide else (40, 6)
    values, creator_cap, product_cap = _instance(*shape, seed, cap_c, cap_p)
    exact = total_value(values, solve_exact(values, creator_cap, product_cap))
    assert exact == pytest.approx(_reference_exact(values, creator_cap, product_cap))
    greedy = total_value(values, solve_greedy(values, creator_cap, product_cap))
    assert greedy == pytest.approx(_reference_greedy(values, creator_cap, product_cap))


def test_pruning_shrinks_a_wide_instance() -> None:
    values, creator_cap, product_cap = _instance(20, 2000, 1, cap_c=5, cap_p=3)
    rows, _ = candidate_pairs(values, creator_cap, product_cap)
    assert len(rows) < values.size / 10


@pytest.mark.parametrize("shape", [(30, 60), (75, 300), (200, 120)])
def test_greedy_within_five_percent_of_exact(shape: tuple[int, int]) -> None:
    values, creator_cap, product_cap = _instance(*shape, seed=shape[0], cap_c=10, cap_p=3)
    exact = total_value(values, solve_exact(values, creator_cap, product_cap))
    greedy = total_value(values, solve_greedy(values, creator_cap, product_cap))
    assert greedy <= exact + 1e-9
    assert greedy >= 0.95 * exact


def test_random_feasible_is_maximal_and_seeded() -> None:
    values, creator_cap, product_cap = _instance(10, 30, 3)
    a = random_feasible(values, creator_cap, product_cap, np.random.default_rng(5))
    b = random_feasible(values, creator_cap, product_cap, np.random.default_rng(5))
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    rows, cols = a
    used = np.zeros_like(values, dtype=bool)
    used[rows, cols] = True
    room_c = np.bincount(rows, minlength=10) < creator_cap
    room_p = np.bincount(cols, minlength=30) < product_cap
    assert not (room_c[:, None] & room_p[None, :] & ~used).any(), "a pair could still be added"


def test_output_sorted_by_creator_then_value() -> None:
    values, creator_cap, product_cap = _instance(8, 20, 4)
    rows, cols = solve_exact(values, creator_cap, product_cap)
    assert (np.diff(rows) >= 0).all()
    for i in np.unique(rows):
        v = values[i, cols[rows == i]]
        assert (np.diff(v) <= 0).all()


@pytest.mark.parametrize("solve", list(SOLVERS.values()), ids=list(SOLVERS))
def test_empty_instances(solve) -> None:
    for shape in [(0, 5), (5, 0), (0, 0)]:
        rows, cols = solve(np.ones(shape), np.ones(shape[0], int), np.ones(shape[1], int))
        assert len(rows) == len(cols) == 0
    rows, _ = solve(np.zeros((3, 3)), np.ones(3, int), np.ones(3, int))
    assert len(rows) == 0  # nothing worth assigning


@pytest.mark.parametrize(
    ("values", "creator_cap", "product_cap", "match"),
    [
        (np.ones(3), np.ones(3, int), np.ones(3, int), "2-d"),
        (np.ones((2, 3)), np.ones(3, int), np.ones(3, int), r"creator_cap must have shape \(2,\)"),
        (np.ones((2, 3)), np.ones(2, int), np.ones(2, int), r"product_cap must have shape \(3,\)"),
        (np.ones((2, 3)), np.array([1, -1]), np.ones(3, int), "creator_cap must be >= 0"),
        (np.ones((2, 3)), np.ones(2, int), np.array([1.5, 1, 1]), "product_cap must hold integers"),
        (np.full((2, 3), np.nan), np.ones(2, int), np.ones(3, int), "NaN"),
    ],
)
def test_bad_input_is_a_clear_error(values, creator_cap, product_cap, match: str) -> None:
    for solve in SOLVERS.values():
        with pytest.raises(ValueError, match=match):
            solve(values, creator_cap, product_cap)


def test_check_feasible_catches_violations() -> None:
    caps = np.array([1, 1])
    with pytest.raises(ValueError, match="capacity exceeded"):
        check_feasible((np.array([0, 0]), np.array([0, 1])), caps, caps)
    with pytest.raises(ValueError, match="repeats"):
        check_feasible((np.array([0, 0]), np.array([1, 1])), np.array([2, 2]), np.array([2, 2]))
