"""MLflow tracking helpers: names MLflow accepts, tags, nesting, resuming, the ledger."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from features.errors import HaowuError
from features.steps import StaleFolderError, StepLedger
from training.lifecycle import tracking


def test_names_mlflow_rejects_are_mapped() -> None:
    assert tracking.metric_key("cold_pop_recall@50") == "cold_pop_recall_at_50"
    flat = tracking.flatten({"gates": {"haowu-matching": {"recall@50": "higher"}}, "k": [1, 2]})
    assert flat == {"gates.haowu-matching.recall_at_50": "higher", "k": "[1, 2]"}
    numbers = tracking.numeric(
        {"a": {"coverage@50": 0.5, "name": "x", "ok": True}, "n": 3, "nan": float("nan")}
    )
    assert numbers == {"a.coverage_at_50": 0.5, "a.ok": 1.0, "n": 3.0}


def test_tags_carry_commit_fingerprint_and_preset(tiny_data: Path) -> None:
    tags = tracking.run_tags("train-tier", tiny_data)
    assert tags["haowu.preset"] == "tiny"  # from the data folder's _meta.json
    assert tags["haowu.data_fingerprint"] == tracking.data_fingerprint(tiny_data)
    assert tags["haowu.git_commit"]
    assert "haowu.data_fingerprint" not in tracking.run_tags("generate", tiny_data / "absent")


def test_fingerprint_changes_with_the_data(tiny_data: Path, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "data"
    shutil.copytree(tiny_data, copy)
    assert tracking.data_fingerprint(copy) == tracking.data_fingerprint(tiny_data)
    (copy / "brokers.parquet").unlink()
    assert tracking.data_fingerprint(copy) != tracking.data_fingerprint(tiny_data)
    shutil.rmtree(copy)
    shutil.copytree(tiny_data, copy)
    products = pd.read_parquet(copy / "products.parquet")  # same rows, another order
    products.sample(frac=1.0, random_state=0).to_parquet(copy / "products.parquet")
    assert tracking.data_fingerprint(copy) != tracking.data_fingerprint(tiny_data)


def test_job_runs_nest_under_a_resumable_parent() -> None:
    import mlflow

    with tracking.parent_run("pipeline-test", None, {"a": 1}, {"haowu.job": "p"}) as parent:
        with tracking.job_run("child", {"b": 2}) as child:
            tracking.log_metrics({"recall@50": 0.5})
    client = mlflow.MlflowClient()
    assert client.get_run(child.info.run_id).data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert client.get_run(child.info.run_id).data.metrics == {"recall_at_50": 0.5}

    with tracking.parent_run("pipeline-test", parent.info.run_id, {"a": 1}, {}) as again:
        assert again.info.run_id == parent.info.run_id
    with tracking.parent_run("pipeline-test", "f" * 32, {"a": 1}, {}) as fresh:  # unknown id
        assert fresh.info.run_id != parent.info.run_id


def test_default_store_is_sqlite_in_the_working_folder(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    monkeypatch.chdir(tmp_path)
    assert tracking.tracking_uri() == f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://tracking.example:5000")
    assert tracking.tracking_uri() == "http://tracking.example:5000"


def test_unreachable_store_is_a_clear_error(monkeypatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:1")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    with pytest.raises(tracking.TrackingError, match="127.0.0.1:1 cannot be reached"):
        tracking.configure()


def test_ledger_skips_done_steps_and_checks_identity(tmp_path: Path) -> None:
    calls: list[str] = []
    ledger = StepLedger(tmp_path / "p", layout=2, identity={"preset": "tiny"})
    assert ledger.run("a", lambda: calls.append("a") or {"n": 1}) == ({"n": 1}, False)
    assert ledger.run("a", lambda: calls.append("a") or {"n": 2}) == ({"n": 1}, True)
    with pytest.raises(RuntimeError):
        ledger.run("b", lambda: (_ for _ in ()).throw(RuntimeError("boom")))
    assert ledger.done("b") is None and calls == ["a"]

    ledger.set_meta(mlflow_run_id="r1")
    again = StepLedger(tmp_path / "p", layout=2, identity={"preset": "tiny"})
    assert again.meta["mlflow_run_id"] == "r1" and again.done("a") is not None
    with pytest.raises(StaleFolderError, match="preset='tiny'"):
        StepLedger(tmp_path / "p", layout=2, identity={"preset": "small"})
    forced = StepLedger(tmp_path / "p", force=True, layout=2, identity={"preset": "small"})
    assert forced.done("a") is None
    assert json.loads((tmp_path / "p" / ".steps" / "_layout.json").read_text())["preset"] == "small"
    assert issubclass(StaleFolderError, HaowuError)
