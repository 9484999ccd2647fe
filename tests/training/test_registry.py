"""The promotion gate: first model becomes champion, better replaces, worse is refused."""

from __future__ import annotations

import json
import re
import threading

import pytest

from features.errors import HaowuError
from features.settings import RegistryConfig
from training.lifecycle import promotion, tracking
from training.lifecycle.promotion import HISTORY_TAG, PromotionRefused, promote, rollback

NAME = "haowu-gate-test"
CFG = RegistryConfig(gates={NAME: {"recall@50": "higher"}}, tolerance=0.01)


def _register(recall: float, fingerprint: str = "fp-a", name: str = NAME) -> str:
    import mlflow

    class Echo(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input, params=None):  # noqa: ARG002
            return model_input

    with tracking.job_run(
        "gate-test", {"recall": recall}, tags={"haowu.data_fingerprint": fingerprint}
    ) as run:
        tracking.log_metrics({"recall@50": recall})
        mlflow.pyfunc.log_model(name="model", python_model=Echo(), registered_model_name=name)
    return run.info.run_id


@pytest.fixture(scope="module")
def runs() -> dict[str, str]:
    return {
        "first": _register(0.30),
        "better": _register(0.35),
        "within_tolerance": _register(0.345),
        "worse": _register(0.20),
        "other_data": _register(0.90, fingerprint="fp-b"),
    }


def test_gate_sequence(runs: dict[str, str]) -> None:
    first = promote(NAME, runs["first"], CFG)
    assert first.previous is None and first.version == "1"

    better = promote(NAME, runs["better"], CFG)
    assert better.previous == "1" and better.version == "2"
    assert all(row.passed for row in better.rows)

    tolerated = promote(NAME, runs["within_tolerance"], CFG)
    assert tolerated.version == "3"

    with pytest.raises(PromotionRefused, match="worse") as refused:
        promote(NAME, runs["worse"], CFG)
    assert "recall@50" in refused.value.table and "WORSE" in refused.value.table

    with pytest.raises(PromotionRefused, match="fingerprint"):
        promote(NAME, runs["other_data"], CFG)

    with pytest.raises(HaowuError, match="--reason"):
        promote(NAME, runs["worse"], CFG, force=True)
    forced = promote(NAME, runs["worse"], CFG, force=True, reason="hotfix for a broken feature")
    assert forced.forced and forced.version == "4"

    assert rollback(NAME, CFG) == ("4", "3")
    assert rollback(NAME, CFG) == ("3", "2")


def test_unknown_run_is_a_clear_error() -> None:
    with pytest.raises(HaowuError, match="does not exist"):
        promote(NAME, "0" * 32, CFG)


def test_rollback_without_history() -> None:
    with pytest.raises(HaowuError, match="no registered model"):
        rollback("haowu-never-registered", CFG)


def test_cli_refusal_prints_the_side_by_side_table(runs: dict[str, str]) -> None:
    """After test_gate_sequence: champion v2 (recall 0.35); the worse run is refused."""
    from typer.testing import CliRunner

    from cli import app

    args = [
        "promote",
        "--model",
        NAME,
        "--run",
        runs["worse"],
        "--set",
        f"registry.gates={{{NAME}: {{'recall@50': higher}}}}",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 3  # a refusal is a verdict, not an error (1)
    assert "promotion refused" in result.output
    assert re.search(r"recall@50\s+0\.3500\s+0\.2000\s+-0\.1500\s+WORSE", result.output)

    result = CliRunner().invoke(app, ["rollback", "--model", NAME])
    assert result.exit_code == 0 and "champion v2 -> v1" in result.output


def test_unreachable_registry_fails_fast(monkeypatch) -> None:
    import time

    from typer.testing import CliRunner

    from cli import app

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:1")
    start = time.perf_counter()
    result = CliRunner().invoke(app, ["promote", "--model", NAME, "--run", "0" * 32])
    assert result.exit_code == 1
    assert "http://127.0.0.1:1 cannot be reached" in result.output
    assert time.perf_counter() - start < 30  # MLflow's own defaults retry for minutes


def test_concurrent_promotions_keep_every_change(monkeypatch: pytest.MonkeyPatch) -> None:
    """The champion history is read, changed and written back: a second promote that
    runs while the first is between its read and its write must wait for it, not write
    its change over (the lost update left history ['1'] and champion v1)."""
    from mlflow import MlflowClient

    name = "haowu-lock-test"
    cfg = RegistryConfig(gates={name: {"recall@50": "higher"}}, tolerance=0.01)
    first_run, second_run = _register(0.3, name=name), _register(0.31, name=name)
    paused, release = threading.Event(), threading.Event()
    real = promotion._set_champion

    def slow(client, model, version, alias, history) -> None:  # type: ignore[no-untyped-def]
        if version == "1":
            paused.set()
            assert release.wait(30)
        real(client, model, version, alias, history)

    monkeypatch.setattr(promotion, "_set_champion", slow)
    errors: list[BaseException] = []

    def call(run_id: str) -> None:
        try:
            promote(name, run_id, cfg)
        except BaseException as exc:  # reported below
            errors.append(exc)

    first = threading.Thread(target=call, args=(first_run,))
    first.start()
    assert paused.wait(30)
    second = threading.Thread(target=call, args=(second_run,))
    second.start()
    second.join(2.0)  # unlocked, it finishes here on the history it read
    release.set()
    first.join(30)
    second.join(30)
    assert not errors, errors
    client = MlflowClient()
    assert json.loads(client.get_registered_model(name).tags[HISTORY_TAG]) == ["1", "2"]
    assert str(client.get_model_version_by_alias(name, cfg.champion_alias).version) == "2"


@pytest.mark.parametrize(
    ("model", "run", "message"),
    [
        ("haowu'matching", "0" * 32, "a registered model name is letters"),
        (NAME, "abc' or '1'='1", "not an MLflow run ID"),
    ],
)
def test_names_that_would_break_a_filter_are_refused(model: str, run: str, message: str) -> None:
    with pytest.raises(HaowuError, match=message):
        promote(model, run, CFG)


def test_stores_that_cannot_be_used_are_one_line_errors(tmp_path, monkeypatch) -> None:
    """A missing folder, a corrupt file: one line naming the store; a read-only command
    never creates one; a password in the URI is never printed."""
    from models.artifacts import ArtifactError, masked, open_matching_run

    assert masked("http://ana:s3cret@tracking:5000") == "http://ana:***@tracking:5000"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/absent/mlflow.db")
    with pytest.raises(tracking.TrackingError, match="does not exist"):
        tracking.configure()
    assert not (tmp_path / "absent").exists()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/none.db")
    with pytest.raises(ArtifactError, match="no MLflow store at"):
        open_matching_run("models:/haowu-matching@champion")
    assert not (tmp_path / "none.db").exists()
    corrupt = tmp_path / "corrupt.db"
    corrupt.write_bytes(b"not a database" * 100)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{corrupt}")
    with pytest.raises(tracking.TrackingError, match="cannot be opened"):
        tracking.configure()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://ana:s3cret@127.0.0.1:1")
    with pytest.raises(tracking.TrackingError) as refused:
        tracking.configure()
    assert "s3cret" not in str(refused.value) and "ana:***@" in str(refused.value)
