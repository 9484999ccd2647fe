import pytest

from training.matching.verdict import from_metrics, verdict


def test_winner_and_ratio_against_the_best_baseline_not_the_oracle() -> None:
    v = verdict(
        "random", "val_recall@50", {"two_tower": 0.2, "als": 0.25, "pop": 0.1, "oracle": 0.9}
    )
    assert v is not None and (v.winner, v.best_baseline) == ("als", "als")
    assert v.ratio == pytest.approx(0.8)
    assert "als won on validation val_recall@50" in v.line() and "(0.80x)" in v.line()
    v = verdict("random", "m", {"two_tower": 0.3, "als": 0.25})
    assert v is not None and v.winner == "two_tower" and v.ratio == pytest.approx(1.2)


def test_no_verdict_without_both_sides() -> None:
    assert verdict("random", "m", {"two_tower": 0.3, "oracle": 0.5}) is None
    assert verdict("random", "m", {"als": 0.3}) is None


def test_read_back_from_flat_metrics_per_protocol() -> None:
    metrics = {"val_recall@20": 0.3, "als_val_recall@20": 0.2, "recall@20": 0.9}
    metrics |= {"time_val_recall@20": 0.1, "time_ease_val_recall@20": 0.2}
    models = ("two_tower", "als", "ease")
    random_ = from_metrics(metrics, "random", models)
    time_ = from_metrics(metrics, "time", models)
    assert (
        random_ is not None
        and random_.winner == "two_tower"
        and random_.ratio == pytest.approx(1.5)
    )
    assert time_ is not None and time_.winner == "ease" and time_.ratio == pytest.approx(0.5)
    assert from_metrics({"recall@20": 0.9}, "random", models) is None
