"""`haowu tune`: the search on a shrunken tiny marketplace, its pruning hook, the tuned
YAML read back by train-matching, and the bad input it refuses before any training."""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import optuna
import pytest
import yaml
from typer.testing import CliRunner

from cli import app
from features.settings import load_settings
from training.lifecycle import tracking
from training.matching.tune import report_epoch, run

# small towers, two epochs: a trial takes a second or two
FAST = [
    "matching.id_dim=8",
    "matching.out_dim=8",
    "matching.hidden=[16]",
    "matching.batch_size=256",
    "matching.epochs=2",
    "matching.patience=2",
    "matching.threads=1",
    "matching.als_iterations=3",
    "tune.two_tower.id_dim={type: categorical, choices: [8, 16]}",
    "tune.two_tower.out_dim={type: categorical, choices: [8, 16]}",
    "tune.two_tower.extra_negatives={type: categorical, choices: [0, 64]}",
    "tune.als.als_factors={type: categorical, choices: [8, 16]}",
]


@pytest.fixture(scope="module")
def mini_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny marketplace shrunk further (500 creators, 600 goods): EASE fits in a blink."""
    from features.synthetic import generate

    out = tmp_path_factory.mktemp("mini") / "data"
    shrink = ["data.n_creators=500", "data.n_products=600", "data.n_merchants=80"]
    generate(load_settings("tiny", overrides=[*shrink, "data.interactions=12000"]).data, out)
    return out


def _runs(parent_id: str) -> list[mlflow.entities.Run]:
    return mlflow.search_runs(
        experiment_names=[tracking.EXPERIMENT],
        filter_string=f"tags.mlflow.parentRunId = '{parent_id}'",
        output_format="list",
    )


def test_report_epoch_prunes_when_the_pruner_says_so() -> None:
    class Always(optuna.pruners.BasePruner):
        def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
            return True

    record = {"epoch": 2, "loss": 5.0, "val_recall": 0.01}
    with tracking.job_run("test-report-epoch", {}):
        keep = optuna.create_study(direction="maximize", pruner=optuna.pruners.NopPruner())
        trial = keep.ask()
        report_epoch(trial, record)  # no pruning: reported, nothing raised
        keep.tell(trial, 0.01)
        assert keep.trials[0].intermediate_values == {2: 0.01}
        pruning = optuna.create_study(direction="maximize", pruner=Always())
        with pytest.raises(optuna.TrialPruned, match="epoch 2"):
            report_epoch(pruning.ask(), record)
        # a poor curve against finished ones: the median pruner stops it
        median = optuna.create_study(
            direction="maximize",
            pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0),
        )
        for value in (0.3, 0.4):
            done = median.ask()
            report_epoch(done, {"epoch": 1, "val_recall": value})
            median.tell(done, value)
        report_epoch(median.ask(), {"epoch": 1, "val_recall": 0.5})  # above the median
        with pytest.raises(optuna.TrialPruned):
            report_epoch(median.ask(), {"epoch": 1, "val_recall": 0.05})


def test_run_prunes_logs_nested_runs_and_writes_the_tuned_yaml(
    mini_data: Path, tmp_path: Path
) -> None:
    class PruneLaterTrials(optuna.pruners.BasePruner):
        """Trial 0 runs its course; every later trial is stopped at its first epoch."""

        def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
            return trial.number >= 1

    out = tmp_path / "best.yaml"
    settings = load_settings("tiny", overrides=FAST)
    summary = run(settings, mini_data, out, trials=2, pruner=PruneLaterTrials())
    two_tower = summary["models"]["two_tower"]
    assert (two_tower["trials"], two_tower["pruned"]) == (2, 1)
    assert summary["models"]["als"]["trials"] == summary["models"]["ease"]["trials"] == 2
    assert 0 < two_tower["val_recall@50"] <= 1 and 0 < summary["ratio"]
    assert set(summary["models"]) == {"two_tower", "als", "ease"}

    doc = yaml.safe_load(out.read_text())
    assert doc["matching"] == two_tower["settings"]
    assert set(doc["matching"]) == set(settings.tune.two_tower)
    assert doc["tuned_on"]["data"] == str(mini_data.resolve())
    assert "category_pref" in doc["tuned_on"]["columns"]["creators"]

    parent = mlflow.search_runs(
        experiment_names=[tracking.EXPERIMENT],
        filter_string="tags.`haowu.job` = 'tune'",
        order_by=["start_time DESC"],
        output_format="list",
    )[0]
    assert parent.data.metrics["models.two_tower.val_recall_at_50"] == pytest.approx(
        two_tower["val_recall@50"]
    )
    assert parent.data.params["best.two_tower.lr"] == str(doc["matching"]["lr"])
    trials = {
        (r.data.tags["haowu.tune.model"], r.data.tags["haowu.tune.trial"]): r
        for r in _runs(parent.info.run_id)
    }
    assert len(trials) == 6
    assert trials[("two_tower", "1")].data.tags["haowu.tune.state"] == "pruned"
    curve = mlflow.MlflowClient().get_metric_history(
        trials[("two_tower", "0")].info.run_id, "val_recall"
    )
    assert [m.step for m in curve] == [1, 2]
    # trial 1 was pruned, so trial 0 is the best: its run holds the YAML's values
    assert trials[("two_tower", "0")].data.params["matching.lr"] == str(doc["matching"]["lr"])


def test_cli_tunes_two_trials_and_train_matching_reads_the_yaml(
    mini_data: Path, tmp_path: Path
) -> None:
    best = tmp_path / "best.yaml"
    args = ["tune", "--data", str(mini_data), "--preset", "tiny", "--trials", "2"]
    args += ["--out", str(best)]
    for item in FAST:
        args += ["--set", item]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert "| two_tower | 2 |" in result.output and "| als | 2 |" in result.output
    assert "two-tower / best of ALS, EASE on test recall@50" in result.output
    tuned = yaml.safe_load(best.read_text())["matching"]

    cfg = load_settings("tiny", config_file=best)
    for key, value in tuned.items():
        assert getattr(cfg.matching, key) == value

    run_dir = tmp_path / "run"
    train = ["train-matching", "--data", str(mini_data), "--out", str(run_dir), "--preset", "tiny"]
    train += ["--config", str(best), "--set", "matching.epochs=1", "--set", "matching.threads=1"]
    for item in ("protocols=[random]", "baselines=[pop]", "refit_all=false"):
        train += ["--set", f"matching.{item}"]
    result = CliRunner().invoke(app, train)
    assert result.exit_code == 0, result.output + repr(result.exception)
    used = yaml.safe_load((run_dir / "config.yaml").read_text())["matching"]
    assert {key: used[key] for key in tuned} == tuned


def test_train_matching_refuses_a_tuned_file_for_other_columns(
    mini_data: Path, tmp_path: Path
) -> None:
    """A file tuned on an ID-only log names no side columns; this data has them."""
    tuned = tmp_path / "id_only.yaml"
    tuned_on = {"data": "lastfm", "columns": {"creators": [], "products": []}}
    tuned_on |= {"metric": "val recall@20", "value": 0.3, "trials": 5}
    tuned.write_text(yaml.safe_dump({"matching": {"lr": 0.002}, "tuned_on": tuned_on}))
    out = tmp_path / "run"
    args = ["train-matching", "--data", str(mini_data), "--out", str(out), "--preset", "tiny"]
    result = CliRunner().invoke(app, [*args, "--config", str(tuned)])
    assert result.exit_code == 1
    assert "--config was tuned on lastfm, whose columns differ" in result.output
    assert (
        "creators adds account_age_days, broker_id, category_pref, fans_female_share and 3 more"
        in result.output
    )
    assert "Traceback" not in result.output
    assert not out.exists() and not list(tmp_path.glob(".run.*"))


def _unsplittable_log(folder: Path) -> Path:
    """A Last.fm-format log where every user has one pair: nothing to hold out."""
    folder.mkdir()
    (folder / "train.txt").write_text("".join(f"{u}\t{u}\t3\n" for u in range(1, 30)))
    (folder / "test.txt").write_text("".join(f"{u}\t{u + 1}\t1\n" for u in range(1, 30)))
    return folder


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--trials", "0"], "--trials 0: a tuning budget needs at least 1 trial"),
        (["--minutes", "0"], "--minutes 0: a tuning budget needs more than 0 minutes"),
        (
            ["--set", "tune.two_tower.learning_rate={type: float, low: 0.001, high: 0.01}"],
            "tune.two_tower.learning_rate: 'learning_rate' is not a matching setting",
        ),
        (
            ["--set", "tune.two_tower.temperature={type: float, low: 0.05, high: 2.0}"],
            "tune.two_tower.temperature: 2.0 is not a valid matching.temperature",
        ),
        (["--log", "UNSPLIT"], "random split: empty test set (no creator has >= 2"),
    ],
    ids=["trials-0", "minutes-0", "unknown-key", "out-of-range", "unsplittable-log"],
)
def test_bad_input_is_one_line_and_writes_nothing(
    mini_data: Path, tmp_path: Path, extra: list[str], message: str
) -> None:
    out = tmp_path / "tune" / "best.yaml"
    if extra == ["--log", "UNSPLIT"]:
        source = ["--log", f"toy=lastfm:{_unsplittable_log(tmp_path / 'toy')}"]
        extra = []
    else:
        source = ["--data", str(mini_data)]
    before = len(mlflow.search_runs(experiment_names=[tracking.EXPERIMENT], output_format="list"))
    args = ["tune", *source, "--preset", "tiny", "--out", str(out), *extra]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], result.output
    assert "Traceback" not in result.output and not result.output.rstrip().endswith(":")
    assert not out.parent.exists()
    after = len(mlflow.search_runs(experiment_names=[tracking.EXPERIMENT], output_format="list"))
    assert after == before  # no MLflow run either


def test_tune_needs_exactly_one_source(mini_data: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["tune", "--preset", "tiny"])
    assert result.exit_code == 1 and "give one of --data DIR or --log" in result.output
    both = ["tune", "--data", str(mini_data), "--log", "x=lastfm:/nowhere", "--preset", "tiny"]
    result = CliRunner().invoke(app, both)
    assert result.exit_code == 1 and "give one of --data DIR or --log" in result.output


def test_a_log_without_times_does_not_search_the_history_order(tmp_path: Path) -> None:
    from training.matching.quality import LogSpec

    rng = np.random.default_rng(0)  # 80 users in 4 blocks of 15 goods, 6 goods each
    rows = [
        f"{u + 1}\t{(u // 20) * 15 + g + 1}\t3"
        for u in range(80)
        for g in rng.choice(15, 6, replace=False)
    ]
    log_dir = tmp_path / "log"
    log_dir.mkdir()
    (log_dir / "train.txt").write_text("\n".join(r for i, r in enumerate(rows) if i % 6) + "\n")
    (log_dir / "test.txt").write_text("\n".join(r for i, r in enumerate(rows) if not i % 6))
    settings = load_settings("tiny", overrides=FAST)
    assert "history_half_life" in settings.tune.two_tower  # searched where there are times
    out = tmp_path / "best.yaml"
    run(settings, LogSpec.parse(f"toy=lastfm:{log_dir}"), out, trials=1)
    tuned = yaml.safe_load(out.read_text())["matching"]
    assert "history_half_life" not in tuned and "history_dropout" in tuned
