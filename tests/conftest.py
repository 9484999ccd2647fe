"""Shared fixtures: an isolated MLflow store per session and one tiny marketplace."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


@pytest.fixture(scope="session", autouse=True)
def mlflow_store(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Every test session writes to its own SQLite store, never the developer's."""
    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    os.environ["MLFLOW_TRACKING_URI"] = uri
    return uri


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The `tiny` synthetic marketplace, generated once per test session."""
    from features.settings import load_settings
    from features.synthetic import generate

    out = tmp_path_factory.mktemp("tiny") / "data"
    generate(load_settings("tiny").data, out, progress=False)
    return out
