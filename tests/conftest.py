"""Shared fixtures: an isolated MLflow store per session and one tiny marketplace."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
# the suite may share its cores with other jobs: yielding OpenMP waits (features/threads.py)
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


@pytest.fixture(scope="session", autouse=True)
def mlflow_store(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Every test session writes to its own SQLite store, never the developer's."""
    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    os.environ["MLFLOW_TRACKING_URI"] = uri
    os.environ["HAOWU_CACHE"] = str(root / "cache")  # registry downloads, not ~/.cache
    return uri


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The `tiny` synthetic marketplace, generated once per test session."""
    from features.settings import load_settings
    from features.synthetic import generate

    out = tmp_path_factory.mktemp("tiny") / "data"
    generate(load_settings("tiny").data, out, progress=False)
    return out


# `haowu pipeline` on a shrunken tiny preset: one epoch, small towers, fewer rows, so the
# nine steps take seconds; the pipeline, report and notebook tests share its folder.
TINY_PIPELINE_SETTINGS = [
    "data.n_creators=1000",
    "data.n_products=3000",
    "data.n_merchants=300",
    "data.interactions=20000",
    "matching.epochs=1",
    "matching.refit_all=false",
    "matching.baselines=[pop,als]",
    "matching.als_iterations=5",
    "matching.batch_size=1024",
    "matching.val_creators=300",
    "matching.eval_creators=600",
    "matching.hidden=[32]",
    "matching.id_dim=16",
    "matching.side_dim=4",
    "matching.out_dim=16",
    "batch.workers=1",  # one process: no worker start-up per recommend step
]


@dataclass(frozen=True)
class TinyPipeline:
    root: Path
    tracking_uri: str  # its own store: its first models become champions
    args: list[str]  # the `haowu` arguments that built it
    output: str  # what the command printed


@pytest.fixture(scope="session")
def tiny_pipeline(tmp_path_factory: pytest.TempPathFactory, mlflow_store: str) -> TinyPipeline:
    """One `haowu pipeline --preset tiny` run through the CLI, per test session."""
    from typer.testing import CliRunner

    from cli import app

    base = tmp_path_factory.mktemp("pipeline")
    uri = f"sqlite:///{base / 'mlflow.db'}"
    root = base / "run"
    args = ["pipeline", "--preset", "tiny", "--out", str(root)]
    for item in TINY_PIPELINE_SETTINGS:
        args += ["--set", item]
    os.environ["MLFLOW_TRACKING_URI"] = uri
    try:
        result = CliRunner().invoke(app, args)
    finally:
        os.environ["MLFLOW_TRACKING_URI"] = mlflow_store
    assert result.exit_code == 0, result.output + repr(result.exception)
    return TinyPipeline(root, uri, args, result.output)
