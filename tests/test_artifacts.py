"""The artifact contract end to end: every reader opens run folders, registry URIs and
pipeline folders the same way, and a registered model loads in a fresh interpreter."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from cli import app
from models.artifacts import ArtifactError, job_inputs, open_matching_run, open_tier_run

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("features", "models", "training", "serving")


def test_artifact_file_names_are_defined_once() -> None:
    """`"creator_ids.npy"` and its siblings are spelled in models/artifacts.py alone."""
    names = ["creator_ids.npy", "product_ids.npy", "tiers.parquet", "run.json", "_SUCCESS",
             "metrics.json", "history.json", "summary.json", "matches.parquet"]  # fmt: skip
    found: dict[str, list[str]] = {name: [] for name in names}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            text = path.read_text()
            for name in names:
                if f'"{name}"' in text:
                    found[name].append(str(path.relative_to(ROOT)))
    for name, files in found.items():
        assert files == ["models/artifacts.py"], f"{name!r} spelled in {files}"
    assert '"creator_ids.npy"' not in (ROOT / "cli.py").read_text()


def _env(uri: str) -> dict[str, str]:
    return {**os.environ, "MLFLOW_TRACKING_URI": uri}


FRESH = """
import json, sys
import mlflow
import numpy as np
import pandas as pd
matching = mlflow.pyfunc.load_model("models:/haowu-matching@champion")
tier = mlflow.pyfunc.load_model("models:/haowu-tier@champion")
creators = pd.DataFrame({"creator_id": json.loads(sys.argv[1])})
lists = matching.predict(creators, params={"k": 5})
tiers = tier.predict(tier.input_example)
print(json.dumps({"rows": len(lists), "creators": lists["creator_id"].nunique(),
                  "tiers": tiers["tier"].tolist()}))
"""


def test_registered_models_load_and_predict_in_a_fresh_interpreter(tiny_pipeline) -> None:
    creators = open_matching_run(tiny_pipeline.root / "matching").creators.ids[:3].tolist()
    out = subprocess.run(
        [sys.executable, "-c", FRESH, json.dumps(creators)],
        env=_env(tiny_pipeline.tracking_uri),
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tiny_pipeline.root,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["rows"] == 15 and got["creators"] == 3
    assert got["tiers"] and set(got["tiers"]) <= set(range(6))


def _lists(folder: Path) -> pd.DataFrame:
    return pd.read_parquet(folder).sort_values(["creator_id", "rank"]).reset_index(drop=True)


def test_recommend_reads_the_champion_and_the_pipeline_folder(
    tiny_pipeline, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tiny_pipeline.tracking_uri)
    monkeypatch.setenv("HAOWU_CACHE", str(tmp_path / "cache"))
    root, runner = tiny_pipeline.root, CliRunner()
    sets = [a for a in tiny_pipeline.args if a.startswith("batch.")]
    extra = ["--preset", "tiny", "--k", "5", *sum((["--set", s] for s in sets), [])]
    by_uri = runner.invoke(app, ["recommend", "--model", "models:/haowu-matching@champion",
                                 "--data", str(root / "data"), "--tiers", str(root / "tier"),
                                 "--out", str(tmp_path / "x"), *extra])  # fmt: skip
    assert by_uri.exit_code == 0, by_uri.output
    by_dir = runner.invoke(app, ["recommend", "--from", str(root), "--out", str(tmp_path / "y"),
                                 *extra])  # fmt: skip
    assert by_dir.exit_code == 0, by_dir.output
    x, y = _lists(tmp_path / "x"), _lists(tmp_path / "y")
    assert len(x) > 0
    pd.testing.assert_frame_equal(x, y)  # the champion is this pipeline's model
    brokers = runner.invoke(app, ["match-brokers", "--from", str(root),
                                  "--out", str(tmp_path / "b"), "--preset", "tiny"])  # fmt: skip
    assert brokers.exit_code == 0, brokers.output


def test_tier_runs_open_by_folder_and_by_registry(tiny_pipeline, monkeypatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tiny_pipeline.tracking_uri)
    by_dir = open_tier_run(tiny_pipeline.root / "tier")
    by_uri = open_tier_run("models:/haowu-tier@champion")
    assert by_uri.root.resolve() == by_dir.root.resolve()
    assert by_uri.run_id == by_dir.run_id is not None


def test_openers_refuse_what_they_cannot_open(tmp_path: Path, tiny_pipeline, monkeypatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tiny_pipeline.tracking_uri)
    with pytest.raises(ArtifactError, match="not a train-matching run folder"):
        open_matching_run(tmp_path)
    with pytest.raises(ArtifactError, match="not a train-tier run folder"):
        open_tier_run(tmp_path)
    with pytest.raises(ArtifactError, match="expected models:/NAME@ALIAS"):
        open_matching_run("models:/no-alias-here")
    with pytest.raises(ArtifactError, match=re.escape("haowu-matching@nope")):
        open_matching_run("models:/haowu-matching@nope")
    with pytest.raises(ArtifactError, match="give --data and --model, or --from"):
        job_inputs(None)
    with pytest.raises(ArtifactError, match="not a folder"):
        job_inputs(tmp_path / "missing")


def test_registered_models_carry_their_code_and_requirements(tiny_pipeline, tmp_path) -> None:
    """`mlflow models predict` from the registry (the local environment), and the model's
    own environment files name haowu's code and pinned requirements."""
    mlflow_cli = Path(sys.executable).parent / "mlflow"
    creators = open_matching_run(tiny_pipeline.root / "matching").creators.ids[:2].tolist()
    (tmp_path / "input.json").write_text(json.dumps({"dataframe_records": [
        {"creator_id": c} for c in creators]}))  # fmt: skip
    out = subprocess.run(
        [mlflow_cli, "models", "predict", "-m", "models:/haowu-matching@champion",
         "-i", str(tmp_path / "input.json"), "-t", "json", "--env-manager", "local"],
        env=_env(tiny_pipeline.tracking_uri), capture_output=True, text=True, timeout=300,
        cwd=tmp_path,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    assert '"product_id"' in out.stdout and '"rank"' in out.stdout
    import mlflow

    os.environ["MLFLOW_TRACKING_URI"], saved = (
        tiny_pipeline.tracking_uri,
        os.environ["MLFLOW_TRACKING_URI"],
    )
    try:
        for name, needs in (("haowu-matching", "torch=="), ("haowu-tier", "lightgbm==")):
            local = Path(mlflow.artifacts.download_artifacts(f"models:/{name}@champion"))
            requirements = (local / "requirements.txt").read_text()
            assert needs in requirements and "haowu" not in requirements
            assert {"features", "models"} <= {p.name for p in (local / "code").iterdir()}
    finally:
        os.environ["MLFLOW_TRACKING_URI"] = saved


def test_registered_model_answers_the_batch_jobs_lists(tiny_pipeline, monkeypatch) -> None:
    """Under the policy (the default) the pyfunc's lists are the batch job's, row for
    row; `policy=false` is the raw top-k, which includes goods the policy keeps out."""
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", tiny_pipeline.tracking_uri)
    lists = pd.read_parquet(tiny_pipeline.root / "lists" / "creator")
    creators = lists["creator_id"].drop_duplicates().sample(20, random_state=0).to_numpy()
    model = mlflow.pyfunc.load_model("models:/haowu-matching@champion")
    got = model.predict(pd.DataFrame({"creator_id": creators}), params={"k": 50})
    want = lists[lists["creator_id"].isin(creators)]
    key = ["creator_id", "rank"]
    got, want = got.sort_values(key, ignore_index=True), want.sort_values(key, ignore_index=True)
    pd.testing.assert_frame_equal(
        got[["creator_id", "rank", "product_id", "tier", "reason"]],
        want[["creator_id", "rank", "product_id", "tier", "reason"]],
        check_dtype=False,
    )
    np.testing.assert_allclose(got["score"], want["score"], rtol=1e-5)
    raw = model.predict(pd.DataFrame({"creator_id": creators}), params={"k": 50, "policy": False})
    assert len(raw) == len(got) and not raw[["creator_id", "product_id"]].equals(
        got[["creator_id", "product_id"]]
    )
    with pytest.raises(Exception, match="needs the data folder"):
        model.predict(pd.DataFrame({"creator_id": creators}), params={"data": "/nonexistent"})
