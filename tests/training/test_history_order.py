"""`history_half_life: auto`: an item-kNN probe on the validation decides whether the
history is read in time order."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from features.settings import load_settings
from training.evaluation.evaluate import EvalTask
from training.matching.history_order import goods_since, resolve_half_life
from training.matching.quality import LogSpec, run_quality
from training.matching.two_tower_fit import TwoTowerTrainer

N_ITEMS, LENGTH = 60, 8


def _walks(users: int = 120, seed: int = 0) -> np.ndarray:
    """(users, LENGTH) goods in the order taken: each user walks a stretch of a ring of
    goods, one step at a time, so the good after the last one is the next on the ring."""
    start = np.random.default_rng(seed).integers(0, N_ITEMS, users)
    return (start[:, None] + np.arange(LENGTH)[None, :]) % N_ITEMS


def _probe_inputs(held_out: np.ndarray):
    """Training pairs, the validation task (one held-out step per user: column
    `held_out[u]` of its walk) and the pairs' times (the step of the walk)."""
    walks = _walks()
    users = np.arange(len(walks))
    step = np.tile(np.arange(LENGTH), len(walks))
    user = np.repeat(users, LENGTH)
    good = walks.ravel()
    val = step == held_out[user]
    shape = (len(walks), N_ITEMS)
    train = sp.csr_matrix((np.ones((~val).sum()), (user[~val], good[~val])), shape=shape)
    truth = sp.csr_matrix((np.ones(val.sum()), (user[val], good[val])), shape=shape)
    when = np.zeros(shape)
    when[user, good] = step

    def pair_times(rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        return when[rows, cols]

    return train, EvalTask("val", users, truth, train), pair_times


def _cfg(half_life: object = "auto"):
    return load_settings(
        "tiny",
        overrides=[f"matching.history_half_life={half_life}", "matching.early_stop_k=1"],
    ).matching


def test_goods_since_counts_the_later_goods_of_each_row() -> None:
    history = sp.csr_matrix(np.array([[1, 1, 1, 0], [0, 1, 0, 1]], dtype=np.float32))
    # row 0: goods 0, 1, 2 taken at 5, 9, 1; row 1: goods 1, 3 at 2, 0
    assert goods_since(history, np.array([5.0, 9.0, 1.0, 2.0, 0.0])).tolist() == [1, 0, 2, 0, 1]


def test_a_log_whose_next_good_follows_the_last_reads_its_order() -> None:
    train, val, times = _probe_inputs(np.full(120, LENGTH - 1))  # the latest step held out
    train.data = train.data.astype(np.float32)  # as Interactions.csr() makes it
    resolved = resolve_half_life(_cfg(), train, val, times)[0]
    assert resolved.history_half_life in (2.0, 8.0)
    assert (train.data == 1).all()  # the probe weighs its own copy, not the training pairs


def test_a_random_share_held_out_keeps_the_mean() -> None:
    held = np.random.default_rng(1).integers(1, LENGTH - 1, 120)  # a middle step held out
    train, val, times = _probe_inputs(held)
    assert resolve_half_life(_cfg(), train, val, times)[0].history_half_life == 0.0


def test_auto_without_times_or_validation_is_a_mean_and_numbers_pass_through() -> None:
    train, val, times = _probe_inputs(np.full(120, LENGTH - 1))
    assert resolve_half_life(_cfg(), train, val, None)[0].history_half_life == 0.0
    empty = EvalTask("val", np.array([], dtype=np.int64), val.truth, train)
    assert resolve_half_life(_cfg(), train, empty, times)[0].history_half_life == 0.0
    assert resolve_half_life(_cfg(4), train, val, times)[0].history_half_life == 4.0


def test_the_trainer_refuses_an_undecided_half_life_where_there_are_times() -> None:
    train, val, times = _probe_inputs(np.full(120, LENGTH - 1))
    timed = TwoTowerTrainer(_cfg(), progress=False)
    timed.pair_times = times
    with pytest.raises(ValueError, match="auto is decided on a validation"):
        timed.fit(train)
    untimed = TwoTowerTrainer(_cfg().model_copy(update={"epochs": 1}), progress=False)
    assert untimed.fit(train).cfg.history_half_life == 0.0  # no times: a mean, saved as 0


def test_the_job_trains_and_reports_the_half_life_its_validation_chose() -> None:
    """A protocol whose validation is each creator's next good: the job probes, trains at
    the chosen half-life, and says so in its metrics and notes."""
    from features.matching_data import IdIndex, Interactions
    from training.evaluation.splits import Split
    from training.matching.job import MatchingJob

    walks = _walks()
    step = np.tile(np.arange(LENGTH), len(walks))
    user = np.repeat(np.arange(len(walks)), LENGTH)
    ids = IdIndex(np.arange(len(walks))), IdIndex(np.arange(N_ITEMS))
    inter = Interactions(*ids, user, walks.ravel(), step.astype(np.int64), len(user))
    fast = ["matching.id_dim=8", "matching.hidden=[16]", "matching.out_dim=8", "matching.epochs=1"]
    job = MatchingJob.from_interactions(
        load_settings("tiny", overrides=[*fast, "matching.early_stop_k=1"]), inter
    )
    split = Split("random", step < LENGTH - 2, step == LENGTH - 2, step == LENGTH - 1)
    model = job.run_protocol(split)
    assert model.cfg.history_half_life in (2.0, 8.0)
    assert job.metrics()["history_half_life"] == model.cfg.history_half_life
    assert job.order_notes["random"].startswith(
        f"history_half_life auto: {model.cfg.history_half_life:g} ("
    )


def test_the_quality_bench_trains_a_sequence_log_in_its_order(tmp_path: Path) -> None:
    """Through `bench quality`: a sequence log (beauty format: time order, next good as the
    test) gets a half-life; the same walks without order (lastfm format) get the mean."""
    walks = _walks()
    beauty, lastfm = tmp_path / "seq", tmp_path / "bag"
    beauty.mkdir(), lastfm.mkdir()
    train = [f"{u + 1}:" + " ".join(str(g + 1) for g in walk[:-1]) for u, walk in enumerate(walks)]
    (beauty / "train.txt").write_text("\n".join(train) + "\n")
    (beauty / "test.txt").write_text("\n".join(f"{u + 1}:{w[-1] + 1}" for u, w in enumerate(walks)))
    rows = [f"{u + 1}\t{g + 1}\t1" for u, walk in enumerate(walks) for g in walk[:-1]]
    (lastfm / "train.txt").write_text("\n".join(rows) + "\n")
    (lastfm / "test.txt").write_text(
        "\n".join(f"{u + 1}\t{w[-1] + 1}\t1" for u, w in enumerate(walks))
    )
    fast = ["matching.id_dim=8", "matching.hidden=[16]", "matching.out_dim=8", "matching.epochs=1"]
    settings = load_settings("tiny", overrides=[*fast, "matching.early_stop_k=1"])
    specs = [LogSpec.parse(f"seq=beauty:{beauty}"), LogSpec.parse(f"bag=lastfm:{lastfm}")]
    record = run_quality(specs, settings, models=["two_tower"])
    assert "half-life" in record["seq"]["models"]["two_tower"]["setting"]
    assert "half-life" not in record["bag"]["models"]["two_tower"]["setting"]


def test_the_pipeline_summary_shows_a_chosen_time_order() -> None:
    from training.pipeline.summary import _matching, format_summary

    metrics = {"recall@50": 0.3, "history_half_life": 2.0, "time_history_half_life": 0.0}
    text = format_summary({"matching": _matching(metrics)})
    assert "history in time order (random)    half-life 2 goods" in text
    assert "(time)" not in text  # a mean is the usual case: no line
    assert "history in time order" not in format_summary(
        {"matching": _matching({"recall@50": 0.3})}
    )
