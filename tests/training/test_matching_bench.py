from features.settings import load_settings
from training.matching.bench import bench_epoch, check_targets


def test_targets_report_ratio_and_verdict() -> None:
    out = check_targets({"recall@50": 0.2, "als_recall@50": 0.25, "pop_recall@50": 0.05})
    assert (
        out["recall@50 / als_recall@50"].startswith("0.800")
        and "MISS" in out["recall@50 / als_recall@50"]
    )
    assert "PASS" in out["recall@50 / pop_recall@50"]
    assert not any("oracle" in key for key in out)  # no oracle metric, no line


def test_epoch_bench_times_steps_with_and_without_history() -> None:
    for history in ("true", "false"):
        cfg = load_settings("tiny", overrides=[f"matching.creator_history={history}"])
        out = bench_epoch(cfg, steps=2)
        assert out["seconds_per_step"] > 0 and out["steps_timed"] == 2
        assert out["epoch_seconds_estimate"] > out["seconds_per_step"]
